"""Stream ids: every event belongs to one stream, named `<kind>:<id>`.

The name is stored with each event and hashed into the log's chain (consent/domain/hash_chain.py),
so its text must never change: stream ids are built and split here, nowhere else. The id part
may itself hold colons (only the first one separates).
"""

from __future__ import annotations

from typing import NamedTuple

SEPARATOR = ":"

SUBJECT = "subject"  # a subject's consents; on the feed, a pairwise partner's pseudonym stands for the id
PURPOSE = "purpose"
SCOPE = "scope"
PARTNER = "partner"
CREDENTIAL = "credential"  # a partner's API credential, by client id
TOKEN = "token"  # a revoked partner token, by token id
AUDIT = "audit"  # governance reads, one stream per admin key id
WEBHOOK = "webhook"  # a partner's webhook endpoint, by webhook id
UNRESOLVED = "unresolved"  # never stored: a feed event whose subject could not be found

CATALOG_STREAMS = (PURPOSE, SCOPE, PARTNER)  # kinds whose events change the catalog

# For hot loops, which test and cut the prefix inline rather than call a function.
SUBJECT_PREFIX = SUBJECT + SEPARATOR


class StreamId(NamedTuple):
    kind: str
    id: str


def stream_of(kind: str, ident: str) -> str:
    """The id of the stream of this kind for this entity, e.g. `stream_of(PURPOSE, "ads")` is `purpose:ads`."""
    return kind + SEPARATOR + ident


def parse_stream_id(text: str) -> StreamId:
    """`kind:id` split at its first colon; no colon: the whole text is the kind, the id is empty."""
    kind, _, ident = text.partition(SEPARATOR)
    return StreamId(kind, ident)


def stream_kind(text: str) -> str:
    return text.partition(SEPARATOR)[0]


def subject_stream(subject_id: str) -> str:
    return SUBJECT_PREFIX + subject_id
