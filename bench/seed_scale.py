"""The scale run's bulk seeder: N subjects x 10 consents as hash-chained events, sent with COPY.

Every subject grants its 10 (purpose, partner) choices in one request (stream versions 1-10, one of
them an objection for 10 %); later 20 % withdraw the acme marketing grant and 10 % the first-party
ad_sharing one (those withdrawals come last in the log, in time order). Each row's hash is computed
by `consent.domain.hash_chain.event_hash`, the function every append of the service goes through,
over the row exactly as it is stored, so the seeded log passes `consent audit verify`.

Evidence is stored in plaintext, as events written before evidence was encrypted are (the readers
accept both); the scale run measures decisions, which never read it.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from consent.domain.hash_chain import GENESIS, event_hash

COLUMNS = ("event_id", "stream_id", "stream_version", "type", "data", "metadata", "recorded_at", "hash")
Row = tuple[uuid.UUID, str, int, str, str, str, dt.datetime, bytes]

# The 10 choices: version, purpose, partner, scopes (a list to pick from by a hash of the subject).
_ACME_MARKETING = (["profile.email"], ["orders.history"], ["orders.history", "profile.email"])
_ACME_ANALYTICS = (["location", "orders"], ["orders"])
_encode = msgspec.json.Encoder().encode


def _choices(h: int) -> list[tuple[int, str, str | None, list[str] | None]]:
    return [
        (1, "marketing", None, None),
        (2, "marketing", "acme", _ACME_MARKETING[(h // 100) % 3]),
        (3, "marketing", "globex", ["profile"]),
        (4, "analytics", None, None),
        (5, "analytics", "acme", _ACME_ANALYTICS[(h // 3000) % 2]),
        (6, "analytics", "globex", ["orders.history"]),
        (7, "analytics", "initech", ["location.precise"]),
        (8, "ad_sharing", None, None),
        (9, "ad_sharing", "acme", ["profile"]),
        (10, "ad_sharing", "initech", ["location", "profile.email"]),
    ]


def _text(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Seeder:
    """Rows of subjects `first` to `last - 1`, in the order they go into the log."""

    def __init__(self, prefix: str, width: int, n: int, base: dt.datetime, actor: str,
                 evidence: list[dict[str, Any]], seed: int = 1) -> None:
        self.prefix, self.width, self.n = prefix, width, n
        self.base, self.step = base, dt.timedelta(seconds=300 * 86400 / n)  # sign-ups over 300 days
        self.metadata = {"actor": actor}
        self.metadata_text = _encode(self.metadata).decode()
        self.evidence = evidence
        self.withdrawals: list[Row] = []  # kept for the end of the log
        self._random = random.Random(seed)

    def _event_id(self) -> uuid.UUID:
        return uuid.UUID(int=self._random.getrandbits(128), version=4)

    def _row(self, previous: bytes, stream_id: str, version: int, type_: str, data: dict[str, Any],
             at: dt.datetime) -> Row:
        event_id = self._event_id()
        digest = event_hash(previous, stream_id, version, event_id, type_, at, data, self.metadata)
        return (event_id, stream_id, version, type_, _encode(data).decode(), self.metadata_text, at, digest)

    def subjects(self, first: int, last: int) -> Iterator[Row]:
        for i in range(first, last):
            yield from self._subject(i)

    def _subject(self, i: int) -> Iterator[Row]:
        stream_id = f"subject:{self.prefix}{i:0{self.width}d}"
        at = self.base + i * self.step
        h = (i * 2654435761) % 4294967296
        common = {"occurred_at": _text(at), "purpose_version": 1, "source": ("web", "app", "api")[i % 3],
                  "evidence": self.evidence[i % 3]}
        previous = GENESIS
        for version, purpose, partner, scopes in _choices(h):
            data = {**common, "purpose": purpose, "partner": partner, "scopes": scopes}
            type_ = "subject.granted"
            if version == 4 and (h // 300) % 10 == 0:  # 10 % object to first-party analytics instead
                type_ = "subject.objected"
            else:
                expires = None
                if (version == 1 and h % 100 < 15) or (version == 2 and (h // 100000) % 100 < 10):
                    expires = _text(at + dt.timedelta(days=430 + h % 300))
                data["expires_at"] = expires
            row = self._row(previous, stream_id, version, type_, data, at)
            previous = row[-1]
            yield row
        version = 10
        for purpose, partner, scopes, later, wanted in (
                ("marketing", "acme", _ACME_MARKETING[(h // 100) % 3], 1 + h % 30, (h // 1000) % 5 == 0),
                ("ad_sharing", None, None, 31 + h % 30, (h // 7000) % 10 == 0)):
            if not wanted:
                continue
            version += 1
            when = at + dt.timedelta(days=later)
            data = {**common, "occurred_at": _text(when), "purpose": purpose, "partner": partner,
                    "scopes": scopes, "reason": None}
            row = self._row(previous, stream_id, version, "subject.withdrawn", data, when)
            previous = row[-1]
            self.withdrawals.append(row)

    def sorted_withdrawals(self) -> list[Row]:
        return sorted(self.withdrawals, key=lambda row: (row[6], row[1]))


async def copy_rows(conn: Any, rows: list[Row]) -> int:
    """COPY rows into events (asyncpg, binary): positions and transaction ids from the column defaults."""
    await conn.copy_records_to_table("events", records=rows, columns=COLUMNS)
    return len(rows)


def chunks(first: int, last: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(first, last, size):
        yield start, min(last, start + size)


Progress = Callable[[int, int], None]
