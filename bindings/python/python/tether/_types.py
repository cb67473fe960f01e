"""Enumerations shared by the asyncio API and ``tether.sync``."""

from __future__ import annotations

import enum

__all__ = ["CloseReason", "Jitter", "SessionState"]


class SessionState(str, enum.Enum):
    """The state of a session. The three ``CLOSED_*`` states are terminal."""

    CONNECTING = "CONNECTING"
    CONNECTED_ACTIVE = "CONNECTED_ACTIVE"
    RECOVERING_RECONNECT = "RECOVERING_RECONNECT"
    CLOSED_BY_CLIENT = "CLOSED_BY_CLIENT"
    CLOSED_BY_SERVER = "CLOSED_BY_SERVER"
    CLOSED_FAILED = "CLOSED_FAILED"

    @property
    def is_closed(self) -> bool:
        """Whether the state is terminal."""
        return self.name.startswith("CLOSED_")

    def __str__(self) -> str:
        return self.value


class CloseReason(str, enum.Enum):
    """Why a connection was lost or a session closed (stable snake_case values)."""

    CLOSED_BY_CLIENT = "closed_by_client"
    CLOSED_BY_SERVER = "closed_by_server"
    RECONNECT_ABORTED = "reconnect_aborted"
    RECONNECT_TIMEOUT = "reconnect_timeout"
    AUTHENTICATION_FAILED = "authentication_failed"
    HANDSHAKE_ERROR = "handshake_error"
    PROTOCOL_VERSION_MISMATCH = "protocol_version_mismatch"
    TRANSPORT_ERROR = "transport_error"
    CONNECTION_ERROR = "connection_error"
    IDLE_CONNECTION = "idle_connection"
    LOST_MESSAGES = "lost_messages"
    UNKNOWN_SESSION = "unknown_session"
    ACCESS_DENIED = "access_denied"
    LIMIT_EXCEEDED = "limit_exceeded"
    SERVER_DRAINING = "server_draining"
    SERVER_BUSY = "server_busy"

    def __str__(self) -> str:
        return self.value


class Jitter(str, enum.Enum):
    """How :class:`tether.ExponentialBackoff` spreads its delays."""

    NONE = "none"
    """Exactly ``min(max_delay, initial * multiplier ** (n - 1))``."""
    FULL = "full"
    """Uniform in ``[0, d]``."""
    EQUAL = "equal"
    """``d / 2`` plus uniform in ``[0, d / 2]``."""
    DECORRELATED = "decorrelated"
    """Uniform in ``[initial, previous * 3]``, capped."""

    def __str__(self) -> str:
        return self.value
