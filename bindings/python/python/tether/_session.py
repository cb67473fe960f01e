"""The asyncio API: ``connect``, ``Session``, ``Subscription``, ``StateChanges``."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Callable,
    Generator,
    Generic,
    Optional,
    Type,
    TypeVar,
    Union,
)

from . import _tether
from ._errors import SessionClosedError
from ._reconnect import Events, ReconnectOption, payload, resolve, strategy_argument
from ._tether import GapReport, NativeSession, StateChange, Update
from ._types import CloseReason, SessionState

__all__ = ["Connecting", "Session", "StateChanges", "Subscription", "connect"]

T = TypeVar("T")


class _NextQueue(Generic[T]):
    """Cancel-safe ``__anext__`` over a native ``next()`` awaitable.

    The native wait is shielded: cancelling the caller (``asyncio.wait_for``, a task
    cancel) leaves it running, and its item goes to the next call. Nothing is lost, and
    concurrent callers each get their own item.
    """

    def __init__(self, next_item: Callable[[], "asyncio.Future[Optional[T]]"]) -> None:
        self._next_item = next_item
        self._pending: Optional["asyncio.Future[Optional[T]]"] = None
        self._lock: Optional[asyncio.Lock] = None

    async def next(self) -> Optional[T]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._pending is None:
                self._pending = self._next_item()
            pending = self._pending
            try:
                item = await asyncio.shield(pending)
            except asyncio.CancelledError:
                # This caller was cancelled: the wait (still running, or even just finished)
                # and its item stay for the next call, unless the wait itself was cancelled.
                if pending.cancelled():
                    self._pending = None
                raise
            except BaseException:
                self._pending = None
                raise
            self._pending = None
            return item


class StateChanges:
    """A session's state changes from the moment :meth:`Session.state_changes` was called,
    in order; the iteration ends after the closed state::

        async for change in session.state_changes():
            print(change.old, "->", change.new, change.reason)
    """

    def __init__(self, native: NativeSession) -> None:
        self._queue: _NextQueue[StateChange] = _NextQueue(native.state_changes().next)

    def __aiter__(self) -> "StateChanges":
        return self

    async def __anext__(self) -> StateChange:
        change = await self._queue.next()
        if change is None:
            raise StopAsyncIteration
        return change


class Subscription:
    """The updates of one selector, as an async iterator. Await it to make sure the server
    has confirmed the subscription (iterating does that too)::

        sub = await session.subscribe("prices/**")     # confirmed
        async for update in sub:
            print(update.topic, update.value)

        async with session.subscribe("news/*") as sub:  # unsubscribes on exit
            first = await sub.__anext__()

    The current values of matching topics arrive first (``update.snapshot`` is ``True``),
    then every update, in order, across reconnections. The iteration ends when the session
    closes or the selector is unsubscribed.
    """

    def __init__(self, session: "Session", selector: str) -> None:
        self._session = session
        self._selector = selector
        self._subscribing: Optional["asyncio.Future[_tether.NativeSubscription]"] = None
        self._queue: Optional[_NextQueue[Update]] = None

    @property
    def selector(self) -> str:
        return self._selector

    async def _start(self) -> "Subscription":
        if self._subscribing is None:
            self._subscribing = self._session._native.subscribe(self._selector)
        # Shielded: a cancelled caller leaves the subscription to complete for the next one.
        native = await asyncio.shield(self._subscribing)
        if self._queue is None:
            self._queue = _NextQueue(native.next)
        return self

    def __await__(self) -> Generator[Any, None, "Subscription"]:
        return self._start().__await__()

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Update:
        await self._start()
        assert self._queue is not None
        update = await self._queue.next()
        if update is None:
            raise StopAsyncIteration
        return update

    async def unsubscribe(self) -> None:
        """Removes the subscription from the server (every subscription made with the same
        selector text); the iteration ends."""
        await self._session.unsubscribe(self._selector)

    async def __aenter__(self) -> "Subscription":
        return await self._start()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if not self._session.state.is_closed:
            try:
                await self.unsubscribe()
            except SessionClosedError:
                pass

    def __repr__(self) -> str:
        return f"Subscription({self._selector!r})"


class Session:
    """A session with a Tether server that outlives its connections (see :func:`connect`).

    When the connection drops, the session enters ``RECOVERING_RECONNECT`` and its strategy
    decides when to try again; on success it resumes with the same ``session_id``, the same
    subscriptions, and every message in both directions delivered exactly once, in order.
    """

    def __init__(self, native: NativeSession, events: Events) -> None:
        self._native = native
        self._events = events

    @property
    def session_id(self) -> str:
        """32 hex digits; the same after every resume."""
        return self._native.session_id

    @property
    def state(self) -> SessionState:
        return self._native.state

    @property
    def close_reason(self) -> Optional[CloseReason]:
        """Why the session closed, once it has."""
        return self._native.close_reason

    @property
    def reconnection_timeout(self) -> float:
        """The reconnection timeout in force, in seconds (the smaller of the requested one
        and the server's maximum)."""
        return self._native.reconnection_timeout

    def on_state_change(
        self, callback: Callable[[StateChange], Union[None, Awaitable[None]]]
    ) -> Callable[[], None]:
        """Calls ``callback(change)`` on the event loop for every later state change, in
        order. Returns a function that removes the callback."""
        return Events.add(self._events.state, callback)

    def on_error(
        self, callback: Callable[[BaseException], Union[None, Awaitable[None]]]
    ) -> Callable[[], None]:
        """Calls ``callback(exception)`` on the event loop for errors that have no caller to
        raise to: a :class:`tether.StrategyError` when the strategy raised, or the exception
        of a failing ``on_state_change``/``on_gap`` callback."""
        return Events.add(self._events.error, callback)

    def on_gap(
        self, callback: Callable[[GapReport], Union[None, Awaitable[None]]]
    ) -> Callable[[], None]:
        """Calls ``callback(report)`` on the event loop when messages were lost during an
        outage (snapshots of the current values follow)."""
        return Events.add(self._events.gap, callback)

    def state_changes(self) -> StateChanges:
        """State changes from now on, as an async iterator ending after the closed state."""
        return StateChanges(self._native)

    def subscribe(self, selector: str) -> Subscription:
        """A subscription to ``selector`` (``a/b``, ``a/*``, ``a/**``): await it, iterate it,
        or use it with ``async with``."""
        return Subscription(self, selector)

    def publish(
        self, topic: str, value: Union[bytes, bytearray, memoryview, str]
    ) -> "asyncio.Future[None]":
        """Publishes ``value`` (``str`` is sent as UTF-8): queued at once, so publishes go
        out in the order of the calls, exactly once, across reconnections. Await the result
        to know the server applied it (or why not). Cancelling it stops waiting only: the
        publish is still delivered."""
        return self._native.publish(topic, payload(value))

    async def unsubscribe(self, selector: str) -> None:
        """Removes the subscriptions made with the same selector text."""
        await self._native.unsubscribe(selector)

    async def close(self) -> None:
        """Closes the session (``CLOSED_BY_CLIENT``) and returns once it is closed. Calling
        it again does nothing."""
        await self._native.close()

    async def closed(self) -> CloseReason:
        """Waits until the session is closed, for whatever reason; returns the reason."""
        return await self._native.closed()

    async def wait_for_state(self, state: SessionState) -> SessionState:
        """Waits until the session is in ``state`` or closed; returns the state reached."""
        return await self._native.wait_for_state(state)

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<tether.Session {self.session_id} {self.state.value}>"


class Connecting:
    """What :func:`connect` returns: await it for the :class:`Session`, or use it with
    ``async with`` to close the session on exit."""

    def __init__(
        self,
        url: str,
        principal: Optional[str],
        credentials: Optional[str],
        reconnect: ReconnectOption,
        connect_timeout: float,
        strict: bool,
    ) -> None:
        self._url = url
        self._principal = principal
        self._credentials = credentials
        self._timeout, self._strategy = resolve(reconnect)
        self._connect_timeout = connect_timeout
        self._strict = strict
        self._session: Optional[Session] = None

    async def _open(self) -> Session:
        events = Events(asyncio.get_running_loop())
        native = await _tether.open(
            self._url,
            principal=self._principal,
            credentials=self._credentials,
            reconnect_timeout=self._timeout,
            strategy=strategy_argument(self._strategy, events),
            on_state=events.state_listener(),
            on_gap=events.gap_listener(),
            connect_timeout=self._connect_timeout,
            strict=self._strict,
        )
        return Session(native, events)

    def __await__(self) -> Generator[Any, None, Session]:
        return self._open().__await__()

    async def __aenter__(self) -> Session:
        self._session = await self._open()
        return self._session

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._session is not None:
            await self._session.close()


def connect(
    url: str,
    *,
    principal: Optional[str] = None,
    credentials: Optional[str] = None,
    reconnect: ReconnectOption = True,
    connect_timeout: float = 10.0,
    strict: bool = False,
) -> Connecting:
    """Opens a session with the Tether server at ``url`` (``ws://host:port[/path]``)::

        session = await tether.connect("ws://127.0.0.1:8080", principal="control",
                                       credentials="password", reconnect=30)
        async with tether.connect(url, reconnect=tether.Reconnect(60, strategy)) as session:
            ...

    ``reconnect`` is ``True``/``None`` (default: 60 s, :class:`DefaultStrategy`),
    ``False``/``0`` (disabled), a number of seconds (the reconnection timeout), a strategy,
    or :class:`Reconnect`. A strategy is a built-in (:class:`ConstantDelay`,
    :class:`ExponentialBackoff`, :class:`AbortImmediately`, :class:`DefaultStrategy`) or a
    function or coroutine function taking a :class:`ReconnectionAttempt`, called on this
    event loop each time the session needs a decision; it calls ``attempt.start()`` (now,
    or later: ``loop.call_later``, ``await asyncio.sleep(d)``, ``attempt.start_after(d)``)
    or ``attempt.abort()``. If it raises, the exception is logged, delivered to
    :meth:`Session.on_error` as a :class:`StrategyError`, and the attempt is aborted.

    Raises :class:`AuthenticationError`, :class:`ConnectionFailedError` or another
    :class:`OpenError` when the session cannot be opened, :class:`InvalidArgumentError` for
    a bad URL or duration. Cancelling the ``await`` (e.g. ``asyncio.wait_for``) leaves no
    session behind.
    """
    return Connecting(url, principal, credentials, reconnect, connect_timeout, strict)

