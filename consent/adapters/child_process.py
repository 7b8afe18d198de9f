"""A part of `consent serve` that runs in a child process: the NATS relay (CONSENT_RELAY=process) and the
webhook senders (CONSENT_WEBHOOK_SENDER=process).

The child is `python -m consent.cli <command> --report`: it writes its state as a JSON line on stdout every
REPORT_EVERY seconds and stops when its parent goes away. The parent reads those lines, starts another child
when one dies, and stops it on shutdown. Both ends are here, so that each part only says what it reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from consent.app.background import BackgroundLoop
from consent.config import Settings

log = logging.getLogger("consent.children")

REPORT_EVERY = 0.5  # seconds between state lines
STALE_AFTER = 5.0  # seconds without a state line: the child is hung
RESTART_DELAY = 0.5  # seconds before a dead child is replaced


async def report_until_stopped(state: Callable[[], dict[str, Any]], report: bool, name: str) -> None:
    """The child's main loop: until SIGTERM or SIGINT, or (with `report`) until its parent is gone, writes
    `state()` as a JSON line every REPORT_EVERY seconds when `report`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    parent = os.getppid()
    while not stop.is_set():
        if report:
            if os.getppid() != parent:
                log.warning("the server that started this %s is gone; stopping", name)
                return
            try:
                sys.stdout.write(json.dumps(state()) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                return  # the reader, our parent, is gone
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), REPORT_EVERY)


def child_env(settings: Settings, names: dict[str, str]) -> dict[str, str]:
    """This process's environment without its CONSENT_* settings (the admin, master and signing keys stay in
    the parent unless a child is given one), plus the database and log settings every child needs and `names`,
    the part's own (they may have been given to create_app rather than read from the environment)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONSENT_")}
    env.update({"CONSENT_DATABASE_URL": settings.database_url, "CONSENT_LOG_FORMAT": settings.log_format,
                "CONSENT_DATABASE_FAILOVER_WAIT": str(settings.database_failover_wait),
                "CONSENT_DATABASE_POOL_TIMEOUT": str(settings.database_pool_timeout)})
    env.update(names)
    return env


class ChildProcess(BackgroundLoop):
    """Supervises a `consent <command> --report` child. Subclasses read its state lines in `reported`, and may
    give it `stdin_line`: one line written once on its standard input (secrets, kept out of its environment)."""

    command = ""

    def __init__(self, env: dict[str, str], stdin_line: bytes | None = None) -> None:
        self._env = env
        self._stdin_line = stdin_line
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._reported_at = float("-inf")

    def reported(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def exited(self) -> None:
        """The child is gone: what it reported no longer holds."""

    @property
    def fresh(self) -> bool:
        """The child runs and reported lately: it is not hung."""
        running = self.process is not None and self.process.returncode is None
        return running and asyncio.get_running_loop().time() - self._reported_at < STALE_AFTER

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    async def _run(self) -> None:
        while True:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "consent.cli", self.command, "--report", env=self._env,
                stdin=asyncio.subprocess.PIPE if self._stdin_line else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE)
            self.starts += 1
            if self._stdin_line is not None:
                assert self.process.stdin is not None
                self.process.stdin.write(self._stdin_line + b"\n")  # kept open: EOF would say "parent gone"
            assert self.process.stdout is not None
            async for line in self.process.stdout:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.reported(json.loads(line))
                    self._reported_at = asyncio.get_running_loop().time()
            code = await self.process.wait()
            self.exited()
            log.warning("%s process %d exited (%s); starting another", self.command, self.process.pid, code)
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
