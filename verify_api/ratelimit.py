"""Rate limits (GCRA: a smooth token bucket allowing a burst of ``limit``), in memory or in Redis.

:func:`make_limiter` picks Redis when ``CARDPROOF_REDIS_URL`` is set, so every worker shares the same
counters; otherwise each process keeps its own in memory. If Redis stops answering, the Redis limiter
falls back to memory (and says so in the log) rather than failing requests or letting everything
through. The same backends keep the single-use nonces of signed requests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from verify_api.config import Rate

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


class MemoryLimiter:
    backend = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 500_000) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self._next_sweep = 0.0

    def hit(self, key: str, rate: Rate) -> float:
        if rate.unlimited:
            return 0.0
        interval = rate.period / rate.limit
        now = self._clock()
        with self._lock:
            if now >= self._next_sweep or len(self._tat) > self._max_keys:
                self._sweep(now)
            tat = max(self._tat.get(key, now), now)
            new = tat + interval
            if new - now > rate.period + 1e-9:
                return new - now - rate.period
            self._tat[key] = new
            return 0.0

    def _sweep(self, now: float) -> None:
        self._tat = {k: v for k, v in self._tat.items() if v > now}
        self._nonces = {k: v for k, v in self._nonces.items() if v > now}
        self._next_sweep = now + 60.0

    def once(self, key: str, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            until = self._nonces.get(key)
            if until is not None and until > now:
                return False
            self._nonces[key] = now + ttl
            return True

    def reset(self) -> None:
        with self._lock:
            self._tat.clear()
            self._nonces.clear()

    def close(self) -> None:
        pass


_GCRA = """
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new = tat + interval
if new - now > period then return new - now - period end
redis.call('SET', KEYS[1], new, 'PX', math.max(1, math.ceil(new - now)))
return 0
"""


class RedisLimiter:
    backend = "redis"

    def __init__(self, url: str, prefix: str = "cardproof:", timeout: float = 0.25) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           health_check_interval=30)
        self._prefix = prefix
        self._script = self._redis.register_script(_GCRA)
        self._fallback = MemoryLimiter()
        self._down_until = 0.0

    def _use_fallback(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        if not self._use_fallback():
            log.warning("Redis rate limiter unavailable (%s); using per-process limits for 5 s",
                        type(exc).__name__)
        self._down_until = time.monotonic() + 5.0

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
        return float(wait_ms) / 1000.0

    def once(self, key: str, ttl: float) -> bool:
        if self._use_fallback():
            return self._fallback.once(key, ttl)
        try:
            return bool(self._redis.set(f"{self._prefix}nonce:{key}", b"1", nx=True, px=max(1, math.ceil(ttl * 1000))))
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return self._fallback.once(key, ttl)

    def reset(self) -> None:
        self._fallback.reset()
        try:
            for k in self._redis.scan_iter(f"{self._prefix}*", count=1000):
                self._redis.delete(k)
        except Exception:  # noqa: BLE001
            pass

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except Exception:  # noqa: BLE001
            return False

    def close(self) -> None:
        try:
            self._redis.close()
        except Exception:  # noqa: BLE001
            pass


def make_limiter(redis_url: str | None, prefix: str = "cardproof:") -> Limiter:
    if redis_url:
        return RedisLimiter(redis_url, prefix=prefix)
    return MemoryLimiter()
