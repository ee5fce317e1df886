"""Rate limits (GCRA: a smooth token bucket allowing a burst of ``limit``), in memory or in Redis.

:func:`make_limiter` picks Redis when ``CARDPROOF_REDIS_URL`` is set, so every worker shares the same
counters; otherwise each process keeps its own in memory.

If Redis stops answering, the public service's lookups go on with per-worker limits in memory: its rate
limits protect capacity, they are not a security control (the supplier's service, whose nonces are, fails
closed instead: ``issuer.service.ratelimit``). The outage is logged once when it starts and once when it
ends, Redis is tried again every ``retry_interval`` seconds, and it is visible: ``/readyz`` says
``redis: unavailable`` (the service stays ``ready``: it still answers) and ``/metrics`` has
``cardproof_api_redis_available 0``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Protocol

from issuer.storage.rates import GCRA_LUA, MemoryLimiter, Rate

log = logging.getLogger("cardproof.api.ratelimit")

__all__ = ["Limiter", "MemoryLimiter", "RedisLimiter", "make_limiter"]


class Limiter(Protocol):
    backend: str

    def hit(self, key: str, rate: Rate) -> float:
        """Count one event; 0.0 if allowed, else the seconds to wait."""

    def once(self, key: str, ttl: float) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds."""

    def reset(self) -> None: ...

    def close(self) -> None: ...





class RedisLimiter:
    backend = "redis"

    def __init__(self, url: str, prefix: str = "cardproof:", timeout: float = 0.25,
                 retry_interval: float = 5.0) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           health_check_interval=30)
        self._prefix = prefix
        self._script = self._redis.register_script(GCRA_LUA)
        self._fallback = MemoryLimiter()
        self._retry_interval = retry_interval
        self._retry_at = 0.0
        #: monotonic time the outage started; None while Redis answers.
        self.down_since: float | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether Redis answers (pinged when nothing told us for ``retry_interval`` seconds)."""
        now = time.monotonic()
        if self.down_since is None and now - self._checked_at < self._retry_interval:
            return True
        if self.down_since is not None and now < self._retry_at:
            return False
        return self.ping()

    def _use_fallback(self) -> bool:
        return self.down_since is not None and time.monotonic() < self._retry_at

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + self._retry_interval
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        log.error("Redis unavailable (%s); rate limits per worker until it answers again (tried every %g s)",
                  type(exc).__name__, self._retry_interval)

    def _ok(self) -> None:
        self._checked_at = time.monotonic()
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is None:
                return
            took, self.down_since = time.monotonic() - self.down_since, None
        log.warning("Redis available again after %.1f s; rate limits shared again", took)

    def hit(self, key: str, rate: Rate) -> float:
        if rate.unlimited:
            return 0.0
        if self._use_fallback():
            return self._fallback.hit(key, rate)
        interval_ms = rate.period * 1000.0 / rate.limit
        try:
            wait_ms = self._script(keys=[f"{self._prefix}rl:{key}"],
                                   args=[f"{interval_ms:.3f}", f"{rate.period * 1000.0:.3f}"])
        except Exception as exc:  # noqa: BLE001 - redis.RedisError, OSError
            self._failed(exc)
            return self._fallback.hit(key, rate)
        self._ok()
        return float(wait_ms) / 1000.0

    def once(self, key: str, ttl: float) -> bool:
        """Per worker while Redis is down, like the rate limits. The public service keeps no single-use
        secret (signed requests are the supplier's service's, whose nonces fail closed)."""
        if self._use_fallback():
            return self._fallback.once(key, ttl)
        try:
            first = bool(self._redis.set(f"{self._prefix}nonce:{key}", b"1", nx=True,
                                         px=max(1, math.ceil(ttl * 1000))))
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return self._fallback.once(key, ttl)
        self._ok()
        return first

    def reset(self) -> None:
        self._fallback.reset()
        try:
            for k in self._redis.scan_iter(f"{self._prefix}*", count=1000):
                self._redis.delete(k)
        except Exception:  # noqa: BLE001
            pass

    def ping(self) -> bool:
        """Ask Redis now; records the outage's start or end."""
        try:
            self._redis.ping()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return False
        self._ok()
        return True

    def close(self) -> None:
        try:
            self._redis.close()
        except Exception:  # noqa: BLE001
            pass


def make_limiter(redis_url: str | None, prefix: str = "cardproof:") -> Limiter:
    if redis_url:
        return RedisLimiter(redis_url, prefix=prefix)
    return MemoryLimiter()
