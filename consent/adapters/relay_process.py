"""The relay in a process of its own (`consent relay`, and `CONSENT_RELAY=process`).

Inline, the relay shares the HTTP server's event loop: under a write load it waits behind
request handlers at every await, and publish lag grows with the load. In a process of its own
it has its own interpreter and event loop, and the kernel schedules it beside the server.

`consent relay` runs only the relay. Several may run: the advisory lock picks the one that
publishes (consent/adapters/nats_relay.py); NOTIFY on every commit wakes it. With `--report`
it is a child of `consent serve` (consent/adapters/child_process.py): RelayChild reads its state
lines for /health/ready and /metrics.
"""

from __future__ import annotations

import sys
from typing import Any

from consent.adapters.child_process import ChildProcess, child_env, report_until_stopped
from consent.adapters.database import RELAY_CONNECTIONS, database_of
from consent.adapters.nats_relay import Relay
from consent.adapters.nats_stream import stream_target
from consent.config import Settings


async def run_relay(settings: Settings, report: bool = False) -> int:
    if settings.nats_url is None:
        print("consent relay: CONSENT_NATS_URL is not set", file=sys.stderr)
        return 2
    database = database_of(settings, apart=RELAY_CONNECTIONS)
    relay = Relay(database, stream_target(settings), settings.event_source)
    await relay.start()
    try:
        await report_until_stopped(lambda: {"leader": relay.is_leader, "connected": relay.connected,
                                            "published_position": relay.published_position}, report, "relay")
    finally:
        await relay.stop()
        await database.dispose()
    return 0


def relay_env(settings: Settings) -> dict[str, str]:
    env = child_env(settings, {"CONSENT_EVENT_SOURCE": settings.event_source,
                               "CONSENT_NATS_STREAM": settings.nats_stream,
                               "CONSENT_NATS_SUBJECT_PREFIX": settings.nats_subject_prefix,
                               "CONSENT_NATS_REPLICAS": str(settings.nats_replicas)})
    if settings.nats_url is not None:
        env["CONSENT_NATS_URL"] = settings.nats_url
    return env


class RelayChild(ChildProcess):
    """Supervises a `consent relay --report` child; shows the same facts as an inline Relay."""

    task_name = "consent-relay-child"
    command = "relay"

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.is_leader = False
        self.published_position = 0
        self._connected = False

    def wake(self) -> None:
        """Nothing to do: the child is woken by the NOTIFY of every commit."""

    def reported(self, state: dict[str, Any]) -> None:
        self.is_leader, self._connected = bool(state["leader"]), bool(state["connected"])
        self.published_position = int(state["published_position"])

    def exited(self) -> None:
        self.is_leader = self._connected = False

    @property
    def connected(self) -> bool:
        """The child runs, said lately that it is connected to NATS, and so is not hung."""
        return self.fresh and self._connected
