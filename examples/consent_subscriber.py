"""An internal subscriber on the JetStream stream CONSENT, with the consent-client SDK's EventSubscriber:
deletes a partner's copy of a user's data when consent ends (as delete_partner_copy.py does by hand).

Run: python examples/consent_subscriber.py acme   (NATS_URL defaults to nats://127.0.0.1:4222)
Needs `pip install './clients/python[nats]'`. Replace `delete_copy` with your own deletion job.
"""

from __future__ import annotations

import asyncio
import os
import sys

import nats
from consent_client import CONSENT_ENDED, CloudEvent
from consent_client.jetstream import EventSubscriber


async def delete_copy(partner: str, subject: str, purpose: str | None) -> None:
    print(f"deleting {partner}'s copy of {subject} ({purpose or 'all purposes'})")


def deletion_handler(partner: str):
    async def handle(event: CloudEvent) -> None:
        if event.type not in CONSENT_ENDED:
            return
        change = event.consent_change()  # None for an erasure: every purpose ends
        # A first-party withdrawal (partner None) ends every partner's use too.
        if change is None or change.partner in (partner, None):
            # Raising here leaves the event unacknowledged: it comes back, so the copy is deleted.
            await delete_copy(partner, event.subject, change.purpose if change else None)

    return handle


async def main(partner: str, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        # Durable: after a restart the consumer resumes where it acknowledged last.
        subscriber = EventSubscriber(nc.jetstream(), f"delete-{partner}", subject="consent.v1.subject.>")
        await subscriber.run(deletion_handler(partner))
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], os.environ.get("NATS_URL", "nats://127.0.0.1:4222")))
