"""Replicas that know of each other: each announces itself on NATS every HEARTBEAT seconds and counts the
replicas heard within LIVE_FOR seconds, itself included. The per-partner rate limit is the deployment's: each
replica enforces its share (consent/app/rate_limit.py), and the count only changes a number on the hot path.

The heartbeats are core NATS messages on a subject outside the stream: never stored, never replayed. They
carry a random id per process and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

import nats

from consent.adapters.nats_stream import StreamTarget, connect
from consent.app.background import BackgroundLoop

log = logging.getLogger("consent.presence")

HEARTBEAT = 1.0  # seconds between announcements
LIVE_FOR = 3.0  # seconds a replica counts as live after its last announcement
_LEAVING = b"leaving "


def presence_subject(target: StreamTarget) -> str:
    return f"_consent.{target.name}.replicas"


class ReplicaPresence(BackgroundLoop):
    task_name = "consent-presence"

    def __init__(self, target: StreamTarget, on_count: Callable[[int], None], heartbeat: float = HEARTBEAT,
                 live_for: float = LIVE_FOR, clock: Callable[[], float] = time.monotonic) -> None:
        self._target = target
        self._on_count = on_count
        self._heartbeat, self._live_for, self._clock = heartbeat, live_for, clock
        self._id = uuid.uuid4().hex.encode()
        self._seen: dict[bytes, float] = {}  # another replica's id -> when last heard
        self._nc: nats.NATS | None = None
        self.live = 1

    async def start(self) -> None:
        self._nc = await connect(self._target, "consent-presence")
        await self._nc.subscribe(presence_subject(self._target), cb=self._heard)
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):  # leaving politely is a courtesy: the others time out anyway
                await self._nc.publish(presence_subject(self._target), _LEAVING + self._id)
                await self._nc.drain()

    async def _run(self) -> None:
        while True:
            try:
                await self._nc.publish(presence_subject(self._target), self._id)
            except Exception as error:  # noqa: BLE001 - NATS away: the count decays to this replica alone
                log.warning("presence heartbeat not sent (%s)", type(error).__name__)
            self._recount()
            await asyncio.sleep(self._heartbeat)

    async def _heard(self, message) -> None:
        if message.data.startswith(_LEAVING):
            self._seen.pop(message.data[len(_LEAVING):], None)
        elif message.data != self._id:
            self._seen[message.data] = self._clock()
        self._recount()

    def _recount(self) -> None:
        now = self._clock()
        for replica, heard in list(self._seen.items()):
            if now - heard > self._live_for:
                del self._seen[replica]
        live = 1 + len(self._seen)
        if live != self.live:
            log.info("live replicas: %d", live)
            self.live = live
            self._on_count(live)
