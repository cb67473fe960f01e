"""Tether: real-time client sessions that survive bad networks (asyncio-first).

::

    import asyncio, tether

    async def main() -> None:
        async with tether.connect("ws://127.0.0.1:8080", principal="control",
                                  credentials="password", reconnect=60) as session:
            session.on_state_change(lambda c: print(c.old, "->", c.new, c.reason))
            async with session.subscribe("demo/**") as updates:
                await session.publish("demo/hello", "world")
                async for update in updates:
                    print(update.topic, update.text)
                    break

    asyncio.run(main())

A session survives lost connections: it enters ``RECOVERING_RECONNECT``, its reconnection
strategy decides when to try again, and it resumes with the same session id, the same
subscriptions, and every message in both directions delivered exactly once, in order. For
scripts without asyncio, see :mod:`tether.sync`.
"""

from __future__ import annotations

import atexit

from ._errors import (
    AccessDeniedError,
    AuthenticationError,
    ConnectionFailedError,
    InvalidArgumentError,
    OpenError,
    OutcomeUnknownError,
    QueueFullError,
    RequestRejectedError,
    SessionClosedError,
    StrategyError,
    TetherError,
)
from ._reconnect import (
    DEFAULT_TIMEOUT,
    BuiltinStrategy,
    Reconnect,
    ReconnectOption,
    Strategy,
    StrategyFunction,
    Urls,
)
from ._session import Connecting, Publish, Session, StateChanges, Subscription, connect
from ._tether import (
    at_exit as _at_exit,
    AbortImmediately,
    AttemptInfo,
    ConstantDelay,
    DefaultStrategy,
    ExponentialBackoff,
    GapReport,
    ReconnectionAttempt,
    StateChange,
    Update,
    __version__,
    shutdown,
)
from ._types import CloseReason, Jitter, SessionState

# Close every session and stop Tether's threads before the interpreter goes away; from then
# on no thread of Tether's touches the interpreter (see ``shutdown`` and the README).
atexit.register(_at_exit)

__all__ = [
    "DEFAULT_TIMEOUT",
    "AbortImmediately",
    "AccessDeniedError",
    "AttemptInfo",
    "AuthenticationError",
    "BuiltinStrategy",
    "CloseReason",
    "Connecting",
    "ConnectionFailedError",
    "ConstantDelay",
    "DefaultStrategy",
    "ExponentialBackoff",
    "GapReport",
    "InvalidArgumentError",
    "Jitter",
    "OpenError",
    "OutcomeUnknownError",
    "Publish",
    "QueueFullError",
    "Reconnect",
    "ReconnectOption",
    "ReconnectionAttempt",
    "RequestRejectedError",
    "Session",
    "SessionClosedError",
    "SessionState",
    "StateChange",
    "StateChanges",
    "Strategy",
    "StrategyError",
    "StrategyFunction",
    "Subscription",
    "TetherError",
    "Update",
    "Urls",
    "__version__",
    "connect",
    "shutdown",
]
