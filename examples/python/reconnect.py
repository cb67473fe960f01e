"""Specifying a reconnection strategy, in Python (a port of the seed's reconnection example).

When the connection drops, the session enters RECOVERING_RECONNECT and calls the strategy
with an attempt; the strategy starts the attempt (now or later) or aborts, which closes the
session. The session keeps trying for at most its reconnection timeout. On success it
resumes with the same session id and subscriptions, and nothing published in either
direction is lost.

Run a development server first (``cargo run -p tether-server -- --dev``), then::

    pip install ./bindings/python
    python examples/python/reconnect.py --url ws://127.0.0.1:8080

and cut the network (or restart nothing and watch it run): the counter goes on where it was.
"""

from __future__ import annotations

import argparse
import asyncio

import tether

# Keep trying to reconnect for at most 10 minutes.
MAXIMUM_TIMEOUT_DURATION = 10 * 60.0
# Wait at most 60 seconds between two attempts.
MAXIMUM_ATTEMPT_INTERVAL = 60.0
# Give up after this many attempts.
MAXIMUM_ATTEMPTS = 25


class ExponentialBackoffStrategy:
    """Waits 0.1 s, 0.2 s, 0.4 s, ... (at most a minute) before each attempt; aborts after
    MAXIMUM_ATTEMPTS. A coroutine: the session runs it as a task on this event loop."""

    def __init__(self) -> None:
        self.attempts = 0

    async def __call__(self, attempt: tether.ReconnectionAttempt) -> None:
        if self.attempts >= MAXIMUM_ATTEMPTS:
            print(f"giving up after {self.attempts} attempts", flush=True)
            attempt.abort()  # closes the session: reason RECONNECT_ABORTED
            return
        wait = min(2**self.attempts * 0.1, MAXIMUM_ATTEMPT_INTERVAL)
        self.attempts += 1
        print(
            f"reconnection attempt {attempt.number} in {wait:.1f} s "
            f"(last failure: {attempt.reason}, {attempt.remaining:.0f} s left)",
            flush=True,
        )
        await asyncio.sleep(wait)
        attempt.start()

    def reset(self) -> None:
        self.attempts = 0


async def main(url: str, topic: str, count: int, interval: float) -> int:
    strategy = ExponentialBackoffStrategy()
    reconnect = tether.Reconnect(timeout=MAXIMUM_TIMEOUT_DURATION, strategy=strategy)

    async with tether.connect(
        url, principal="control", credentials="password", reconnect=reconnect
    ) as session:

        def on_state_change(change: tether.StateChange) -> None:
            reason = f" ({change.reason})" if change.reason else ""
            print(f"state: {change.old} -> {change.new}{reason}", flush=True)
            if change.new is tether.SessionState.RECOVERING_RECONNECT:
                print("disconnected: the strategy decides when to try again", flush=True)
            elif change.old is tether.SessionState.RECOVERING_RECONNECT and not change.new.is_closed:
                print(f"reconnected: still session {session.session_id}", flush=True)
                strategy.reset()
            elif change.new.is_closed:
                print("the session is closed", flush=True)

        def on_error(error: BaseException) -> None:
            print(f"error: {error!r}", flush=True)

        session.on_state_change(on_state_change)
        session.on_error(on_error)
        print(f"session {session.session_id} open", flush=True)

        async with session.subscribe(f"{topic}/counter") as updates:

            async def publish_counter() -> None:
                for i in range(count):
                    # Queued at once, in order; delivered exactly once even across a cut.
                    await session.publish(f"{topic}/counter", str(i))
                    await asyncio.sleep(interval)

            publisher = asyncio.ensure_future(publish_counter())
            received = []
            async for update in updates:
                if update.snapshot:
                    continue  # the value left by an earlier run
                received.append(int(update.text))
                print(f"update {update.text}", flush=True)
                if len(received) == count:
                    break
            await publisher

    in_order = received == list(range(count))
    print(
        f"received {len(received)} of {count} updates"
        + (", every one exactly once, in order" if in_order else f": {received}"),
        flush=True,
    )
    return 0 if in_order else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080")
    parser.add_argument("--topic", default="demo/reconnect")
    parser.add_argument("--count", type=int, default=100, help="values to publish")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between them")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.url, args.topic, args.count, args.interval)))
