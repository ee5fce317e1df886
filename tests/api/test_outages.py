"""Outages of the public service's database and of Redis, with real processes of the test's own: a PostgreSQL
cluster on a free port (initdb + pg_ctl in a temporary folder) and a redis-server on a free port. The machine's
shared services (PostgreSQL on 5432, Redis on 6379) are never touched.

* Database down: every endpoint reading the database answers 503 ``database_unavailable`` with a Retry-After,
  one log line when the outage starts and one when it ends; ``/readyz`` says ``database: unavailable`` quickly,
  ``/metrics`` has ``cardproof_api_database_available 0``; recovery needs no restart, and a PostgreSQL restart
  between two requests costs no failed request (the public engine has no pre-ping).
* Redis down: lookups keep per-worker rate limits (not a security control), and the outage shows in
  ``/readyz`` (``redis: unavailable``, still ready) and ``/metrics`` (``cardproof_api_redis_available 0``).

``PgCluster`` and ``RedisServer`` are also used by ``tests/issuer_service/test_outages.py``.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.api.world import LiveServer

# --------------------------------------------------------------------------- processes of the test's own


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class PgCluster:
    """A PostgreSQL cluster of the test's own, in a temporary folder, on a free port of 127.0.0.1 (trust
    authentication, user ``postgres``). As root, the server runs as the ``postgres`` system user."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        if self.bin is None:
            pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl)")
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root without runuser: cannot start PostgreSQL")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="cardproof-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, str(self.bin / tool), *args], check=check, capture_output=True,
                              text=True, timeout=60, cwd=self.dir)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "30", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", check=False)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """A redis-server of the test's own on a free port (no persistence); ``kill`` and ``start`` again."""

    def __init__(self) -> None:
        self.exe = shutil.which("redis-server")
        if self.exe is None:
            pytest.skip("no redis-server")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cardproof-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # our own process, by its handle
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pg():
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def redis_server():
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


# --------------------------------------------------------------------------- the public service on it


def outage_lines(caplog, what: str = "database") -> tuple[list[str], list[str]]:
    msgs = [r.getMessage() for r in caplog.records]
    return ([m for m in msgs if m.startswith(f"{what} unavailable")],
            [m for m in msgs if m.startswith(f"{what} available again")])


@pytest.fixture(scope="module")
def public_pg(pg, world):
    """The world's main batch published into a public database on the test's own PostgreSQL."""
    from tests.api.world import dump_of
    from verify_api.publish import publish_dump
    from verify_api.storage.db import open_public_database

    url = pg.create_database("public_outage")
    engine, sessions = open_public_database(url=url)
    publish_dump(sessions, world.registry, world.batches["main"].batch_id, dump_of(world, world.batches["main"].batch_id))
    yield engine, sessions
    engine.dispose()


@pytest.fixture
def server(world, public_pg, request):
    engine, sessions = public_pg
    background = getattr(request, "param", True)
    from verify_api.app import create_app
    from verify_api.deps import AppDeps
    from verify_api.ratelimit import MemoryLimiter

    deps = AppDeps(settings=world.settings, api=world.api_settings(card_cache_ttl=0), sessions=sessions,
                   engine=engine, registry=world.registry, limiter=MemoryLimiter(), background=background)
    app = create_app(world.settings, deps=deps)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def endpoints(world) -> list[tuple[str, str]]:
    from issuer.core.serial import format_serial, new_serial_value

    serial, _ = world.card()
    batch_id = world.batches["main"].batch_id
    return [("GET", f"/v1/cards/{serial}"), ("GET", f"/v1/cards/{format_serial(new_serial_value())}"),
            ("GET", f"/c/{serial}"), ("GET", f"/v1/batches/{batch_id}"),
            ("GET", f"/v1/issuers/{world.issuer_client.address}")]


@pytest.mark.timeout(180)
def test_database_outage_is_503_logged_once_and_recovers(server, world, pg, caplog):
    caplog.set_level(logging.INFO)
    eps = endpoints(world)
    for method, path in eps:
        r = server.request(method, path)
        assert r.status_code < 500, (path, r.status_code, r.text)
    assert server.get("/readyz").json()["database"] == "ok"

    pg.stop()
    try:
        for _ in range(6):
            for method, path in eps:
                r = server.request(method, path)
                assert r.status_code == 503, (path, r.status_code, r.text[:300])
                if path.startswith("/c/"):
                    continue  # the page: HTML or JSON, but a 503
                assert r.json()["error"]["code"] == "database_unavailable", (path, r.text)
                assert int(r.headers["retry-after"]) >= 1
        t0 = time.monotonic()
        ready = server.get("/readyz")
        assert time.monotonic() - t0 < 3
        assert ready.status_code == 503 and ready.json()["database"] == "unavailable", ready.text
        metrics = server.get("/metrics").text
        assert "cardproof_api_database_available 0.0" in metrics
        down, up = outage_lines(caplog)
        assert len(down) == 1 and not up, down
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info
                    and r.name.startswith("cardproof.api")], "no traceback per request"
    finally:
        pg.start()

    for method, path in eps:
        r = server.request(method, path)
        assert r.status_code < 500, (path, r.status_code, r.text[:300])
    assert server.get("/readyz").json()["database"] == "ok"
    assert "cardproof_api_database_available 1.0" in server.get("/metrics").text
    down, up = outage_lines(caplog)
    assert len(down) == 1 and len(up) == 1, (down, up)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("server", [False], indirect=True, ids=["no-background-threads"])
def test_postgres_restart_between_requests_costs_no_request(server, world, pg, caplog):
    """The public engine has no pre-ping: pooled connections closed by a restart are replaced at checkout.
    (No background thread here: the scan writer would otherwise meet the dead connections first.)"""
    eps = endpoints(world)
    for _ in range(3):
        for method, path in eps:
            assert server.request(method, path).status_code < 500
    pg.stop()
    pg.start()
    for _ in range(3):
        for method, path in eps:
            r = server.request(method, path)
            assert r.status_code < 500, (path, r.status_code, r.text[:300])


# --------------------------------------------------------------------------- Redis


@pytest.mark.timeout(120)
def test_redis_outage_shows_in_readyz_and_metrics(world, redis_server, caplog):
    from verify_api.ratelimit import make_limiter

    caplog.set_level(logging.INFO)
    limiter = make_limiter(redis_server.url, prefix="cardproof-test:")
    app = world.app(limiter=limiter, api=world.api_settings(lookup_rate="5/minute"))
    serial, _ = world.card()
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        ready = client.get("/readyz").json()
        assert ready["redis"] == "ok" and ready["status"] == "ready"
        assert "cardproof_api_redis_available 1.0" in client.get("/metrics").text

        redis_server.kill()
        codes = [client.get(f"/v1/cards/{serial}").status_code for _ in range(8)]
        # Per-worker limits meanwhile: still limited (5/minute), never everything let through nor refused.
        assert codes[0] == 200 and 429 in codes and 503 not in codes, codes
        t0 = time.monotonic()
        r = client.get("/readyz")
        assert time.monotonic() - t0 < 3
        ready = r.json()
        assert ready["redis"] == "unavailable" and ready["status"] == "ready" and r.status_code == 200, ready
        assert "cardproof_api_redis_available 0.0" in client.get("/metrics").text
        down, up = outage_lines(caplog, "Redis")
        assert len(down) == 1 and not up, down

        redis_server.start()
        deadline = time.monotonic() + 15
        while client.get("/readyz").json()["redis"] != "ok":
            assert time.monotonic() < deadline, "Redis not seen again"
            time.sleep(0.2)
        assert "cardproof_api_redis_available 1.0" in client.get("/metrics").text
        down, up = outage_lines(caplog, "Redis")
        assert len(down) == 1 and len(up) == 1, (down, up)


def test_readyz_without_redis_says_so(api):
    body = api.get("/readyz").json()
    assert body["redis"] == "not_configured"


@pytest.mark.timeout(120)
def test_sqlite_database_outage_is_503_and_recovers(world, tmp_path, caplog):
    """On SQLite: the database file gone (a folder in its place) is 503 database_unavailable, logged once,
    and the service recovers when it is back."""
    from tests.api.world import dump_of
    from verify_api.app import create_app
    from verify_api.deps import AppDeps
    from verify_api.publish import publish_dump
    from verify_api.ratelimit import MemoryLimiter
    from verify_api.storage.db import open_public_database

    caplog.set_level(logging.INFO)
    db = tmp_path / "public.db"
    engine, sessions = open_public_database(url=f"sqlite:///{db}")
    main = world.batches["main"].batch_id
    publish_dump(sessions, world.registry, main, dump_of(world, main))
    deps = AppDeps(settings=world.settings, api=world.api_settings(card_cache_ttl=0), sessions=sessions,
                   engine=engine, registry=world.registry, limiter=MemoryLimiter(), background=False)
    eps = endpoints(world)
    try:
        with LiveServer(create_app(world.settings, deps=deps)) as live, \
                httpx.Client(base_url=live.url, timeout=30) as client:
            for method, path in eps:
                assert client.request(method, path).status_code < 500, path
            engine.dispose()
            db.rename(tmp_path / "public.db.away")
            db.mkdir()
            try:
                for method, path in eps * 3:
                    r = client.request(method, path)
                    assert r.status_code == 503, (path, r.status_code, r.text[:300])
                    assert r.json()["error"]["code"] == "database_unavailable"
                assert client.get("/readyz").json()["database"] == "unavailable"
            finally:
                engine.dispose()
                db.rmdir()
                (tmp_path / "public.db.away").rename(db)
            for method, path in eps:
                assert client.request(method, path).status_code < 500, path
        down, up = outage_lines(caplog)
        assert len(down) == 1 and len(up) == 1, (down, up)
    finally:
        engine.dispose()
