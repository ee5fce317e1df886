"""Rate limits (GCRA: a smooth token bucket allowing a burst of ``limit``) and single-use nonces, kept in
memory or, when ``CARDPROOF_REDIS_URL`` is set, in Redis (shared by every worker of ``issuer serve``).

If Redis stops answering, the Redis limiter uses per-process memory for 5 s (and says so in the log)
rather than failing requests. Rates are written ``"N/period"`` (``second``, ``minute``, ``hour``, ``day``),
or ``"off"``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("cardproof.issuer.service")

__all__ = ["Limiter", "MemoryLimiter", "Rate", "RedisLimiter", "make_limiter", "parse_rate"]

_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
            "d": 86400, "day": 86400}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True)
class Rate:
    """At most ``limit`` events per ``period`` seconds (``limit`` 0: unlimited)."""

    limit: int
    period: float

    @property
    def unlimited(self) -> bool:
        return self.limit <= 0


def parse_rate(text: str) -> Rate:
    value = str(text).strip().lower()
    if value in ("", "0", "off", "none", "unlimited"):
        return Rate(0, 1.0)
    m = _RATE_RE.match(value)
    if not m or m.group(3) not in _PERIODS:
        raise ValueError(f"a rate is written like '30/minute', not {text!r}")
    return Rate(int(m.group(1)), float(_PERIODS[m.group(3)] * max(int(m.group(2) or 1), 1)))


class Limiter(Protocol):
    backend: str

    def hit(self, key: str, rate: Rate) -> float:
        """Count one event; 0.0 if allowed, else the seconds to wait."""

    def once(self, key: str, ttl: float) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds."""

    def close(self) -> None: ...


class MemoryLimiter:
    backend = "memory"

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        if now >= self._next_sweep:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
            self._nonces = {k: v for k, v in self._nonces.items() if v > now}
            self._next_sweep = now + 60.0

    def hit(self, key: str, rate: Rate) -> float:
        if rate.unlimited:
            return 0.0
        now = self._clock()
        with self._lock:
            self._sweep(now)
            new = max(self._tat.get(key, now), now) + rate.period / rate.limit
            if new - now > rate.period + 1e-9:
                return new - now - rate.period
            self._tat[key] = new
            return 0.0

    def once(self, key: str, ttl: float) -> bool:
        now = self._clock()
        with self._lock:
            self._sweep(now)
            if self._nonces.get(key, -math.inf) > now:
                return False
            self._nonces[key] = now + ttl
            return True

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

    def __init__(self, url: str, prefix: str, timeout: float = 0.25) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           health_check_interval=30)
        self._prefix = prefix
        self._script = self._redis.register_script(_GCRA)
        self._fallback = MemoryLimiter()
        self._down_until = 0.0

    def _failed(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("Redis unavailable (%s); rate limits and nonces per process for 5 s", type(exc).__name__)
        self._down_until = time.monotonic() + 5.0

    def hit(self, key: str, rate: Rate) -> float:
        if rate.unlimited:
            return 0.0
        if time.monotonic() < self._down_until:
            return self._fallback.hit(key, rate)
        try:
            wait_ms = self._script(keys=[f"{self._prefix}rl:{key}"],
                                   args=[f"{rate.period * 1000.0 / rate.limit:.3f}", f"{rate.period * 1000.0:.3f}"])
        except Exception as exc:  # noqa: BLE001 - redis.RedisError, OSError
            self._failed(exc)
            return self._fallback.hit(key, rate)
        return float(wait_ms) / 1000.0

    def once(self, key: str, ttl: float) -> bool:
        if time.monotonic() < self._down_until:
            return self._fallback.once(key, ttl)
        try:
            return bool(self._redis.set(f"{self._prefix}nonce:{key}", b"1", nx=True, px=max(1, math.ceil(ttl * 1000))))
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return self._fallback.once(key, ttl)

    def close(self) -> None:
        try:
            self._redis.close()
        except Exception:  # noqa: BLE001
            pass


def make_limiter(redis_url: str | None, prefix: str = "cardproof-issuer:") -> Limiter:
    return RedisLimiter(redis_url, prefix) if redis_url else MemoryLimiter()
