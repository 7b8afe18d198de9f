"""Facts about the machine and the processes on it: the header's description of the machine, free
ports, which process listens on a port, a process's memory."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



def service_revision() -> str | None:
    """The commit of the service under test, and whether its code differs from it (read-only git)."""
    root = Path(__file__).resolve().parents[2]  # the repository: bench/consentbench/machine.py
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "consent", "migrations"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" + uncommitted changes in consent/ or migrations/" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    first = (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "wrk"
    return first.split(" Copyright")[0].strip()


def listening_pid(port: int) -> int | None:
    """The process listening on this local TCP port, when it is on this machine and visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
    return None


def child_pids(pid: int) -> list[int]:
    """The direct children of a process, oldest first (from /proc/PID/task/*/children)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                found += [int(x) for x in (task / "children").read_text().split()]
    return sorted(set(found))


def process_rss_mb(pid: int | None) -> float | None:
    with contextlib.suppress(OSError, ValueError, TypeError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU a process has used so far (/proc/PID/stat), None when it cannot be read."""
    with contextlib.suppress(OSError, ValueError, TypeError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None
