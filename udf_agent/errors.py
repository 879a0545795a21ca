"""The agent's exception tree. Library errors (protobuf, sockets, backends) are wrapped
into these at the edges with ``raise ... from exc``."""

from __future__ import annotations

__all__ = [
    "AgentError",
    "FrameTooLarge",
    "MalformedFrame",
    "OptionError",
    "ProtocolError",
    "TruncatedFrame",
]


class AgentError(Exception):
    """Base class of every error the agent raises."""


class ProtocolError(AgentError):
    """The peer broke the socket-UDF protocol; the connection cannot continue."""


class MalformedFrame(ProtocolError):
    """Bad length prefix or a body that does not decode as a Request."""


class FrameTooLarge(ProtocolError):
    """A length prefix above the configured maximum frame size."""


class TruncatedFrame(ProtocolError):
    """The peer closed the connection in the middle of a frame."""


class OptionError(AgentError):
    """Bad ``@score()`` options in an InitRequest; answered with success=false."""
