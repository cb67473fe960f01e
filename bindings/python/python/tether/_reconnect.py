"""The ``reconnect=`` option, and how strategies and session events reach Python code.

The core calls strategies and listeners on a callback thread of its own, in order. For the
asyncio API they are forwarded to the session's event loop with ``loop.call_soon_threadsafe``
(so user code always runs on the loop, in order); for ``tether.sync`` they run on the
callback thread directly, where blocking is allowed.
"""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import logging
from dataclasses import dataclass
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypeVar,
    Union,
)

from ._errors import InvalidArgumentError, StrategyError
from ._types import SessionState
from ._tether import (
    AbortImmediately,
    ConstantDelay,
    DefaultStrategy,
    ExponentialBackoff,
    GapReport,
    ReconnectionAttempt,
    StateChange,
)

_log = logging.getLogger("tether")

BuiltinStrategy = Union[ConstantDelay, ExponentialBackoff, AbortImmediately, DefaultStrategy]
"""A strategy implemented by the core."""

StrategyFunction = Callable[[ReconnectionAttempt], Union[None, Awaitable[None]]]
"""A strategy written in Python: a function (or coroutine function) taking the attempt."""

Strategy = Union[BuiltinStrategy, StrategyFunction]

DEFAULT_TIMEOUT = 60.0
"""The reconnection timeout (seconds) when ``reconnect`` does not give one."""


@dataclass(frozen=True)
class Reconnect:
    """Reconnection settings: ``timeout`` in seconds (``None``: 60 s; ``0``: reconnection
    disabled) and the ``strategy`` (``None``: :class:`DefaultStrategy`)."""

    timeout: Optional[float] = None
    strategy: Optional[Strategy] = None


ReconnectOption = Union[bool, None, float, Strategy, Reconnect]
"""What ``connect(reconnect=...)`` accepts: ``True``/``None`` (default: 60 s, default
strategy), ``False``/``0`` (disabled), a number of seconds (the timeout), a strategy, or a
:class:`Reconnect`."""

_BUILTINS = (ConstantDelay, ExponentialBackoff, AbortImmediately, DefaultStrategy)


def resolve(reconnect: ReconnectOption) -> Tuple[float, Optional[Strategy]]:
    """``(timeout in seconds, strategy or None for the default)`` for a ``reconnect`` value."""
    if reconnect is None or reconnect is True:
        return DEFAULT_TIMEOUT, None
    if reconnect is False:
        return 0.0, None
    if isinstance(reconnect, Reconnect):
        timeout = DEFAULT_TIMEOUT if reconnect.timeout is None else reconnect.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"Reconnect.timeout must be a number of seconds, not {timeout!r}")
        if reconnect.strategy is not None:
            _check_strategy(reconnect.strategy)
        return float(timeout), reconnect.strategy
    if isinstance(reconnect, (int, float)):
        return float(reconnect), None
    _check_strategy(reconnect)
    return DEFAULT_TIMEOUT, reconnect


def _check_strategy(strategy: object) -> None:
    if not (isinstance(strategy, _BUILTINS) or callable(strategy)):
        raise TypeError(
            "reconnect must be a bool, a number of seconds, a strategy (a callable or a "
            f"built-in) or tether.Reconnect, not {type(strategy).__name__}"
        )


def is_builtin(strategy: object) -> bool:
    return isinstance(strategy, _BUILTINS)


T = TypeVar("T")


class Events:
    """A session's callbacks (state changes, errors, gap reports) and the tasks it started.

    With a ``loop``, callbacks run on that loop (a callback may be a coroutine function: it
    becomes a task); without one (``tether.sync``), they run on the caller's thread.
    """

    def __init__(self, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        self.loop = loop
        self.state: List[Callable[[StateChange], Any]] = []
        self.error: List[Callable[[BaseException], Any]] = []
        self.gap: List[Callable[[GapReport], Any]] = []
        self.tasks: Set["asyncio.Future[Any]"] = set()
        self._told_loop_closed = False

    @staticmethod
    def add(callbacks: List[T], callback: T) -> Callable[[], None]:
        if not callable(callback):
            raise TypeError(f"a callback must be callable, not {type(callback).__name__}")
        callbacks.append(callback)

        def remove() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return remove

    def run_task(
        self, awaitable: Awaitable[Any], done: Callable[["asyncio.Future[Any]"], None]
    ) -> None:
        task = asyncio.ensure_future(awaitable)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(done)

    def _call(self, callback: Callable[[Any], Any], value: Any, report: bool) -> None:
        def failed(exc: BaseException) -> None:
            kind = "session" if report else "error"
            _log.error("a tether %s callback raised", kind, exc_info=exc)
            if report:
                self.emit_error(exc)

        try:
            result = callback(value)
        except Exception as exc:  # reported, never swallowed silently
            failed(exc)
            return
        if inspect.isawaitable(result):
            if self.loop is None:
                _close_awaitable(result)
                failed(TypeError("tether.sync callbacks must be plain functions"))
                return

            def done(task: "asyncio.Future[Any]") -> None:
                if not task.cancelled() and task.exception() is not None:
                    failed(task.exception())  # type: ignore[arg-type]

            self.run_task(result, done)

    def emit_state(self, change: StateChange) -> None:
        # CONNECTING -> ... happened before `connect` returned the session (whose `state`
        # already says so): callbacks, which can only be added afterwards, see every change
        # after that one, deterministically.
        if change.old is SessionState.CONNECTING:
            return
        for cb in list(self.state):
            self._call(cb, change, report=True)

    def emit_gap(self, report: GapReport) -> None:
        for cb in list(self.gap):
            self._call(cb, report, report=True)

    def emit_error(self, exc: BaseException) -> None:
        for cb in list(self.error):
            self._call(cb, exc, report=False)

    def _to_loop(self, fn: Callable[[T], None], callbacks: List[Any]) -> Callable[[T], None]:
        """``fn`` for the core's callback thread: forwards to the loop, or calls directly.
        Once the loop has closed, ``callbacks`` cannot run any more: if there are any, the
        user is told so (once per session) rather than left guessing."""
        loop = self.loop
        if loop is None:
            return fn

        def forward(value: T) -> None:
            try:
                loop.call_soon_threadsafe(fn, value)
            except RuntimeError:  # the loop is closed
                if callbacks and not self._told_loop_closed:
                    self._told_loop_closed = True
                    _log.warning(
                        "the event loop this tether session was opened on is closed: its "
                        "on_state_change/on_gap callbacks are no longer called (dropped: %r)",
                        value,
                    )

        return forward

    def state_listener(self) -> Callable[[StateChange], None]:
        return self._to_loop(self.emit_state, self.state)

    def gap_listener(self) -> Callable[[GapReport], None]:
        return self._to_loop(self.emit_gap, self.gap)

    def strategy_failed(self, exc: BaseException, attempt: ReconnectionAttempt) -> None:
        """An exception raised in a strategy: logged, delivered as an error event, and the
        attempt aborted."""
        error = StrategyError(
            f"the reconnection strategy raised {type(exc).__name__}: {exc}; "
            "reconnection aborted"
        )
        error.__cause__ = exc
        _log.error("%s (attempt %d)", error, attempt.number, exc_info=exc)
        self.emit_error(error)
        attempt.abort()

    def strategy_invoker(self, strategy: StrategyFunction) -> "_Invoker":
        """What the core calls (on its callback thread) for each attempt, and after each
        attempt the strategy started (its ``on_success`` / ``on_failure`` methods, if any)."""
        loop = self.loop

        def run(attempt: ReconnectionAttempt) -> None:
            try:
                result = strategy(attempt)
            except Exception as exc:
                self.strategy_failed(exc, attempt)
                return
            except BaseException:
                attempt.abort()
                raise
            if inspect.isawaitable(result):
                if loop is None:
                    _close_awaitable(result)
                    self.strategy_failed(
                        TypeError("tether.sync strategies must be plain functions"), attempt
                    )
                    return

                def done(task: "asyncio.Future[Any]") -> None:
                    if task.cancelled():
                        if attempt.abort():
                            _log.info("reconnection strategy cancelled; reconnection aborted")
                        return
                    exc = task.exception()
                    if exc is not None:
                        self.strategy_failed(exc, attempt)

                self.run_task(result, done)

        def forward(attempt: ReconnectionAttempt) -> None:
            if loop is None:
                run(attempt)
                return
            try:
                loop.call_soon_threadsafe(run, attempt)
            except RuntimeError:
                _log.warning("event loop closed; reconnection aborted")
                attempt.abort()

        return _Invoker(forward, self._hook(strategy, "on_success"), self._hook(strategy, "on_failure"))

    def _hook(self, strategy: object, name: str) -> Optional[Callable[..., None]]:
        """The strategy's ``on_success`` / ``on_failure`` method for the core's callback
        thread (forwarded to the loop, or called directly), or ``None`` when it has none. An
        exception it raises is logged and delivered to ``on_error`` callbacks."""
        hook = getattr(strategy, name, None)
        if not callable(hook):
            return None
        loop = self.loop

        def run(*args: Any) -> None:
            try:
                result = hook(*args)
            except Exception as exc:
                _log.error("the reconnection strategy's %s raised", name, exc_info=exc)
                self.emit_error(exc)
                return
            if inspect.isawaitable(result):
                if loop is None:
                    _close_awaitable(result)
                    self.emit_error(TypeError("tether.sync strategy hooks must be plain functions"))
                    return

                def done(task: "asyncio.Future[Any]") -> None:
                    if not task.cancelled() and task.exception() is not None:
                        self.emit_error(task.exception())  # type: ignore[arg-type]

                self.run_task(result, done)

        if loop is None:
            return run

        def forward(*args: Any) -> None:
            try:
                loop.call_soon_threadsafe(run, *args)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                pass

        return forward


class _Invoker:
    """What the native ``open`` takes for a strategy function: called with each attempt; its
    ``on_success(info)`` / ``on_failure(info, reason)`` (``None`` when the user's strategy has
    no such method) are called after each attempt the strategy started."""

    def __init__(
        self,
        invoke: Callable[[ReconnectionAttempt], None],
        on_success: Optional[Callable[..., None]],
        on_failure: Optional[Callable[..., None]],
    ) -> None:
        self._invoke = invoke
        self.on_success = on_success
        self.on_failure = on_failure

    def __call__(self, attempt: ReconnectionAttempt) -> None:
        self._invoke(attempt)


def _close_awaitable(value: object) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        close()


def strategy_argument(strategy: Optional[Strategy], events: Events) -> Any:
    """What the native ``open`` takes for a strategy."""
    if strategy is None or is_builtin(strategy):
        return strategy
    return events.strategy_invoker(strategy)


SessionOptions = Dict[str, Optional[Union[str, float, int]]]
"""The session settings the native ``open`` takes as ``options`` (every key, ``None``: the
default)."""


def session_options(
    tls_root_certificates: Optional[Union[str, bytes]],
    ping_period: Optional[float],
    delivery_limit: Optional[int],
    max_queued_requests: Optional[int],
    max_queued_bytes: Optional[int],
    close_timeout: Optional[float],
) -> SessionOptions:
    """The ``options`` of the native ``open``, from ``connect``'s keyword arguments."""
    if isinstance(tls_root_certificates, (bytes, bytearray)):
        tls_root_certificates = bytes(tls_root_certificates).decode("utf-8")
    for name, count in (("delivery_limit", delivery_limit),
                        ("max_queued_requests", max_queued_requests),
                        ("max_queued_bytes", max_queued_bytes)):
        if count is not None and count < 1:
            raise InvalidArgumentError(f"{name} must be 1 or more (got {count})")
    return {
        "tls_root_certificates": tls_root_certificates,
        "ping_period": ping_period,
        "delivery_limit": delivery_limit,
        "max_queued_requests": max_queued_requests,
        "max_queued_bytes": max_queued_bytes,
        "close_timeout": close_timeout,
    }


Urls = Union[str, Sequence[str]]
"""What ``connect`` takes as ``url``: a URL, or several (the first, then fallbacks)."""


def split_urls(url: Urls) -> Tuple[str, List[str]]:
    """``(first URL, fallback URLs)`` of a ``url`` argument."""
    if isinstance(url, str):
        return url, []
    if isinstance(url, (bytes, bytearray)) or not isinstance(url, collections.abc.Sequence):
        raise TypeError(f"url must be a str or a sequence of str, not {type(url).__name__}")
    urls = list(url)
    for u in urls:
        if not isinstance(u, str):
            raise TypeError(f"every URL must be a str, not {type(u).__name__}")
    if not urls:
        raise InvalidArgumentError("url: give at least one URL")
    return urls[0], urls[1:]


def payload(value: Union[bytes, bytearray, memoryview, str]) -> bytes:
    """A publish value as bytes (``str`` is encoded as UTF-8)."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a value must be bytes or str, not {type(value).__name__}")


__all__ = [
    "BuiltinStrategy",
    "Reconnect",
    "ReconnectOption",
    "SessionOptions",
    "Strategy",
    "StrategyFunction",
    "Urls",
]
