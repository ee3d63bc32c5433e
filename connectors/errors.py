"""One error taxonomy for every connector.

Each connector maps its platform's answers onto these classes in one pure function, so the runner
decides what to do from the class alone: retry later, stop the destination, or tell a person what to
fix. Messages never carry payloads, tokens or full URLs: they can hold hashed PII or secrets.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class. ``request_id`` is the platform's trace id when it gave one."""

    def __init__(self, message: str, *, request_id: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.code = code

    def __str__(self) -> str:
        parts = [self.message]
        if self.code:
            parts.append(f"(code {self.code})")
        if self.request_id:
            parts.append(f"[request id {self.request_id}]")
        return " ".join(parts)


class TransientError(ConnectorError):
    """Throttling, 5xx, timeouts: retried inside the connector until its wait budget ran out. What was
    not sent stays in the outbox for the next run."""

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, code=code)
        self.retry_after = retry_after


class FatalError(ConnectorError):
    """A person has to act: the run stops for this destination and the outbox is kept."""


class AuthError(FatalError):
    """The token is missing, expired or invalid."""


class PermissionDenied(FatalError):
    """The credentials work but lack a permission, or terms are not accepted."""


class AudienceGone(FatalError):
    """The platform audience was deleted, flagged or is otherwise unusable."""


class SchemaMismatch(FatalError):
    """The existing platform audience expects other identifier keys than this sync sends."""


class ConfigurationRejected(FatalError):
    """The platform refuses the setup itself (for example Google's not-allowlisted answer)."""
