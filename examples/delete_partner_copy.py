"""Delete a partner's copy of a user's data when consent ends: a durable JetStream consumer.

Run: python examples/delete_partner_copy.py acme   (NATS_URL defaults to nats://127.0.0.1:4222)
Copy it, and replace `delete_copy` with your own deletion job.
"""

import asyncio
import json
import os
import sys

import nats

ENDING = {"io.consent.v1.subject.withdrawn", "io.consent.v1.subject.expired", "io.consent.v1.subject.erased"}


async def delete_copy(partner: str, subject: str, purpose: str | None) -> None:
    print(f"deleting {partner}'s copy of {subject} ({purpose or 'all purposes'})")


async def consume(partner: str, nats_url: str, stream: str = "CONSENT", prefix: str = "consent.v1",
                  stop_after: int | None = None) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    # Durable: after a restart the consumer resumes where it acknowledged last.
    sub = await js.pull_subscribe(f"{prefix}.subject.*.*.>", durable=f"delete-{partner}", stream=stream)
    handled = 0
    try:
        while stop_after is None or handled < stop_after:
            try:
                messages = await sub.fetch(batch=50, timeout=5)
            except nats.errors.TimeoutError:
                continue
            for msg in messages:
                event = json.loads(msg.data)
                data = event["data"]
                # A first-party withdrawal (partner null) ends every partner's use too.
                if event["type"] in ENDING and data.get("partner") in (partner, None):
                    await delete_copy(partner, event["subject"], data.get("purpose"))
                await msg.ack()  # only after the deletion: a crash before it redelivers the event
                handled += 1
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(consume(sys.argv[1], os.environ.get("NATS_URL", "nats://127.0.0.1:4222")))
