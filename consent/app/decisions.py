"""Decision use cases: single, batch and a partner's standing permissions for one subject."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import NamedTuple

from msgspec import Struct

from consent.app.ports import Clock
from consent.app.read_model import SubjectCache
from consent.app.telemetry import Telemetry, note_violation
from consent.domain.catalog import Catalog
from consent.domain.decision import Decision, Denied, decide
from consent.domain.errors import DomainError, Forbidden
from consent.domain.ids import check_subject
from consent.domain.subject import SubjectConsents


class DecisionAnswer(Struct):
    decision: str
    permitted: list[str]
    denied: list[Denied]
    retain_until: datetime | None
    purpose_version: int | None
    position: int
    evaluated_at: datetime


class Permission(Struct):
    purpose: str
    scopes: list[str]
    retain_until: datetime | None


class Permissions(Struct):
    permissions: list[Permission]
    position: int


class Question(Struct, frozen=True):
    subject_id: str
    purpose: str
    scopes: list[str]
    partner: str | None
    # `subject_id` is the asking pairwise partner's pseudonym, answered for the subject it stands for.
    pseudonymous: bool = False


class Past(NamedTuple):
    """Time travel: a subject's state and the catalog as they stood at a moment, folded from the log."""

    state_at: Callable[[str, datetime], Awaitable[SubjectConsents]]
    catalog_at: Callable[[datetime], Awaitable[Catalog]]


class DecisionService:
    def __init__(self, subjects: SubjectCache, catalog: Callable[[], Catalog], clock: Clock,
                 feed_wait: float = 0.25, sandbox_prefix: str = "sandbox-",
                 telemetry: Telemetry | None = None, past: Past | None = None) -> None:
        self._past = past
        self._sandbox_prefix = sandbox_prefix
        self._subjects = subjects
        self._catalog = catalog
        self._clock = clock
        self._feed_wait = feed_wait
        # Decisions, denials and scope_not_approved by partner (GET /metrics, partner health).
        self.telemetry = telemetry or Telemetry(lambda partner_id: partner_id in catalog().partners)

    def check_sandbox(self, partner_id: str, subject_ids: list[str]) -> None:
        """A partner in the sandbox asks only about test subjects, never about real people.

        A pairwise partner names pseudonyms: checked once they are resolved (`_pseudonymous_states`)."""
        partner = self._catalog().partners.get(partner_id)
        if partner is not None and partner.status == "sandbox" and partner.identifiers == "public":
            for subject_id in subject_ids:
                if not subject_id.startswith(self._sandbox_prefix):
                    raise self._sandbox_only()

    def _sandbox_only(self) -> Forbidden:
        note_violation("sandbox_only")
        return Forbidden("sandbox_only", f"a sandbox partner asks only about subjects whose id "
                                         f"starts with {self._sandbox_prefix!r}")

    def is_pairwise(self, partner_id: str) -> bool:
        partner = self._catalog().partners.get(partner_id)
        return partner is not None and partner.identifiers == "pairwise"

    async def _pseudonymous_states(self, partner_id: str, pseudonyms: list[str],
                                   fresh: bool) -> dict[str, SubjectConsents]:
        """The states behind a pairwise partner's pseudonyms. One it has no mapping for (a stranger's,
        another partner's, or a real subject id) is answered as a subject with no consent: the answer
        must not tell the partner anything about it. A sandbox partner gets answers only for the
        pseudonyms of test subjects, and the same refusal for anything else."""
        found = await self._subjects.get_pseudonymous(partner_id, pseudonyms, fresh)
        partner = self._catalog().partners.get(partner_id)
        if partner is not None and partner.status == "sandbox" and any(
                state is None or not state.subject_id.startswith(self._sandbox_prefix) for state in found.values()):
            raise self._sandbox_only()
        return {pseudonym: state if state is not None else SubjectConsents(pseudonym)
                for pseudonym, state in found.items()}

    async def _database_position(self, min_position: int | None) -> int | None:
        """None when local state may answer; else the database's head, and answers read the database.

        A write returns its position after it was applied here, so a process's own
        positions are always local; another replica's may be ahead of the feed: wait
        for the feed a little, then read the database rather than answer stale.
        """
        if min_position is None or self._subjects.has_applied(min_position):
            return None
        if await self._subjects.wait_for(min_position, self._feed_wait):
            return None
        head = await self._subjects.database_head()
        if head < min_position:
            raise DomainError("unknown_position", f"position {min_position} has not been written")
        return head

    async def decide(self, question: Question, min_position: int | None = None,
                     at: datetime | None = None) -> DecisionAnswer:
        if at is not None:
            return (await self.decide_past([question], at))[0]
        check_subject(question.subject_id)
        head = await self._database_position(min_position)
        if question.pseudonymous:
            state = (await self._pseudonymous_states(question.partner or "", [question.subject_id],
                                                     fresh=head is not None))[question.subject_id]
        else:
            state = await self._subjects.get(question.subject_id, fresh=head is not None)
        return self._answer(question, state, head)

    async def decide_many(self, questions: list[Question], min_position: int | None = None,
                          at: datetime | None = None) -> list[DecisionAnswer]:
        if at is not None:
            return await self.decide_past(questions, at)
        for question in questions:
            check_subject(question.subject_id)
        head = await self._database_position(min_position)
        fresh = head is not None
        public = [q.subject_id for q in questions if not q.pseudonymous]
        states = await self._subjects.get_many(public, fresh=fresh) if public else {}
        by_pseudonym: dict[tuple[str, str], SubjectConsents] = {}
        for partner_id in dict.fromkeys(q.partner or "" for q in questions if q.pseudonymous):
            wanted = [q.subject_id for q in questions if q.pseudonymous and q.partner == partner_id]
            for pseudonym, state in (await self._pseudonymous_states(partner_id, wanted, fresh)).items():
                by_pseudonym[(partner_id, pseudonym)] = state
        return [self._answer(q, by_pseudonym[(q.partner or "", q.subject_id)] if q.pseudonymous
                             else states[q.subject_id], head) for q in questions]

    async def permissions(self, partner_id: str, subject_id: str, min_position: int | None = None,
                          pseudonymous: bool = False) -> Permissions:
        check_subject(subject_id)
        head = await self._database_position(min_position)
        if pseudonymous:
            state = (await self._pseudonymous_states(partner_id, [subject_id], fresh=head is not None))[subject_id]
        else:
            state = await self._subjects.get(subject_id, fresh=head is not None)
        catalog = self._catalog()
        partner = catalog.partner(partner_id)
        now = self._clock.now()
        granted = []
        for purpose_id, scopes in sorted(partner.data_uses.items()):
            decision = decide(catalog, state, partner_id, purpose_id, list(scopes), now)
            if decision.permitted:
                granted.append(Permission(purpose=purpose_id, scopes=decision.permitted,
                                          retain_until=decision.retain_until))
        return Permissions(permissions=granted, position=max(head or 0, self._subjects.position))

    async def decide_past(self, questions: list[Question], at: datetime) -> list[DecisionAnswer]:
        """The answers that would have been given at `at`: the catalog and each subject's consents folded from
        the log up to that moment, `retain_until` counted from it. Not counted in the partner's traffic."""
        if at.tzinfo is None:
            raise DomainError("validation_failed", "at must carry a time zone (RFC 3339)")
        if self._past is None:
            raise DomainError("validation_failed", "this service answers no decision as of a past moment")
        for question in questions:
            check_subject(question.subject_id)
        catalog = await self._past.catalog_at(at)
        answers = []
        for question in questions:
            subject_id: str | None = question.subject_id
            if question.pseudonymous:  # the subject behind the pseudonym; none: a subject with no consent
                current = (await self._subjects.get_pseudonymous(question.partner or "", [question.subject_id],
                                                                 True))[question.subject_id]
                subject_id = current.subject_id if current is not None else None
            state = (await self._past.state_at(subject_id, at) if subject_id is not None
                     else SubjectConsents(question.subject_id))
            decision = decide(catalog, state, question.partner, question.purpose, question.scopes, at)
            answers.append(DecisionAnswer(decision=decision.decision, permitted=decision.permitted,
                                          denied=decision.denied, retain_until=decision.retain_until,
                                          purpose_version=decision.purpose_version, position=state.position,
                                          evaluated_at=at))
        return answers

    def _answer(self, question: Question, state, head: int | None) -> DecisionAnswer:
        now = self._clock.now()
        decision: Decision = decide(self._catalog(), state, question.partner, question.purpose, question.scopes, now)
        self.telemetry.decided(question.partner, decision)
        return DecisionAnswer(decision=decision.decision, permitted=decision.permitted, denied=decision.denied,
                              retain_until=decision.retain_until, purpose_version=decision.purpose_version,
                              position=max(state.position, head or 0, self._subjects.position), evaluated_at=now)
