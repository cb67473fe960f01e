"""State changes of a session whose event loop has closed: its `on_state_change` callback
cannot run any more, and the user is told so once (a warning on the `tether` logger), not
once per change and not never. The changes: a cut (RECOVERING_RECONNECT), the resume
(CONNECTED_ACTIVE), then the close by `tether.shutdown()`.

Usage: closed_loop_callbacks.py PROXY_URL PROXY_CONTROL_ADDRESS
"""

from __future__ import annotations

import asyncio
import sys
import urllib.request

import tether

proxy_url, control = sys.argv[1], sys.argv[2]


async def open_session() -> tether.Session:
    session = await tether.connect(
        proxy_url, principal="control", credentials="password", reconnect=tether.ConstantDelay(0)
    )
    session.on_state_change(lambda change: print("callback:", change, flush=True))
    return session


session = asyncio.run(open_session())  # its loop is closed from here on
changes = session.state_changes()
urllib.request.urlopen(
    urllib.request.Request(f"http://{control}/cut?mode=rst", method="POST", data=b""), timeout=20
).read()


async def resumed() -> None:
    async for change in changes:
        print(f"change: {change.old} -> {change.new}", flush=True)
        if change.new is tether.SessionState.CONNECTED_ACTIVE:
            return


asyncio.run(asyncio.wait_for(resumed(), 20))
print("shutdown:", tether.shutdown(), flush=True)
