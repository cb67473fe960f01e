"""A blocking facade for scripts and REPLs: the same sessions, without ``await``.

::

    import tether.sync

    with tether.sync.connect("ws://127.0.0.1:8080", principal="control",
                             credentials="password") as session:
        sub = session.subscribe("demo/**")
        session.publish("demo/hello", "world")
        for update in sub:
            print(update.topic, update.text)

Every call blocks the calling thread with the GIL released (other Python threads run), over
the same native calls as the asyncio API: no event loop is involved, so it works inside a
running loop's thread too (it blocks that loop, as any blocking call would). Ctrl-C
interrupts a wait. ``timeout`` arguments are in seconds and raise the builtin
``TimeoutError``.

Strategies and callbacks run on Tether's callback thread (one per session, in order), where
blocking is allowed: a strategy may ``time.sleep(d)`` before ``attempt.start()``. They must
be plain functions, not coroutine functions.

At interpreter exit (the ``atexit`` hook closes every session), a daemon thread that is in,
or enters, a blocking call stays blocked until the process ends: it stops with the
interpreter, as daemon threads do, rather than waking up to a ``SessionClosedError``.
"""

from __future__ import annotations

import inspect
from types import TracebackType
from typing import Callable, Iterator, Optional, Type, Union

from . import _tether
from ._errors import SessionClosedError
from ._reconnect import (
    Events,
    ReconnectOption,
    Urls,
    payload,
    resolve,
    session_options,
    split_urls,
    strategy_argument,
)
from ._tether import GapReport, NativeSession, StateChange, Update
from ._types import CloseReason, SessionState

__all__ = ["Session", "StateChanges", "Subscription", "connect"]


class StateChanges:
    """A session's state changes from the moment :meth:`Session.state_changes` was called;
    the iteration ends after the closed state."""

    def __init__(self, native: NativeSession) -> None:
        self._native = native.state_changes()

    def next(self, timeout: Optional[float] = None) -> Optional[StateChange]:
        """The next change, or ``None`` after the closed state; ``TimeoutError`` after
        ``timeout`` seconds."""
        return self._native.next_blocking(timeout)

    def __iter__(self) -> Iterator[StateChange]:
        return self

    def __next__(self) -> StateChange:
        change = self._native.next_blocking(None)
        if change is None:
            raise StopIteration
        return change


class Subscription:
    """The updates of one selector (already confirmed by the server); iterate it, or call
    :meth:`next` with a timeout. Ends when the session closes or the selector is
    unsubscribed."""

    def __init__(self, session: "Session", native: _tether.NativeSubscription) -> None:
        self._session = session
        self._native = native

    @property
    def selector(self) -> str:
        return self._native.selector

    def next(self, timeout: Optional[float] = None) -> Optional[Update]:
        """The next update, or ``None`` once the subscription ended; ``TimeoutError`` after
        ``timeout`` seconds (nothing is lost: the update then goes to the next call)."""
        return self._native.next_blocking(timeout)

    def __iter__(self) -> Iterator[Update]:
        return self

    def __next__(self) -> Update:
        update = self._native.next_blocking(None)
        if update is None:
            raise StopIteration
        return update

    def unsubscribe(self, timeout: Optional[float] = None) -> None:
        """Removes the subscription from the server (every subscription made with the same
        selector text); the iteration ends."""
        self._session.unsubscribe(self.selector, timeout)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if not self._session.state.is_closed:
            try:
                self.unsubscribe()
            except SessionClosedError:
                pass

    def __repr__(self) -> str:
        return f"Subscription({self.selector!r})"


class Session:
    """A session with a Tether server; see :func:`connect` and :class:`tether.Session`."""

    def __init__(self, native: NativeSession, events: Events) -> None:
        self._native = native
        self._events = events

    @property
    def session_id(self) -> str:
        return self._native.session_id

    @property
    def state(self) -> SessionState:
        return self._native.state

    @property
    def close_reason(self) -> Optional[CloseReason]:
        return self._native.close_reason

    @property
    def reconnection_timeout(self) -> float:
        return self._native.reconnection_timeout

    @property
    def ping_period(self) -> Optional[float]:
        """The ping period the server granted on the current connection, in seconds;
        ``None`` while the session is not connected."""
        return self._native.ping_period

    def on_state_change(self, callback: Callable[[StateChange], None]) -> Callable[[], None]:
        """Calls ``callback(change)`` on Tether's callback thread for every later state
        change, in order. Returns a function that removes the callback."""
        return Events.add(self._events.state, callback)

    def on_error(self, callback: Callable[[BaseException], None]) -> Callable[[], None]:
        """Calls ``callback(exception)`` for errors with no caller to raise to (a
        :class:`tether.StrategyError`, or a failing callback's exception)."""
        return Events.add(self._events.error, callback)

    def on_gap(self, callback: Callable[[GapReport], None]) -> Callable[[], None]:
        """Calls ``callback(report)`` when messages were lost during an outage."""
        return Events.add(self._events.gap, callback)

    def state_changes(self) -> StateChanges:
        return StateChanges(self._native)

    def subscribe(self, selector: str, timeout: Optional[float] = None) -> Subscription:
        """Subscribes and waits for the server's confirmation."""
        return Subscription(self, self._native.subscribe_blocking(selector, timeout))

    def publish(
        self,
        topic: str,
        value: Union[bytes, bytearray, memoryview, str],
        timeout: Optional[float] = None,
    ) -> None:
        """Publishes and waits until the server applied it (a timeout stops waiting only:
        the publish is still delivered)."""
        self._native.publish_blocking(topic, payload(value), timeout)

    def unsubscribe(self, selector: str, timeout: Optional[float] = None) -> None:
        self._native.unsubscribe_blocking(selector, timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        """Closes the session and waits until it is closed."""
        self._native.close_blocking(timeout)

    def closed(self, timeout: Optional[float] = None) -> CloseReason:
        """Waits until the session is closed; returns the reason."""
        return self._native.closed_blocking(timeout)

    def wait_for_state(self, state: SessionState, timeout: Optional[float] = None) -> SessionState:
        """Waits until the session is in ``state`` or closed; returns the state reached."""
        return self._native.wait_for_state_blocking(state, timeout)

    def __enter__(self) -> "Session":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tether.sync.Session {self.session_id} {self.state.value}>"


def connect(
    url: Urls,
    *,
    principal: Optional[str] = None,
    credentials: Optional[str] = None,
    reconnect: ReconnectOption = True,
    connect_timeout: float = 10.0,
    strict: bool = False,
    tls_root_certificates: Optional[Union[str, bytes]] = None,
    ping_period: Optional[float] = None,
    delivery_limit: Optional[int] = None,
    max_queued_requests: Optional[int] = None,
    max_queued_bytes: Optional[int] = None,
    close_timeout: Optional[float] = None,
) -> Session:
    """Opens a session, blocking until it is open; the arguments are those of
    :func:`tether.connect`, except that a strategy must be a plain function."""
    first, fallbacks = split_urls(url)
    timeout, strategy = resolve(reconnect)
    if strategy is not None and (
        inspect.iscoroutinefunction(strategy)
        or inspect.iscoroutinefunction(getattr(strategy, "__call__", None))
    ):
        raise TypeError("tether.sync strategies must be plain functions, not coroutine functions")
    events = Events(None)
    native = _tether.open_blocking(
        first,
        fallback_urls=fallbacks,
        principal=principal,
        credentials=credentials,
        reconnect_timeout=timeout,
        strategy=strategy_argument(strategy, events),
        on_state=events.state_listener(),
        on_gap=events.gap_listener(),
        connect_timeout=connect_timeout,
        strict=strict,
        options=session_options(tls_root_certificates, ping_period, delivery_limit,
                                max_queued_requests, max_queued_bytes, close_timeout),
    )
    return Session(native, events)
