"""The exceptions of ``tether``. The native module raises these (it maps the core's typed
errors onto them), so ``except tether.TetherError`` catches everything the library raises
about a session, and the subclasses also derive from the matching builtin where one exists
(``ValueError``, ``ConnectionError``, ``PermissionError``)."""

from __future__ import annotations

import builtins
from typing import Optional

from ._types import CloseReason

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "ConnectionFailedError",
    "InvalidArgumentError",
    "OpenError",
    "OutcomeUnknownError",
    "QueueFullError",
    "RequestRejectedError",
    "SessionClosedError",
    "StrategyError",
    "TetherError",
]


class TetherError(Exception):
    """Base class of every ``tether`` error.

    ``reason`` is the typed close reason for errors that carry one (opening failures, closed
    sessions), else ``None``; ``kind`` names the refusal of a :class:`RequestRejectedError`
    (the core's name of the request error kind, the same in every binding).
    """

    reason: Optional[CloseReason]
    kind: Optional[str]

    def __init__(
        self,
        message: str,
        reason: Optional[CloseReason] = None,
        kind: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.kind = kind


class InvalidArgumentError(TetherError, ValueError):
    """A URL, topic, selector, duration or option was malformed or out of range. ``kind``
    is ``"invalid_topic"`` for a malformed topic path (the name the server's refusal of one
    has), else ``None``."""


class OpenError(TetherError):
    """The session could not be opened; ``reason`` says why."""


class AuthenticationError(OpenError):
    """The principal or credentials were refused (``reason`` is ``AUTHENTICATION_FAILED``)."""


class ConnectionFailedError(OpenError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke while opening."""


class SessionClosedError(TetherError):
    """The session is closed, or closed while the call waited; ``reason`` says why."""


class OutcomeUnknownError(SessionClosedError):
    """The session closed after the request was sent and before the server confirmed it: the
    server may or may not have applied it. Check the application's state before retrying it.
    (A request that fails with a plain :class:`SessionClosedError` was certainly not
    applied.)"""


class QueueFullError(TetherError):
    """The send queue is full while disconnected; nothing was queued."""


class RequestRejectedError(TetherError):
    """The server refused a request; the session stays open. ``kind`` says why
    (``"access_denied"``, ``"invalid_selector"``, ``"invalid_topic"``, ``"not_subscribed"``,
    ``"too_large"``)."""


class AccessDeniedError(RequestRejectedError, builtins.PermissionError):
    """The principal lacks the permission for this topic or selector."""


class StrategyError(TetherError):
    """A reconnection strategy raised. The original exception is ``__cause__``; the attempt
    was aborted, so the session closes with reason ``RECONNECT_ABORTED``. Delivered to
    :meth:`tether.Session.on_error` callbacks (and logged), never raised at a call site."""
