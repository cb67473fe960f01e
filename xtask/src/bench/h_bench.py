"""Measure (h), Python side: one session's throughput through the `tether` package, and the
same through the raw `websockets` package. Started by xtask/src/bench/bindings.rs:

    python h_bench.py <mode> <url> <n>

Modes and output as in h_bench.js: `tether-down` (prints `ready`, then `got K` every 1024
updates), `raw-down`, `tether-up` (at most WINDOW publishes awaiting completion), `raw-up`;
each prints `cpu C` (nanoseconds of CPU per message: this process, every thread, over the
phase) then `rate R` (messages per second) and exits.
"""

import asyncio
import collections
import sys
import time

PAYLOAD = b"\x5a" * 100
WINDOW = 4096
PROGRESS = 1024


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def out_cpu(start: float, messages: int) -> None:
    """Prints the CPU this process used since `start` (a `time.process_time()`: every
    thread of the process), in nanoseconds per message."""
    out(f"cpu {(time.process_time() - start) * 1e9 / messages}")


async def tether_down(url: str, n: int) -> None:
    import tether

    session = await tether.connect(url)
    sub = await session.subscribe("bench/down")
    out("ready")
    got = 0
    first = 0.0
    cpu = 0.0
    async for update in sub:
        if update.snapshot:
            continue
        got += 1
        if got == 1:
            first = time.perf_counter()
            cpu = time.process_time()
        if got % PROGRESS == 0:
            out(f"got {got}")
        if got == n:
            break
    last = time.perf_counter()
    out_cpu(cpu, n - 1)
    out(f"rate {(n - 1) / (last - first)}")
    await session.close()


async def tether_up(url: str, n: int) -> None:
    import tether

    session = await tether.connect(url)
    window: "collections.deque[object]" = collections.deque()
    t0 = time.perf_counter()
    cpu = time.process_time()
    for _ in range(n):
        if len(window) >= WINDOW:
            await window.popleft()  # type: ignore[misc]
        window.append(session.publish("bench/up", PAYLOAD))
    for p in window:
        await p  # type: ignore[misc]
    out_cpu(cpu, n)
    out(f"rate {n / (time.perf_counter() - t0)}")
    await session.close()


def raw_connect(url: str):  # type: ignore[no-untyped-def]
    try:
        from websockets.asyncio.client import connect
    except ImportError:  # websockets < 13
        from websockets import connect  # type: ignore[no-redef]
    return connect(url, compression=None, max_size=None)


async def raw_down(url: str, n: int) -> None:
    async with raw_connect(url) as ws:
        got = 0
        first = 0.0
        cpu = 0.0
        async for message in ws:
            if not isinstance(message, bytes):
                continue
            got += 1
            if got == 1:
                first = time.perf_counter()
                cpu = time.process_time()
            if got == n:
                break
        if got < n:
            raise RuntimeError(f"raw: received {got} of {n}")
        last = time.perf_counter()
        out_cpu(cpu, n - 1)
    out(f"rate {(n - 1) / (last - first)}")


async def raw_up(url: str, n: int) -> None:
    async with raw_connect(url) as ws:
        t0 = time.perf_counter()
        cpu = time.process_time()
        for _ in range(n):
            await ws.send(PAYLOAD)
        await ws.recv()
        rate = n / (time.perf_counter() - t0)
        out_cpu(cpu, n)
    out(f"rate {rate}")


MODES = {
    "tether-down": tether_down,
    "tether-up": tether_up,
    "raw-down": raw_down,
    "raw-up": raw_up,
}

if __name__ == "__main__":
    mode, url, count = sys.argv[1:4]
    asyncio.run(MODES[mode](url, int(count)))
