"""Installed-package check (cargo xtask dist): a session through the fault proxy survives a cut.

Arguments: the server's URL (through the proxy) and a topic of its own. Prints ``ready <id>``
after the first round trip; the caller then cuts the connection; prints ``ok <id>`` once the
session resumed and a second message made the round trip."""

import asyncio
import sys

import tether

GUARD = 60.0


async def main(url: str, topic: str) -> None:
    reconnected = asyncio.Event()

    def on_state_change(change: tether.StateChange) -> None:
        if (
            change.old is tether.SessionState.RECOVERING_RECONNECT
            and change.new is tether.SessionState.CONNECTED_ACTIVE
        ):
            reconnected.set()

    async with tether.connect(url, principal="control", credentials="password") as session:
        session.on_state_change(on_state_change)
        ident = session.session_id
        received = []
        async with session.subscribe(topic) as updates:
            await session.publish(topic, "one")
            update = await asyncio.wait_for(updates.__anext__(), GUARD)
            received.append(update.text)
            print(f"ready {ident}", flush=True)

            await asyncio.wait_for(reconnected.wait(), GUARD)
            if session.session_id != ident:
                raise RuntimeError(f"session id changed: {ident} -> {session.session_id}")
            await session.publish(topic, "two")
            update = await asyncio.wait_for(updates.__anext__(), GUARD)
            received.append(update.text)
        if received != ["one", "two"]:
            raise RuntimeError(f"received {received}")
    print(f"ok {ident}", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        print(f"FAIL: {e!r}", file=sys.stderr, flush=True)
        sys.exit(1)
