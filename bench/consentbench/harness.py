"""The bench's state and the infrastructure every run uses: its databases, the servers it starts,
NATS streams, HTTP helpers, and the clean-up after a run."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from consent.adapters.receipt_keys import new_key_set
from consentbench.figures import log
from consentbench.machine import free_port, listening_pid, process_rss_mb, service_revision
from consentbench.server import Server
from consentbench.workload import subject_width

# The keys every server of one run shares (they share a database), as `consent keys init` makes them.
# To bench an older tree that reads CONSENT_RECEIPT_KEYS only as a file: --server-env CONSENT_RECEIPT_KEYS=
SHARED_KEYS = {"CONSENT_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
               "CONSENT_PSEUDONYM_KEY": secrets.token_urlsafe(32),
               "CONSENT_RECEIPT_KEYS": new_key_set()}


def server_command(kind: str, port: int, workers: int) -> list[str]:
    """The command of one server the bench starts: uvicorn (uvloop, httptools) or Granian (--server granian:
    its Rust HTTP stack, the app on uvloop in a worker process), the service's app factory, no access log."""
    bindir = Path(sys.executable).parent
    if kind == "granian":
        granian = bindir / "granian"
        launcher = [str(granian)] if granian.exists() else [sys.executable, "-m", "granian"]
        return [*launcher, "--interface", "asgi", "--factory", "--loop", "uvloop", "--workers", str(workers),
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
                "consent.api.app:create_app"]
    uvicorn = bindir / "uvicorn"
    launcher = [str(uvicorn)] if uvicorn.exists() else [sys.executable, "-m", "uvicorn"]
    return [*launcher, "consent.api.app:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning"]


def postgres_urls(base: str, database: str) -> tuple[str, str]:
    """(asyncpg DSN, SQLAlchemy URL) for `database` on the server of `base`."""
    parts = urllib.parse.urlsplit(base)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise SystemExit(f"--postgres must be a postgresql:// URL, not {base!r}")
    plain = urllib.parse.urlunsplit(("postgresql", parts.netloc, "/" + database, parts.query, ""))
    return plain, "postgresql+asyncpg" + plain[len("postgresql"):]


class Bench:
    """One bench invocation: its options, what it started (databases, servers, wrk, NATS streams), its
    results and problems. The runs are functions of the other modules that take it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base_url = args.url.rstrip("/") if args.url else None
        self.admin_key = args.admin_key
        self.server: subprocess.Popen | None = None
        self.server_log: Path | None = None
        self.database: str | None = None
        self.database_dsn: str | None = None
        self.wrk_proc: asyncio.subprocess.Process | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="consent-bench-"))
        self.results: dict[str, Any] = {}
        self.problems: list[str] = []
        self.credential: tuple[str, str] | None = None  # (client_id, client_secret)
        self.width = subject_width(args.subjects)
        self.wrk_runs = 0  # each wrk run draws its own random sequence
        self.server_pid: int | None = None  # ours, or found by the --url port when it is local
        self.servers: list[Server] = []  # every server started and not yet stopped
        self.nats_streams: list[str] = []  # JetStream streams created for a run, deleted at the end
        self.measured_window: tuple[float, float] | None = None  # wall clock of the last measured wrk run
        self.server_revision: str | None = None  # the service's commit when the last server started

    # --- databases ---------------------------------------------------------------------------

    async def create_database(self) -> None:
        name = f"consent_bench_{secrets.token_hex(4)}"
        admin_dsn = postgres_urls(self.args.postgres, urllib.parse.urlsplit(self.args.postgres).path.lstrip("/")
                                  or "postgres")[0]
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.database = name
        self.database_dsn, self.database_url = postgres_urls(self.args.postgres, name)
        log(f"database: created {name}")

    async def drop_database(self) -> None:
        if self.database is None:
            return
        admin_dsn = postgres_urls(self.args.postgres, urllib.parse.urlsplit(self.args.postgres).path.lstrip("/")
                                  or "postgres")[0]
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            log(f"database: dropped {self.database}")
            self.database = None
        finally:
            await conn.close()

    def migrate(self) -> None:
        env = {**os.environ, "CONSENT_DATABASE_URL": self.database_url}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "consent.cli", "db", "upgrade"], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"consent db upgrade failed:\n{done.stdout}{done.stderr}")
        log(f"database: migrated in {time.monotonic() - started:.1f} s")

    async def sql(self, query: str, *params: Any) -> list[Any]:
        conn = await asyncpg.connect(self.database_dsn)
        try:
            return await conn.fetch(query, *params)
        finally:
            await conn.close()

    # --- servers -----------------------------------------------------------------------------

    async def spawn_server(self, label: str, extra_env: dict[str, str] | None = None,
                           signing_key: str | None = None) -> Server:
        """Start one server (--server: uvicorn or Granian) on the current database (self.admin_key, a new one
        if unset) and wait until it is ready."""
        port = free_port()
        if self.admin_key is None:
            self.admin_key = secrets.token_urlsafe(24)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
        env.update(CONSENT_DATABASE_URL=self.database_url, CONSENT_ADMIN_KEYS=self.admin_key,
                   CONSENT_TOKEN_SIGNING_KEY=signing_key or secrets.token_urlsafe(32), CONSENT_PARTNER_RATE_LIMIT="0",
                   **SHARED_KEYS)
        env.update(dict(setting.split("=", 1) for setting in self.args.server_env))
        env.update(extra_env or {})
        command = server_command(self.args.server, port, self.args.server_workers)
        if self.args.server_log:
            log_path = Path(self.args.server_log if label == "server" else f"{self.args.server_log}.{label}")
        else:
            log_path = self.tmp / f"{label}.log"
        with open(log_path, "wb") as out:
            # Its own session: a Ctrl-C reaches the bench, which then stops it and drops the database.
            popen = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        server = Server(label, popen, f"http://127.0.0.1:{port}", log_path, command,
                        {k: v for k, v in (extra_env or {}).items()})
        self.servers.append(server)
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if popen.poll() is not None:
                    raise RuntimeError(f"server {label} exited with {popen.returncode}:\n{server.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{server.base_url}/health/ready")).status_code == 200:
                        if self.args.server == "granian":
                            server.find_worker()
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server {label} not ready after 60 s:\n{server.log_tail()}")
                await asyncio.sleep(0.1)
        return server

    async def start_server(self, label: str = "server", extra_env: dict[str, str] | None = None,
                           signing_key: str | None = None) -> Server:
        """The server the wrk runs target (self.server, self.base_url)."""
        server = await self.spawn_server(label, extra_env, signing_key)
        # Others may commit while the bench runs: the code a run measured is the one its server started with.
        self.server_revision = service_revision()
        self.server, self.server_log, self.base_url = server.popen, server.log, server.base_url
        self.server_pid = server.pid  # Granian's worker, not its supervisor
        if label == "server" or not hasattr(self, "server_command"):
            self.server_command = server.command
        log(f"server{'' if label == 'server' else ' ' + label}: pid {server.pid} on {self.base_url}"
            + (f" ({', '.join(f'{k}={v}' for k, v in server.env.items())})" if server.env else ""))
        return server

    def server_log_tail(self, lines: int = 40) -> str:
        if self.server_log is None or not self.server_log.exists():
            return ""
        return "\n".join(self.server_log.read_text(errors="replace").splitlines()[-lines:])

    async def stop_server(self) -> None:
        if self.server is None:
            return
        server = next((x for x in self.servers if x.popen is self.server), None)
        if server is not None:
            await server.stop()
            self.servers.remove(server)
            code = server.popen.returncode
        else:
            code = self.server.returncode
        log(f"server: stopped (exit {code})")
        self.server = None

    def check_server_alive(self) -> None:
        if self.server is not None and self.server.poll() is not None:
            raise RuntimeError(f"server died (exit {self.server.returncode}):\n{self.server_log_tail()}")

    def server_rss_mb(self) -> float | None:
        return process_rss_mb(self.server_pid)

    # --- HTTP set-up -------------------------------------------------------------------------

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    async def expect(self, response: httpx.Response, *ok: int) -> Any:
        if response.status_code not in ok:
            request = response.request
            body = request.content.decode(errors="replace")[:500] if request.content else ""
            raise RuntimeError(f"{request.method} {request.url.path} {body} -> {response.status_code} "
                               f"{response.text[:1000]}")
        return response.json() if response.content else None

    # --- measurements ------------------------------------------------------------------------

    async def pg_sessions(self) -> int | None:
        """Sessions ever opened on the bench database (pg_stat_database.sessions, PostgreSQL 14+)."""
        if self.database is None:
            return None
        admin_dsn = postgres_urls(self.args.postgres, urllib.parse.urlsplit(self.args.postgres).path.lstrip("/")
                                  or "postgres")[0]
        try:
            conn = await asyncpg.connect(admin_dsn)
            try:
                return await conn.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = $1",
                                           self.database)
            finally:
                await conn.close()
        except (asyncpg.PostgresError, OSError):
            return None

    def flag_errors(self, name: str, result: dict[str, Any]) -> None:
        if result["non_2xx"] or result["socket_errors"]:
            message = (f"run {name}: {result['non_2xx']} non-2xx responses {result['statuses']} and "
                       f"{result['socket_errors']} socket errors {result['errors']} of {result['requests']} requests")
            self.problems.append(message)
            log("!" * 100 + f"\n!!! {message}\n" + "!" * 100)

    # --- NATS, for lag and propagation --------------------------------------------------------

    def nats_env(self, tag: str) -> dict[str, str]:
        """A stream and subject prefix of this run's own, so that nothing else on the NATS server is touched."""
        env = {"CONSENT_NATS_URL": self.args.nats, "CONSENT_NATS_STREAM": f"BENCH_{tag.upper()}",
               "CONSENT_NATS_SUBJECT_PREFIX": f"bench{tag}.consent.v1"}
        if self.args.relay:
            env["CONSENT_RELAY"] = self.args.relay
        return env

    @staticmethod
    async def relay_child(client: httpx.AsyncClient) -> dict[str, int]:
        """The relay child's pid (CONSENT_RELAY=process), for the CPU meter."""
        pid = (await client.get("/health/ready")).json().get("relay", {}).get("pid")
        return {"relay": pid} if pid else {}

    def nats_server_pid(self) -> dict[str, int]:
        target = urllib.parse.urlsplit(self.args.nats)
        if target.hostname not in ("127.0.0.1", "localhost", "::1"):
            return {}
        pid = listening_pid(target.port or 4222)
        return {"nats-server": pid} if pid else {}

    async def delete_streams(self) -> None:
        if not self.nats_streams:
            return
        import nats
        try:
            nc = await nats.connect(self.args.nats, connect_timeout=5, max_reconnect_attempts=1, allow_reconnect=False)
        except Exception as error:  # noqa: BLE001 - say what was left behind
            log(f"nats: could not connect to delete streams {', '.join(self.nats_streams)}: {error!r}")
            return
        try:
            js = nc.jetstream(timeout=10)
            for stream in list(self.nats_streams):
                try:
                    await js.delete_stream(stream)
                    log(f"nats: deleted stream {stream}")
                except Exception as error:  # noqa: BLE001
                    log(f"nats: could not delete stream {stream}: {error!r}")
                self.nats_streams.remove(stream)
        finally:
            await nc.close()

    # --- clean-up ----------------------------------------------------------------------------

    async def end_run(self) -> None:
        """Stop every server of an extra run, drop its database, delete its stream."""
        await self.stop_wrk()
        for server in [x for x in self.servers if x.popen is not self.server]:
            if server.popen.poll() is not None:
                self.results["server_log_tail"] = server.log_tail(20)
            await server.stop()
            self.servers.remove(server)
            log(f"server {server.label}: stopped (exit {server.popen.returncode})")
        if self.server is not None:
            self.results["server_log_tail"] = self.server_log_tail(20)
        await self.stop_server()
        await self.drop_database()
        await self.delete_streams()
        self.credential = None
        self.admin_key = None

    def interrupt_wrk(self) -> None:
        """End a background wrk run now: on SIGINT wrk reports what it did so far."""
        if self.wrk_proc is not None and self.wrk_proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.wrk_proc.send_signal(signal.SIGINT)

    async def stop_wrk(self) -> None:
        if self.wrk_proc is not None and self.wrk_proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.wrk_proc.kill()
            await self.wrk_proc.wait()
