"""What following the feed costs a replica, per event: decoding the CloudEvent a NATS message carries and
folding it into the decision cache (consent/adapters/nats_feed.py, consent/app/read_model.py), in one process,
without the network. Every replica pays this for every write of the deployment (docs/scaling.md).

    .venv/bin/python bench/feed_cost.py [--events 50000] [--subjects 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime

from consent.adapters.cloudevents import encode
from consent.adapters.nats_feed import recorded_from_message
from consent.app.ports import RecordedEvent
from consent.app.read_model import SubjectCache
from consent.domain.events import ConsentGranted, ConsentWithdrawn
from consent.domain.subject import SubjectConsents


class EmptyReader:
    async def load_subjects(self, subject_ids: list[str]) -> dict[str, SubjectConsents]:
        return {subject_id: SubjectConsents(subject_id) for subject_id in subject_ids}

    async def head_position(self) -> int:
        return 0


def payloads(count: int, subjects: int) -> list[bytes]:
    """Grants and withdrawals by turns, over `subjects` subjects, as the relay publishes them."""
    now = datetime.now(UTC)
    versions: dict[str, int] = {}
    found = []
    for n in range(count):
        subject = f"bench-{n % subjects:06d}"
        version = versions[subject] = versions.get(subject, 0) + 1
        event = (ConsentGranted(occurred_at=now, purpose="marketing", partner="acme", scopes=("profile",),
                                purpose_version=1, source="web") if version % 2 else
                 ConsentWithdrawn(occurred_at=now, purpose="marketing", partner="acme", scopes=None,
                                  purpose_version=1, source="web"))
        found.append(encode(RecordedEvent(uuid.uuid4(), f"subject:{subject}", version, n + 1, event, now),
                            "/consent"))
    return found


async def follow(messages: list[bytes], subjects: int) -> tuple[float, float]:
    cache = SubjectCache(EmptyReader(), capacity=subjects, followed_by_feed=True)
    await cache.get_many([f"bench-{n:06d}" for n in range(subjects)])  # every subject cached: each event folds
    started = time.process_time()
    decoded = [recorded_from_message(message) for message in messages]
    decoding = time.process_time() - started
    started = time.process_time()
    for recorded in decoded:
        cache.apply([recorded], from_feed=True)
    return decoding, time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--subjects", type=int, default=10_000)
    args = parser.parse_args()
    messages = payloads(args.events, args.subjects)
    for attempt in range(3):
        decoding, folding = asyncio.run(follow(messages, args.subjects))
        per_event = (decoding + folding) / args.events * 1e6
        print(f"run {attempt + 1}: {args.events:,} events, decode {decoding / args.events * 1e6:.1f} µs + fold "
              f"{folding / args.events * 1e6:.1f} µs = {per_event:.1f} µs of CPU an event")


if __name__ == "__main__":
    main()
