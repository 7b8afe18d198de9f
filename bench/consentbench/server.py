"""One uvicorn process the bench started."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from consentbench.machine import process_rss_mb


class Server:
    """One started uvicorn process."""

    def __init__(self, label: str, popen: subprocess.Popen, base_url: str, log_path: Path, command: list[str],
                 env: dict[str, str]) -> None:
        self.label, self.popen, self.base_url, self.log, self.command, self.env = (
            label, popen, base_url, log_path, command, env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"server {self.label} died (exit {self.popen.returncode}):\n{self.log_tail()}")

    def rss_mb(self) -> float | None:
        return process_rss_mb(self.popen.pid)

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
