"""What the service answers, as typed structs (docs/api.md, "Decisions" and "Partner tokens").

Unknown fields are ignored when decoding: the service may add fields without a new API version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from msgspec import Struct


class AccessToken(Struct, frozen=True):
    access_token: str
    token_type: str
    expires_in: int
    scope: str | None = None  # the OAuth scopes granted, space-separated


class Denial(Struct, frozen=True):
    scope: str
    # `no_consent`, `consent_withdrawn`, `scope_not_approved`, ... (docs/design.md, "Decision rules").
    reason: str


class Decision(Struct, frozen=True):
    decision: Literal["permit", "deny", "partial"]
    permitted: list[str]
    denied: list[Denial]
    retain_until: datetime | None
    purpose_version: int | None
    # The log position this answer reflects: pass it on as `min_position` to read at least this fresh.
    position: int
    evaluated_at: datetime

    @property
    def allowed(self) -> bool:
        """Every scope asked for is permitted. A `partial` answer is not: check `permitted` scope by scope."""
        return self.decision == "permit"


class BatchDecisions(Struct, frozen=True):
    results: list[Decision]  # in the order the questions were asked
    position: int


class Question(Struct, frozen=True, omit_defaults=True):
    """One item of a batch: may I use these scopes of this subject for this purpose?"""

    subject_id: str
    purpose: str
    scopes: list[str]


class Permission(Struct, frozen=True):
    purpose: str
    scopes: list[str]
    retain_until: datetime | None


class Permissions(Struct, frozen=True):
    permissions: list[Permission]
    position: int
