"""The values state stores for a change and a member: which way a change goes, where it is in the
outbox, and how sure state is that a member is on the platform. Each is a ``StrEnum`` whose value is
what the column holds (the ``CHECK`` constraints of ``state.schema`` name the same strings)."""

from __future__ import annotations

from enum import StrEnum


class ChangeOp(StrEnum):
    """``outbox.op``, ``rejections.op``, ``lag.op``, ``push_sessions.op``."""

    ADD = "add"
    REMOVE = "remove"


class OutboxStatus(StrEnum):
    """``outbox.status``."""

    QUEUED = "queued"
    """To send (or sent with no answer recorded, when ``wire_at`` is set)."""
    IN_FLIGHT = "in_flight"
    """Sent; the platform is processing it under ``handle``."""


class Confirmation(StrEnum):
    """``members.confirmation``: members not ``synced`` are possibly on the platform (a leave sends
    the remove) and are resent while the source wants them."""

    SYNCED = "synced"
    """The platform accepted it."""
    MAYBE = "maybe"
    """A request carrying it went out and no answer was recorded."""
    UNVERIFIED = "unverified"
    """The platform reported failures in its batch only as a count, so which failed is unknown."""
