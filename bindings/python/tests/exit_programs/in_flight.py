"""`asyncio.run(main())` returns while 2,000 publishes are still in flight: none awaited, the
session never closed. The process must exit cleanly (status 0, nothing on stderr).

Usage: in_flight.py URL TOPIC
"""

from __future__ import annotations

import asyncio
import sys

import tether


async def main(url: str, topic: str) -> None:
    session = await tether.connect(url, principal="control", credentials="password")
    for i in range(2000):
        session.publish(f"{topic}/{i % 10}", str(i))
    print("queued 2000 publishes", flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2]))
print("main returned", flush=True)
