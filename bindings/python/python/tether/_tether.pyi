"""Type stubs of the native module ``tether._tether`` (private: use ``tether``)."""

import asyncio
from typing import Callable, Dict, List, Optional, Sequence, Union, final

from ._types import CloseReason, Jitter, SessionState

__all__ = [
    "AbortImmediately",
    "AttemptInfo",
    "ConstantDelay",
    "DefaultStrategy",
    "ExponentialBackoff",
    "GapReport",
    "NativeSession",
    "NativeStateChanges",
    "NativeSubscription",
    "ReconnectionAttempt",
    "StateChange",
    "Update",
    "__version__",
    "at_exit",
    "open",
    "open_blocking",
    "shutdown",
]

__version__: str

def open(
    url: str,
    *,
    fallback_urls: Sequence[str] = ...,
    principal: Optional[str] = None,
    credentials: Optional[str] = None,
    reconnect_timeout: float = 60.0,
    strategy: Optional[object] = None,
    on_state: Optional[Callable[[StateChange], None]] = None,
    on_gap: Optional[Callable[[GapReport], None]] = None,
    connect_timeout: float = 10.0,
    strict: bool = False,
    options: Optional[Dict[str, Optional[Union[str, float, int]]]] = None,
) -> asyncio.Future[NativeSession]: ...
def open_blocking(
    url: str,
    *,
    fallback_urls: Sequence[str] = ...,
    principal: Optional[str] = None,
    credentials: Optional[str] = None,
    reconnect_timeout: float = 60.0,
    strategy: Optional[object] = None,
    on_state: Optional[Callable[[StateChange], None]] = None,
    on_gap: Optional[Callable[[GapReport], None]] = None,
    connect_timeout: float = 10.0,
    strict: bool = False,
    options: Optional[Dict[str, Optional[Union[str, float, int]]]] = None,
) -> NativeSession: ...
def shutdown(timeout: float = 5.0) -> bool:
    """Closes every open session (requests made before are sent and confirmed first), then
    stops Tether's runtime and joins its threads, all within ``timeout`` seconds; returns
    whether everything stopped in time."""

def at_exit(timeout: float = 5.0) -> bool:
    """The package's ``atexit`` hook: ``shutdown(timeout)``, after which no thread of Tether's
    touches the interpreter again."""

@final
class NativeSession:
    @property
    def session_id(self) -> str: ...
    @property
    def state(self) -> SessionState: ...
    @property
    def close_reason(self) -> Optional[CloseReason]: ...
    @property
    def reconnection_timeout(self) -> float: ...
    @property
    def ping_period(self) -> Optional[float]: ...
    def publish(self, topic: str, value: bytes) -> asyncio.Future[None]: ...
    def publish_blocking(self, topic: str, value: bytes, timeout: Optional[float] = None) -> None: ...
    def subscribe(self, selector: str) -> asyncio.Future[NativeSubscription]: ...
    def subscribe_blocking(
        self, selector: str, timeout: Optional[float] = None
    ) -> NativeSubscription: ...
    def unsubscribe(self, selector: str) -> asyncio.Future[None]: ...
    def unsubscribe_blocking(self, selector: str, timeout: Optional[float] = None) -> None: ...
    def close(self) -> asyncio.Future[None]: ...
    def close_blocking(self, timeout: Optional[float] = None) -> None: ...
    def closed(self) -> asyncio.Future[CloseReason]: ...
    def closed_blocking(self, timeout: Optional[float] = None) -> CloseReason: ...
    def wait_for_state(self, state: Union[SessionState, str]) -> asyncio.Future[SessionState]: ...
    def wait_for_state_blocking(
        self, state: Union[SessionState, str], timeout: Optional[float] = None
    ) -> SessionState: ...
    def state_changes(self) -> NativeStateChanges: ...

@final
class NativeSubscription:
    @property
    def selector(self) -> str: ...
    def next(self) -> asyncio.Future[Optional[Update]]: ...
    def next_batch(self, limit: int = 256) -> asyncio.Future[Optional[List[Update]]]: ...
    def next_blocking(self, timeout: Optional[float] = None) -> Optional[Update]: ...
    def try_next(self) -> Optional[Update]: ...

@final
class NativeStateChanges:
    def next(self) -> asyncio.Future[Optional[StateChange]]: ...
    def next_blocking(self, timeout: Optional[float] = None) -> Optional[StateChange]: ...

@final
class StateChange:
    """One state transition: ``old`` -> ``new``, with the ``reason`` for disconnections and
    closings."""

    @property
    def old(self) -> SessionState: ...
    @property
    def new(self) -> SessionState: ...
    @property
    def reason(self) -> Optional[CloseReason]: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class Update:
    """A topic value delivered to a subscription."""

    @property
    def topic(self) -> str: ...
    @property
    def value(self) -> bytes: ...
    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
    @property
    def snapshot(self) -> bool:
        """``True`` for a current value sent as a snapshot, ``False`` for a live update."""
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class GapReport:
    """Messages the server could not replay after a resume."""

    @property
    def lost_from(self) -> int: ...
    @property
    def lost_to(self) -> int: ...
    @property
    def lost_count(self) -> int: ...
    @property
    def topics(self) -> list[tuple[str, int]]: ...

@final
class ReconnectionAttempt:
    """One reconnection attempt. ``start()``/``abort()`` may be called from any thread, at
    any later time; the first call decides (and returns ``True``)."""

    def start(self) -> bool: ...
    def abort(self) -> bool: ...
    def start_after(self, delay: float) -> None:
        """Calls ``start()`` after ``delay`` seconds (no event loop needed)."""
    @property
    def number(self) -> int: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def remaining(self) -> float: ...
    @property
    def reason(self) -> CloseReason: ...
    @property
    def retry_after(self) -> Optional[float]:
        """Seconds the server asked the session to wait (``server_draining``,
        ``server_busy``), or ``None``."""
    @property
    def is_decided(self) -> bool: ...

@final
class AttemptInfo:
    """The facts of a reconnection attempt that ended, given to a strategy's ``on_success``
    and ``on_failure`` hooks."""

    @property
    def number(self) -> int: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def remaining(self) -> float: ...
    @property
    def reason(self) -> CloseReason: ...
    @property
    def retry_after(self) -> Optional[float]: ...

@final
class ConstantDelay:
    """Try again after the same delay (seconds) every time; with ``max_attempts``, abort
    instead of attempt ``max_attempts + 1``."""

    def __new__(cls, delay: float, max_attempts: Optional[int] = None) -> ConstantDelay: ...
    def __call__(self, attempt: ReconnectionAttempt) -> None:
        """Decides an attempt a strategy function was given, as this built-in would."""
    @property
    def delay(self) -> float: ...
    @property
    def max_attempts(self) -> Optional[int]: ...

@final
class ExponentialBackoff:
    """Exponential backoff with jitter, optional attempt limit, optional quick first attempt
    in ``[0, first_attempt]`` seconds, and an optional fixed random seed."""

    def __new__(
        cls,
        initial: float = 0.25,
        multiplier: float = 2.0,
        max_delay: float = 10.0,
        *,
        jitter: Optional[Union[Jitter, str]] = None,
        max_attempts: Optional[int] = None,
        first_attempt: Optional[float] = None,
        seed: Optional[int] = None,
    ) -> ExponentialBackoff: ...
    @property
    def initial(self) -> float: ...
    @property
    def multiplier(self) -> float: ...
    @property
    def max_delay(self) -> float: ...
    @property
    def jitter(self) -> str: ...
    @property
    def max_attempts(self) -> Optional[int]: ...
    @property
    def first_attempt(self) -> Optional[float]: ...
    def __call__(self, attempt: ReconnectionAttempt) -> None:
        """Decides an attempt a strategy function was given, as this built-in would."""

@final
class AbortImmediately:
    """Never reconnect: the first attempt aborts."""

    def __new__(cls) -> AbortImmediately: ...
    def __call__(self, attempt: ReconnectionAttempt) -> None:
        """Aborts an attempt a strategy function was given, as this built-in would."""

@final
class DefaultStrategy:
    """The first attempt after a random 0-100 ms, then full-jitter backoff from 250 ms,
    doubling, capped at 10 s."""

    def __new__(cls) -> DefaultStrategy: ...
    def __call__(self, attempt: ReconnectionAttempt) -> None:
        """Decides an attempt a strategy function was given, as this built-in would."""

