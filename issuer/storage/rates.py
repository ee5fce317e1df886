"""Rate limits for the HTTP services of both sides: rates, the GCRA algorithm, and its in-memory store.

GCRA is a smooth token bucket that allows a burst of ``limit``: each event pushes a key's "theoretical arrival
time" (TAT) ``period / limit`` seconds further; an event is refused while the TAT runs more than ``period``
ahead of now. :class:`MemoryLimiter` keeps TATs (and single-use nonces) in one process; ``GCRA_LUA`` is the
same step as a Redis script, so that every worker shares them. Each service decides what an unreachable Redis
means: the public service falls back to per-worker limits, the supplier's fails closed. No table, no key.

Rates are written ``"N/period"`` (``second``, ``minute``, ``hour``, ``day``, optionally ``"N/5minutes"``), or
``"off"``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["GCRA_LUA", "MemoryLimiter", "Rate", "parse_rate"]

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

    def __str__(self) -> str:
        return "off" if self.unlimited else f"{self.limit}/{self.period:g}s"


def parse_rate(text: str | Rate) -> Rate:
    if isinstance(text, Rate):
        return text
    value = str(text).strip().lower()
    if value in ("", "0", "off", "none", "unlimited"):
        return Rate(0, 1.0)
    m = _RATE_RE.match(value)
    if not m or m.group(3) not in _PERIODS:
        raise ValueError(f"a rate is written like '30/minute', not {text!r}")
    return Rate(int(m.group(1)), float(_PERIODS[m.group(3)] * max(int(m.group(2) or 1), 1)))


#: One GCRA step in Redis: KEYS[1] the key's TAT (ms, Redis's clock); ARGV interval and period in ms.
#: Returns 0 if allowed, else the milliseconds to wait.
GCRA_LUA = """
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


class MemoryLimiter:
    """GCRA limits and single-use nonces in this process (thread-safe)."""

    backend = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 500_000) -> None:
        self._clock = clock
        #: Nonces seen before this process started are unknown: a request signed earlier is refused.
        self.epoch = int(time.time())
        self._tat: dict[str, float] = {}
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        if now >= self._next_sweep or len(self._tat) > self._max_keys:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
            self._nonces = {k: v for k, v in self._nonces.items() if v > now}
            self._next_sweep = now + 60.0

    def hit(self, key: str, rate: Rate) -> float:
        """Count one event; 0.0 if allowed, else the seconds to wait."""
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

    def once(self, key: str, ttl: float, signed_at: float | None = None) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds; with ``signed_at`` (unix seconds), False
        too for a request signed before this store started (it cannot know what was accepted before)."""
        if signed_at is not None and signed_at < self.epoch:
            return False
        now = self._clock()
        with self._lock:
            self._sweep(now)
            if self._nonces.get(key, -math.inf) > now:
                return False
            self._nonces[key] = now + ttl
            return True

    def reset(self) -> None:
        with self._lock:
            self._tat.clear()
            self._nonces.clear()

    def close(self) -> None:
        pass
