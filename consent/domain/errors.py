"""Domain errors carry a stable, machine-readable code; the API maps them to HTTP."""

from __future__ import annotations


class DomainError(Exception):
    """A command was refused. `code` is stable and part of the public contract."""

    status = 422

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class NotFound(DomainError):
    status = 404

    def __init__(self, what: str, ident: str) -> None:
        super().__init__("not_found", f"{what} {ident!r} does not exist")


class Forbidden(DomainError):
    """Valid credentials, acting outside their rights."""

    status = 403


class Conflict(DomainError):
    """The command is valid in form but clashes with the current state."""

    status = 409


class VersionConflict(Conflict):
    def __init__(self, stream_id: str, expected: int) -> None:
        super().__init__(
            "version_conflict",
            f"{stream_id.split(':', 1)[0]} changed concurrently (expected version {expected})",
        )
