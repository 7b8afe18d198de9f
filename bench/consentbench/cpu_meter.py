"""Where the CPU went during a run, read from /proc: the server, PostgreSQL, wrk, this process, the rest."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path


class CpuMeter:
    """Where the CPU went during a run, in percent of one core: the server process, the PostgreSQL
    backends serving the bench database, wrk (a reaped child), this process, and everything else
    on the machine (other people's work skews every figure: it is reported, not hidden)."""

    def __init__(self, server_pid: int | None, database: str | None, extra_pids: dict[str, int] | None = None) -> None:
        self.server_pid = server_pid
        self.database = database
        # Other processes the run drives (a second replica, nats-server), by label, counted apart.
        self.extra_pids = extra_pids or {}
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.cores = os.cpu_count() or 1

    @staticmethod
    def _ticks(pid: int | str) -> int | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return None

    def _postgres(self) -> dict[str, int]:
        """CPU ticks of the PostgreSQL processes working for the bench database, by pid."""
        if self.database is None:
            return {}
        marker = f" {self.database} ".encode()
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            # Backends of the bench database, and the shared background processes (WAL writer,
            # checkpointer, ...), whose command lines name no client: "user db host(port) state".
            if cmdline.startswith(b"postgres: ") and (marker in cmdline or (
                    b"(" not in cmdline and b"[local]" not in cmdline and b"autovacuum worker" not in cmdline)):
                ticks = self._ticks(entry.name)
                if ticks is not None:
                    found[entry.name] = ticks
        return found

    @staticmethod
    def _machine() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    @staticmethod
    def _rusage(who: int) -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.server0 = self._ticks(self.server_pid) if self.server_pid else None
        self.extra0 = {label: (pid, self._ticks(pid)) for label, pid in self.extra_pids.items()}
        self.pg0 = self._postgres()
        self.machine0 = self._machine()
        self.children0 = self._rusage(resource.RUSAGE_CHILDREN)
        self.self0 = self._rusage(resource.RUSAGE_SELF)

    def stop(self) -> dict[str, float | None]:
        wall = time.monotonic() - self.t0
        server = self._ticks(self.server_pid) if self.server_pid else None
        pg = self._postgres()
        total, idle = self._machine()
        children = self._rusage(resource.RUSAGE_CHILDREN) - self.children0
        own = self._rusage(resource.RUSAGE_SELF) - self.self0
        pct = lambda seconds: round(100 * seconds / wall, 1)  # noqa: E731
        dtotal = total - self.machine0[0]
        busy = self.cores * (1 - (idle - self.machine0[1]) / dtotal) * wall if dtotal else None
        server_s = (server - self.server0) / self.ticks if server is not None and self.server0 is not None else None
        pg_s = sum(t - self.pg0.get(pid, 0) for pid, t in pg.items()) / self.ticks if self.database else None
        extra_s = {label: ((self._ticks(pid) or 0) - (t0 or 0)) / self.ticks
                   for label, (pid, t0) in self.extra0.items()}
        known = children + own + (server_s or 0) + (pg_s or 0) + sum(extra_s.values())
        extra = {"extra_core_pct": {label: pct(v) for label, v in extra_s.items()}} if extra_s else {}
        return {
            **extra,
            "server_core_pct": None if server_s is None else pct(server_s),
            "postgres_core_pct": None if pg_s is None else pct(pg_s),
            "wrk_core_pct": pct(children),
            "bench_core_pct": pct(own),
            "machine_busy_pct": None if busy is None else round(100 * busy / (wall * self.cores), 1),
            "other_core_pct": None if busy is None else max(0.0, pct(busy - known)),
        }
