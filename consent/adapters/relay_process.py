"""The relay in a process of its own (`consent relay`, and `CONSENT_RELAY=process`).

Inline, the relay shares the HTTP server's event loop: under a write load it waits behind
request handlers at every await, and publish lag grows with the load. In a process of its own
it has its own interpreter and event loop, and the kernel schedules it beside the server.

`consent relay` runs only the relay. Several may run: the advisory lock picks the one that
publishes (consent/adapters/nats_relay.py); NOTIFY on every commit wakes it. With `--report`
it writes its state as a JSON line on stdout every REPORT_EVERY seconds and exits when its
parent goes away; `consent serve` with CONSENT_RELAY=process starts one so (RelayChild), reads
those lines for /health/ready and /metrics, starts another when it dies, stops it on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys

from consent.adapters.database import database_of
from consent.adapters.nats_relay import Relay
from consent.adapters.nats_stream import stream_target
from consent.app.background import BackgroundLoop
from consent.config import Settings

log = logging.getLogger("consent.relay")

REPORT_EVERY = 0.5  # seconds between state lines
STALE_AFTER = 5.0  # seconds without a state line: the child is hung, not publishing
RESTART_DELAY = 0.5  # seconds before a dead child is replaced; its lock is already released


async def run_relay(settings: Settings, report: bool = False) -> int:
    if settings.nats_url is None:
        print("consent relay: CONSENT_NATS_URL is not set", file=sys.stderr)
        return 2
    database = database_of(settings, relay_only=True)
    relay = Relay(database, stream_target(settings), settings.event_source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    parent = os.getppid()
    await relay.start()
    try:
        while not stop.is_set():
            if report:
                if os.getppid() != parent:
                    log.warning("the server that started this relay is gone; stopping")
                    break
                state = {"leader": relay.is_leader, "connected": relay.connected,
                         "published_position": relay.published_position}
                try:
                    sys.stdout.write(json.dumps(state) + "\n")
                    sys.stdout.flush()
                except BrokenPipeError:
                    break  # the reader, our parent, is gone
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_EVERY)
    finally:
        await relay.stop()
        await database.dispose()
    return 0


def relay_env(settings: Settings) -> dict[str, str]:
    """The child's environment: this process's without its CONSENT_* settings (admin, master and signing
    keys stay in the parent), plus the few the relay needs (they may have been given to create_app rather
    than read from the environment)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONSENT_")}
    env.update({"CONSENT_DATABASE_URL": settings.database_url, "CONSENT_EVENT_SOURCE": settings.event_source,
                "CONSENT_NATS_STREAM": settings.nats_stream,
                "CONSENT_NATS_SUBJECT_PREFIX": settings.nats_subject_prefix,
                "CONSENT_NATS_REPLICAS": str(settings.nats_replicas),
                "CONSENT_DATABASE_FAILOVER_WAIT": str(settings.database_failover_wait)})
    if settings.nats_url is not None:
        env["CONSENT_NATS_URL"] = settings.nats_url
    return env


class RelayChild(BackgroundLoop):
    """Supervises a `consent relay --report` child; shows the same facts as an inline Relay."""

    task_name = "consent-relay-child"

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.is_leader = False
        self.published_position = 0
        self._connected = False
        self._reported_at = float("-inf")

    def wake(self) -> None:
        """Nothing to do: the child is woken by the NOTIFY of every commit."""

    @property
    def connected(self) -> bool:
        """The child runs, said lately that it is connected to NATS, and so is not hung."""
        running = self.process is not None and self.process.returncode is None
        fresh = asyncio.get_running_loop().time() - self._reported_at < STALE_AFTER
        return running and fresh and self._connected

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    async def _run(self) -> None:
        while True:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "consent.cli", "relay", "--report", env=self._env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE)
            self.starts += 1
            assert self.process.stdout is not None
            async for line in self.process.stdout:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    state = json.loads(line)
                    self.is_leader, self._connected = bool(state["leader"]), bool(state["connected"])
                    self.published_position = int(state["published_position"])
                    self._reported_at = asyncio.get_running_loop().time()
            code = await self.process.wait()
            self.is_leader = self._connected = False
            log.warning("relay process %d exited (%s); starting another", self.process.pid, code)
            await asyncio.sleep(RESTART_DELAY)

    async def stop(self) -> None:
        await super().stop()  # no restart from here on
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10.0)
        except TimeoutError:
            process.kill()
            await process.wait()
