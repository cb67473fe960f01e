"""`asyncio.run(main())` returns while tasks wait on the session: publishes wrapped in tasks,
a subscription being iterated, a wait for the closed state. `asyncio.run` cancels them; the
session is never closed. The process must exit cleanly (status 0, nothing on stderr).

Usage: tasks_in_flight.py URL TOPIC
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, List

import tether


async def main(url: str, topic: str) -> None:
    session = await tether.connect(url, principal="control", credentials="password")
    sub = await session.subscribe(f"{topic}/**")

    async def read() -> None:
        async for _ in sub:
            pass

    tasks: List["asyncio.Task[Any]"] = [
        asyncio.create_task(session.publish(f"{topic}/{i % 10}", str(i))) for i in range(500)
    ]
    tasks.append(asyncio.create_task(read()))
    tasks.append(asyncio.create_task(session.closed()))
    await tasks[0]
    print("first publish applied", flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2]))
print("main returned", flush=True)
