"""A task that runs alongside the HTTP server for the life of the process."""

from __future__ import annotations

import asyncio
import contextlib


class BackgroundLoop:
    """Subclasses give `_run`, a coroutine that loops until cancelled."""

    task_name = "consent-background"
    _task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        raise NotImplementedError
