"""Outages of the supplier's service (``cardproof issuer serve``) with real processes of the test's own: its
database on a PostgreSQL cluster on a free port, and its rate limits and nonces on a redis-server on a free
port (``tests/api/test_outages.py`` starts them). The machine's shared services are never touched.

* Database down: 503 ``database_unavailable`` with a Retry-After, one log line per outage (start and end),
  ``/readyz`` says ``database: unavailable`` quickly, and redemption works again once it is back, no restart.
* Redis down: redemption fails closed, 503 ``rate_limiter_unavailable``: a replayed signed request is refused by
  every worker (before, the other worker accepted it from its own memory); ``/readyz`` says
  ``redis: unavailable``. Redis back (empty: it lost its nonces), a replay of a request accepted before the
  outage is still refused, and new requests are served.
"""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from issuer.service.app import create_app
from issuer.service.auth import sign_request
from issuer.service.ratelimit import make_limiter
from issuer.storage.db import make_engine, session_factory, upgrade
from tests.api.test_outages import PgCluster, RedisServer, outage_lines
from tests.issuer_service.conftest import POOL, LiveServer

# Outages have nothing to do with the chain: the in-process chain is enough.
eth_tester_only = pytest.mark.parametrize("chain_env", ["eth-tester"], indirect=True)


@pytest.fixture(scope="module")
def pg():
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def pg_url(pg):
    url = pg.create_database("issuer_outage")
    upgrade(url)
    return url


@pytest.fixture
def engine(pg_url):
    """The supplier's database on the test's own PostgreSQL (overrides the conftest's SQLite/PostgreSQL one)."""
    eng = make_engine(pg_url, **POOL)
    try:
        yield eng
    finally:
        from tests import dbutil

        try:
            dbutil.delete_all_rows(eng)
        finally:
            eng.dispose()


@pytest.fixture
def redis_server():
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def redeem(client: httpx.Client, serial: str, code: str, headers: dict[str, str], body: bytes | None = None):
    body = body if body is not None else json.dumps({"code": code}).encode()
    return client.post(f"/v1/cards/{serial}/redeem", content=body,
                       headers={**headers, "Content-Type": "application/json"})


def signed(account, serial: str, code: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"code": code}).encode()
    return body, sign_request(account, "POST", f"/v1/cards/{serial}/redeem", body)


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.json()["error"]["code"] == code, r.text


@eth_tester_only
@pytest.mark.timeout(240)
def test_database_outage_is_503_logged_once_and_recovers(world, pg, caplog):
    caplog.set_level(logging.INFO)
    key = world.api_key()
    bearer = {"Authorization": f"Bearer {key}"}
    with LiveServer(world.app()) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        serial, code = world.card()
        assert redeem(client, serial, code, bearer).status_code == 200
        assert client.get("/readyz").json()["database"] == "ok"

        pg.stop()
        try:
            for _ in range(10):
                serial, code = world.card()
                r = redeem(client, serial, code, bearer)
                assert_error(r, 503, "database_unavailable")
                assert int(r.headers["retry-after"]) >= 1
            t0 = time.monotonic()
            r = client.get("/readyz")
            assert time.monotonic() - t0 < 3
            assert r.status_code == 503 and r.json()["database"] == "unavailable", r.text
            down, up = outage_lines(caplog)
            assert len(down) == 1 and not up, down
            assert not [rec for rec in caplog.records if rec.exc_info and rec.levelno >= logging.ERROR], \
                "a traceback was logged"
        finally:
            pg.start()

        serial, code = world.card()
        r = redeem(client, serial, code, bearer)
        assert r.status_code == 200, r.text
        assert client.get("/readyz").json()["database"] == "ok"
        down, up = outage_lines(caplog)
        assert len(down) == 1 and len(up) == 1, (down, up)


@eth_tester_only
@pytest.mark.timeout(240)
def test_redis_outage_fails_closed_and_a_replay_is_never_accepted(world, redis_server, caplog):
    caplog.set_level(logging.INFO)
    issuer = world.chain.accounts["issuer"]
    key = world.api_key()
    bearer = {"Authorization": f"Bearer {key}"}

    def worker():
        deps = world.deps()
        deps.limiter = make_limiter(redis_server.url)  # each worker its own client, one shared Redis
        return create_app(world.settings, deps=deps)

    with LiveServer(worker()) as w1, LiveServer(worker()) as w2, \
            httpx.Client(base_url=w1.url, timeout=30) as c1, httpx.Client(base_url=w2.url, timeout=30) as c2:
        assert c1.get("/readyz").json()["redis"] == "ok"
        # Redis up: a signed request is accepted once; its replay to the other worker is refused.
        serial_a, code_a = world.card()
        body_a, headers_a = signed(issuer, serial_a, code_a)
        assert redeem(c1, serial_a, code_a, headers_a, body_a).status_code == 200
        assert_error(redeem(c2, serial_a, code_a, headers_a, body_a), 401, "unauthorized")

        redis_server.kill()
        serial_b, code_b = world.card()
        body_b, headers_b = signed(issuer, serial_b, code_b)
        for client in (c1, c2, c1, c2):
            r = redeem(client, serial_b, code_b, headers_b, body_b)
            assert_error(r, 503, "rate_limiter_unavailable")
            assert int(r.headers["retry-after"]) >= 1
        # An API key's redemption is refused too: its rate limits cannot be counted.
        serial_c, code_c = world.card()
        assert_error(redeem(c1, serial_c, code_c, bearer), 503, "rate_limiter_unavailable")
        assert_error(redeem(c2, serial_a, code_a, headers_a, body_a), 503, "rate_limiter_unavailable")
        t0 = time.monotonic()
        r = c1.get("/readyz")
        assert time.monotonic() - t0 < 3
        assert r.status_code == 503 and r.json()["redis"] == "unavailable" and r.json()["status"] == "not_ready"
        down, up = outage_lines(caplog, "Redis")
        assert len(down) == 2 and not up, down  # one line per worker, not per request
        with world.sessions() as s:
            from issuer.storage import repository as repo

            assert repo.get_card_by_serial(s, serial_b).redeemed_by is None
            assert repo.get_card_by_serial(s, serial_c).redeemed_by is None

        # Redis back, empty: what it knew of nonce A is lost, and A's replay is still refused.
        time.sleep(1.1)  # A was signed in an earlier second than the new store's start
        redis_server.start()
        deadline = time.monotonic() + 10
        while c1.get("/readyz").json()["redis"] != "ok" or c2.get("/readyz").json()["redis"] != "ok":
            assert time.monotonic() < deadline, "Redis not seen again"
            time.sleep(0.2)
        for client in (c1, c2):
            assert_error(redeem(client, serial_a, code_a, headers_a, body_a), 401, "unauthorized")
        serial_d, code_d = world.card()
        body_d, headers_d = signed(issuer, serial_d, code_d)
        assert redeem(c2, serial_d, code_d, headers_d, body_d).status_code == 200
        assert_error(redeem(c1, serial_d, code_d, headers_d, body_d), 401, "unauthorized")
        assert redeem(c1, serial_c, code_c, bearer).status_code == 200
        down, up = outage_lines(caplog, "Redis")
        assert len(down) == 2 and len(up) == 2, (down, up)


def test_sqlite_database_unusable_is_503_not_500(tmp_path, caplog):
    """On SQLite too: a database file that cannot be opened is 503 database_unavailable, logged once."""
    from starlette.testclient import TestClient

    from chain.settings import get_settings
    from issuer.secrets_store import MasterKey
    from issuer.service.app import ServiceDeps
    from issuer.service.config import ServiceSettings
    from issuer.service.ratelimit import MemoryLimiter

    caplog.set_level(logging.INFO)
    engine = make_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'cardproof.db'}")
    deps = ServiceDeps(settings=get_settings(home=tmp_path, redis_url=None), service=ServiceSettings(),
                       sessions=session_factory(engine), master_key=MasterKey.generate(), registry=lambda: None,
                       limiter=MemoryLimiter())
    with TestClient(create_app(deps=deps), raise_server_exceptions=False) as c:
        for _ in range(5):
            r = c.post("/v1/cards/0123-4567-89AB-CDEF-G/redeem", json={"code": "x"},
                       headers={"Authorization": "Bearer cpk_0123456789abcdef_" + "a" * 43})
            assert_error(r, 503, "database_unavailable")
        assert c.get("/readyz").json()["database"] == "unavailable"
    down, _up = outage_lines(caplog)
    assert len(down) == 1, down
    engine.dispose()
