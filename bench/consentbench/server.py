"""One server process the bench started (uvicorn, or Granian: a supervisor and its worker)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from consentbench.machine import child_pids, process_rss_mb


class Server:
    """One started server: uvicorn (one process at --server-workers 1) or Granian (a Rust supervisor that
    runs the app in a worker process of its own)."""

    def __init__(self, label: str, popen: subprocess.Popen, base_url: str, log_path: Path, command: list[str],
                 env: dict[str, str]) -> None:
        self.label, self.popen, self.base_url, self.log, self.command, self.env = (
            label, popen, base_url, log_path, command, env)
        self.worker_pid: int | None = None  # Granian's worker, once the server answers

    @property
    def pid(self) -> int:
        """The process that runs the application (its CPU is the server's): Granian's worker, else the one
        started."""
        return self.worker_pid or self.popen.pid

    def find_worker(self) -> None:
        """Granian serves from a child process: note it (the only child that is not the app's relay child)."""
        children = child_pids(self.popen.pid)
        if children:
            self.worker_pid = children[0]

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"server {self.label} died (exit {self.popen.returncode}):\n{self.log_tail()}")

    def rss_mb(self) -> float | None:
        return process_rss_mb(self.pid)

    async def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            for _ in range(150):
                if self.popen.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.popen.kill()
                self.popen.wait()
