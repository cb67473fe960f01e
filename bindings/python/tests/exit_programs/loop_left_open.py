"""A loop that is never closed (nor running any more) when the program ends, with 2,000
publishes in flight on it. The process must exit cleanly (status 0, nothing on stderr).

Usage: loop_left_open.py URL TOPIC
"""

from __future__ import annotations

import asyncio
import sys

import tether


async def main(url: str, topic: str) -> tether.Session:
    session = await tether.connect(url, principal="control", credentials="password")
    for i in range(2000):
        session.publish(f"{topic}/{i % 10}", str(i))
    return session


loop = asyncio.new_event_loop()
session = loop.run_until_complete(main(sys.argv[1], sys.argv[2]))
print("queued 2000 publishes", flush=True)
