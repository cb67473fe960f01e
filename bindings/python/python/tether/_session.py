"""The asyncio API: ``connect``, ``Session``, ``Publish``, ``Subscription``, ``StateChanges``.

Everything awaitable that the API returns is also a coroutine as far as asyncio is concerned
(:class:`_CoroutineProtocol`), so it can be awaited, or passed to ``asyncio.create_task``,
``asyncio.gather``, ``asyncio.wait_for`` or ``asyncio.run``."""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Generic,
    List,
    Optional,
    Type,
    TypeVar,
    Union,
    cast,
)

from . import _tether
from ._errors import SessionClosedError
from ._reconnect import (
    Events,
    ReconnectOption,
    SessionOptions,
    Urls,
    payload,
    resolve,
    session_options,
    split_urls,
    strategy_argument,
)
from ._tether import GapReport, NativeSession, StateChange, Update
from ._types import CloseReason, SessionState

__all__ = ["Connecting", "Publish", "Session", "StateChanges", "Subscription", "connect"]

T = TypeVar("T")


class _CoroutineProtocol(Coroutine[Any, Any, T]):
    """``send``/``throw``/``close`` over ``__await__``: what ``asyncio.create_task`` (and
    ``ensure_future``, ``gather``, ``wait_for``, ``run``) require of an object besides being
    awaitable. Subclasses define ``__await__``; awaiting the object works as often as wanted.
    """

    _steps: Optional[Generator[Any, None, T]] = None

    def __await__(self) -> Generator[Any, None, T]:
        raise NotImplementedError

    def _iterator(self) -> Generator[Any, None, T]:
        if self._steps is None:
            self._steps = self.__await__()
        return self._steps

    def send(self, value: Any) -> Any:
        """Coroutine protocol: runs the object's wait one step (asyncio's tasks call it)."""
        return self._iterator().send(value)

    def throw(
        self, typ: Any, val: Any = None, tb: Optional[TracebackType] = None, /
    ) -> Any:
        """Coroutine protocol: raises an exception into the wait (a task's cancellation)."""
        if val is None and tb is None:
            return self._iterator().throw(typ)
        return self._iterator().throw(typ, val, tb)

    def close(self) -> None:
        """Coroutine protocol: abandons a wait started with :meth:`send`."""
        if self._steps is not None:
            self._steps.close()


class _BatchQueue(Generic[T]):
    """Cancel-safe ``__anext__`` over a native ``next_batch()`` awaitable.

    The native wait is shielded: cancelling the caller (``asyncio.wait_for``, a task
    cancel) leaves it running, and its result goes to the next call. Nothing is lost, and
    concurrent callers each get their own item. The items that arrived together come in one
    result (one wake-up of the loop) and are handed out one by one from here, without
    waiting; at most one batch (256 updates) is held here per subscription.
    """

    def __init__(self, fetch: Callable[[], "asyncio.Future[Any]"]) -> None:
        self._fetch = fetch
        self._pending: Optional["asyncio.Future[Any]"] = None
        self._lock: Optional[asyncio.Lock] = None
        self._ready: "collections.deque[T]" = collections.deque()
        self._ended = False

    def _items(self, result: Any) -> Optional[List[T]]:
        """The items of one native result; ``None`` once the stream ended."""
        return cast(Optional[List[T]], result)

    async def next(self) -> Optional[T]:
        if self._ready:
            return self._ready.popleft()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            # Another caller may have received a batch while this one waited for the lock.
            if self._ready:
                return self._ready.popleft()
            if self._ended:
                return None
            if self._pending is None:
                self._pending = self._fetch()
            pending = self._pending
            try:
                result = await asyncio.shield(pending)
            except asyncio.CancelledError:
                # This caller was cancelled: the wait (still running, or even just finished)
                # and its result stay for the next call, unless the wait itself was cancelled.
                if pending.cancelled():
                    self._pending = None
                raise
            except BaseException:
                self._pending = None
                raise
            self._pending = None
            items = self._items(result)
            if items is None:
                self._ended = True
                return None
            self._ready.extend(items)
            return self._ready.popleft()


class _NextQueue(_BatchQueue[T]):
    """:class:`_BatchQueue` over a native ``next()`` awaitable (one item per result)."""

    def _items(self, result: Any) -> Optional[List[T]]:
        return None if result is None else [cast(T, result)]


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


class Subscription(_CoroutineProtocol["Subscription"]):
    """The updates of one selector, as an async iterator. Await it (or make it a task) to
    make sure the server has confirmed the subscription (iterating does that too)::

        sub = await session.subscribe("prices/**")     # confirmed
        async for update in sub:
            print(update.topic, update.value)

        async with session.subscribe("news/*") as sub:  # unsubscribes on exit
            first = await sub.__anext__()

        task = asyncio.create_task(session.subscribe("a/b"))  # subscribes in the background

    The subscription is requested when first awaited or iterated. The current values of
    matching topics arrive first (``update.snapshot`` is ``True``), then every update, in
    order, across reconnections. The iteration ends when the session closes or the selector
    is unsubscribed. (``send``, ``throw`` and ``close`` are the coroutine protocol, for
    asyncio's tasks; ``close`` does not unsubscribe.)
    """

    def __init__(self, session: "Session", selector: str) -> None:
        self._session = session
        self._selector = selector
        self._subscribing: Optional["asyncio.Future[_tether.NativeSubscription]"] = None
        self._queue: Optional[_BatchQueue[Update]] = None

    @property
    def selector(self) -> str:
        return self._selector

    async def _start(self) -> "Subscription":
        if self._subscribing is None:
            self._subscribing = self._session._native.subscribe(self._selector)
        # Shielded: a cancelled caller leaves the subscription to complete for the next one.
        native = await asyncio.shield(self._subscribing)
        if self._queue is None:
            self._queue = _BatchQueue(native.next_batch)
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


class Publish(_CoroutineProtocol[None]):
    """A publish, queued when :meth:`Session.publish` returned it (publishes go out in the
    order of the calls, whoever awaits them). Await it, or pass it to
    ``asyncio.create_task``/``gather``/``wait_for``, for the outcome: ``None`` once the server
    applied it; :class:`RequestRejectedError` if the server refused it;
    :class:`SessionClosedError` if the session closed before it was sent (not applied), or
    :class:`OutcomeUnknownError` if it closed after the publish was sent and before the server
    confirmed it (it may have been applied). Not awaiting it is fine: the publish is delivered
    all the same. Cancelling a task that awaits it stops the wait only."""

    def __init__(self, completion: "asyncio.Future[None]") -> None:
        self._completion = completion

    def done(self) -> bool:
        """Whether the outcome is known (awaiting it will not wait)."""
        return self._completion.done()

    def __await__(self) -> Generator[Any, None, None]:
        return self._completion.__await__()

    def __repr__(self) -> str:
        return f"<tether.Publish {'done' if self.done() else 'pending'}>"


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

    @property
    def ping_period(self) -> Optional[float]:
        """The ping period the server granted on the current connection, in seconds (see
        ``connect(ping_period=...)``); ``None`` while the session is not connected."""
        return self._native.ping_period

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

    def publish(self, topic: str, value: Union[bytes, bytearray, memoryview, str]) -> Publish:
        """Publishes ``value`` (``str`` is sent as UTF-8): queued at once, so publishes go
        out in the order of the calls, exactly once, across reconnections. Await the
        :class:`Publish` (or make it a task) to know the server applied it, or why not.
        Raises at the call, with nothing queued, for a value that is not bytes or str, or
        without a running event loop."""
        return Publish(self._native.publish(topic, payload(value)))

    async def unsubscribe(self, selector: str) -> None:
        """Removes the subscriptions made with the same selector text."""
        await self._native.unsubscribe(selector)

    async def close(self) -> None:
        """Closes the session (``CLOSED_BY_CLIENT``) and returns once it is closed. Requests
        made before (publishes queued and not yet confirmed, say) are sent and confirmed
        first; those the server has not confirmed when the session closes fail with
        :class:`OutcomeUnknownError` (or :class:`SessionClosedError` if never sent). Requests
        made afterwards fail with :class:`SessionClosedError`. Calling it again does
        nothing."""
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


class Connecting(_CoroutineProtocol[Session]):
    """What :func:`connect` returns: await it (or make it a task) for the :class:`Session`,
    or use it with ``async with`` to close the session on exit. Nothing happens until then."""

    def __init__(
        self,
        url: Urls,
        principal: Optional[str],
        credentials: Optional[str],
        reconnect: ReconnectOption,
        connect_timeout: float,
        strict: bool,
        options: SessionOptions,
    ) -> None:
        self._url, self._fallback_urls = split_urls(url)
        self._principal = principal
        self._credentials = credentials
        self._timeout, self._strategy = resolve(reconnect)
        self._connect_timeout = connect_timeout
        self._strict = strict
        self._options = options
        self._session: Optional[Session] = None

    async def _open(self) -> Session:
        events = Events(asyncio.get_running_loop())
        native = await _tether.open(
            self._url,
            fallback_urls=self._fallback_urls,
            principal=self._principal,
            credentials=self._credentials,
            reconnect_timeout=self._timeout,
            strategy=strategy_argument(self._strategy, events),
            on_state=events.state_listener(),
            on_gap=events.gap_listener(),
            connect_timeout=self._connect_timeout,
            strict=self._strict,
            options=self._options,
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
) -> Connecting:
    """Opens a session with the Tether server at ``url`` (``ws://host:port[/path]``)::

        session = await tether.connect("ws://127.0.0.1:8080", principal="control",
                                       credentials="password", reconnect=30)
        async with tether.connect(url, reconnect=tether.Reconnect(60, strategy)) as session:
            ...

    ``url`` may also be a list of URLs of servers that serve the same sessions (one server
    restarted in place, or the nodes of a cluster): opening tries them in order until one
    answers, and reconnection attempts rotate through them (an attempt goes back to the
    server the session was on, then tries the next; after a server asked the session to go
    away, ``server_draining``, the first attempt tries the next).

    ``reconnect`` is ``True``/``None`` (default: 60 s, :class:`DefaultStrategy`),
    ``False``/``0`` (disabled), a number of seconds (the reconnection timeout), a strategy,
    or :class:`Reconnect`. A strategy is a built-in (:class:`ConstantDelay`,
    :class:`ExponentialBackoff`, :class:`AbortImmediately`, :class:`DefaultStrategy`) or a
    function or coroutine function taking a :class:`ReconnectionAttempt`, called on this
    event loop each time the session needs a decision; it calls ``attempt.start()`` (now,
    or later: ``loop.call_later``, ``await asyncio.sleep(d)``, ``attempt.start_after(d)``)
    or ``attempt.abort()``, or hands the attempt to a built-in (``DefaultStrategy()(attempt)``).
    A draining or busy server asks the session to wait ``attempt.retry_after`` seconds (the
    built-ins wait at least that long, spread over ``[retry_after, 2 × retry_after)``). If it raises, the exception is logged, delivered to
    :meth:`Session.on_error` as a :class:`StrategyError`, and the attempt is aborted.

    Raises :class:`AuthenticationError`, :class:`ConnectionFailedError` or another
    :class:`OpenError` when the session cannot be opened, :class:`InvalidArgumentError` for
    a bad URL or duration. Cancelling the ``await`` (e.g. ``asyncio.wait_for``) leaves no
    session behind.

    A strategy object may also have ``on_success(info)`` and ``on_failure(info, reason)``
    methods (:class:`AttemptInfo`, :class:`CloseReason`): called, on this event loop, after
    each attempt it started succeeded (a good moment to reset a backoff) or failed (the
    strategy is called again while time remains).

    More settings (``None``: the default): ``strict`` closes the session (``LOST_MESSAGES``)
    rather than resume with a gap report; ``tls_root_certificates``: PEM text of
    certificates (a private CA) trusted for ``wss://`` besides the system's roots;
    ``ping_period``: seconds between pings asked of the server (granted within its bounds,
    1 s to 60 s by default; :attr:`Session.ping_period` tells which; a connection silent for
    1.5 periods is taken as dead); ``delivery_limit``: most updates waiting for the
    application (default 10,000; past it the session stops reading, the server's
    slow-consumer handling ends the connection and the resume reports the gap);
    ``max_queued_requests`` / ``max_queued_bytes``: most requests / bytes kept until
    acknowledged (default 10,000 / 8 MiB; past it a publish while disconnected raises
    :class:`QueueFullError`); ``close_timeout``: seconds ``close`` waits for the requests
    made before it (default 5).
    """
    return Connecting(
        url, principal, credentials, reconnect, connect_timeout, strict,
        session_options(tls_root_certificates, ping_period, delivery_limit,
                        max_queued_requests, max_queued_bytes, close_timeout),
    )

