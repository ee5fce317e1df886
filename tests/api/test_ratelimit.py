"""Rate limits: GCRA in memory and in Redis (real, 127.0.0.1:6379), per client and per serial, in the API."""

from __future__ import annotations

import os
import secrets
import warnings

import pytest

from verify_api.config import Rate, parse_rate
from verify_api.ratelimit import MemoryLimiter, RedisLimiter, make_limiter

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

REDIS_URL = os.environ.get("CARDPROOF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_or_skip() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_parse_rate():
    assert parse_rate("30/minute") == Rate(30, 60.0)
    assert parse_rate("5/10s") == Rate(5, 10.0)
    assert parse_rate("2/hours") == Rate(2, 3600.0)
    assert parse_rate("off").unlimited and parse_rate("0").unlimited
    with pytest.raises(ValueError):
        parse_rate("lots")


def test_memory_gcra_burst_then_steady():
    clock = FakeClock()
    lim = MemoryLimiter(clock)
    rate = Rate(3, 60.0)
    assert [lim.hit("k", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = lim.hit("k", rate)
    assert 19.9 < wait <= 20.0
    assert lim.hit("other", rate) == 0.0  # keys are independent
    clock.t += 20.0
    assert lim.hit("k", rate) == 0.0 and lim.hit("k", rate) > 0


def test_memory_nonces():
    clock = FakeClock()
    lim = MemoryLimiter(clock)
    assert lim.once("n1", 10) and not lim.once("n1", 10)
    clock.t += 11
    assert lim.once("n1", 10)


def test_redis_limiter_is_shared_between_workers():
    url = redis_or_skip()
    prefix = f"cardproof-test-{secrets.token_hex(4)}:"
    a, b = RedisLimiter(url, prefix=prefix), RedisLimiter(url, prefix=prefix)
    try:
        rate = Rate(4, 60.0)
        results = [lim.hit("client", rate) for lim in (a, b, a, b, a)]
        assert results[:4] == [0.0] * 4 and 14.0 < results[4] <= 15.0
        assert a.once("nonce-1", 30) and not b.once("nonce-1", 30)
    finally:
        a.reset()
        a.close()
        b.close()


def test_redis_down_falls_back_to_memory():
    lim = RedisLimiter("redis://127.0.0.1:1/0", timeout=0.05)
    rate = Rate(2, 60.0)
    assert [lim.hit("k", rate) for _ in range(2)] == [0.0, 0.0]
    assert lim.hit("k", rate) > 0  # still limited, per process
    assert lim.once("n", 10) and not lim.once("n", 10)


def test_make_limiter_picks_redis_when_configured():
    assert make_limiter(None).backend == "memory"
    assert make_limiter("redis://127.0.0.1:6379/0").backend == "redis"


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_api_lookups_are_rate_limited_per_client(world, backend):
    limiter = MemoryLimiter() if backend == "memory" else RedisLimiter(redis_or_skip(),
                                                                         prefix=f"t{secrets.token_hex(4)}:")
    app = world.app(api=world.api_settings(lookup_rate="3/minute", trust_proxy=True), limiter=limiter)
    serial = world.batches["main"].cards[0][0]
    with TestClient(app) as client:
        codes = [client.get(f"/v1/cards/{serial}", headers={"X-Forwarded-For": "198.51.100.7"}).status_code
                 for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = client.get(f"/v1/cards/{serial}", headers={"X-Forwarded-For": "198.51.100.7"})
        assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
        # Malformed serials count too (no free probing), another client is not affected.
        assert client.get("/v1/cards/zzz", headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 429
        assert client.get(f"/v1/cards/{serial}", headers={"X-Forwarded-For": "198.51.100.8"}).status_code == 200
        page = client.get(f"/c/{serial}", headers={"X-Forwarded-For": "198.51.100.7"})
        assert page.status_code == 429 and "text/html" in page.headers["content-type"]
    limiter.reset()


def test_dump_uploads_are_limited_per_client(world):
    """Publishing costs a tree rebuild and chain reads: its own, tighter limit, per client, apart from lookups."""
    from issuer.export import batch_dump

    app = world.app(api=world.api_settings(publish_rate="2/hour", trust_proxy=True))
    main = world.batches["main"]
    dump = batch_dump(world.sessions, main.batch_id)
    with TestClient(app) as client:
        codes = [client.put(f"/v1/batches/{main.batch_id}/dump", json=dump,
                            headers={"X-Forwarded-For": "203.0.113.9"}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = client.put(f"/v1/batches/{main.batch_id}/dump", json=dump, headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
        # lookups are not affected, nor is another client
        assert client.get(f"/v1/cards/{main.cards[0][0]}", headers={"X-Forwarded-For": "203.0.113.9"}
                          ).status_code == 200
        assert client.put(f"/v1/batches/{main.batch_id}/dump", json=dump,
                          headers={"X-Forwarded-For": "203.0.113.10"}).status_code == 200
