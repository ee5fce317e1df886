"""Rate limits (GCRA: a smooth token bucket allowing a burst of ``limit``) and single-use nonces, kept in
memory or, when ``CARDPROOF_REDIS_URL`` is set, in Redis (shared by every worker of ``issuer serve``).

If Redis is configured but stops answering, the limiter fails closed: :meth:`RedisLimiter.hit` and
:meth:`RedisLimiter.once` raise :class:`~issuer.service.errors.RateLimiterUnavailable` (503
``rate_limiter_unavailable``, Retry-After), so no redemption is served on per-worker limits and no signed request
is accepted on a per-worker nonce memory (another worker would accept its replay). The outage is logged once when
it starts and once when it ends; for ``retry_interval`` seconds after a failure requests are refused at once,
then Redis is tried again (a frozen Redis costs a request at most ``timeout``). ``/readyz`` says
``redis: unavailable`` (and ``not_ready``) meanwhile.

Rates, the GCRA algorithm and the in-memory store are shared with the public service (``issuer.storage.rates``).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

from issuer.storage.rates import GCRA_LUA, MemoryLimiter, Rate, parse_rate

log = logging.getLogger("cardproof.issuer.service")

__all__ = ["Limiter", "MemoryLimiter", "Rate", "RedisLimiter", "make_limiter", "parse_rate"]

class Limiter(Protocol):
    backend: str

    def hit(self, key: str, rate: Rate) -> float:
        """Count one event; 0.0 if allowed, else the seconds to wait."""

    def once(self, key: str, ttl: float, signed_at: float | None = None) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds. With ``signed_at`` (unix seconds), also
        False when the store may have forgotten it: it started (or lost its data) in a later second."""

    def close(self) -> None: ...





#: Single use, aware of a nonce store that lost its data (Redis restarted without persistence, flushed, failed
#: over): KEYS[1] holds the store's epoch (the server time it started keeping nonces), written when missing.
#: A request signed before the epoch's second may have been accepted by the store that was lost: 0 (refused).
#: (Not caught: a replay signed in the very second of the reset, or by a client whose clock runs ahead.)
_ONCE = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = redis.call('TIME')[1]
  redis.call('SET', KEYS[1], epoch)
end
if ARGV[2] ~= '' and tonumber(ARGV[2]) < tonumber(epoch) then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', tonumber(ARGV[1])) then return 1 end
return 0
"""


class RedisLimiter:
    backend = "redis"

    def __init__(self, url: str, prefix: str, timeout: float = 0.25, retry_interval: float = 1.0) -> None:
        import redis

        from issuer.service.errors import Outage

        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           health_check_interval=30)
        self._prefix = prefix
        self._script = self._redis.register_script(GCRA_LUA)
        self._once = self._redis.register_script(_ONCE)
        self._retry_interval = retry_interval
        self._retry_at = 0.0
        self.outage = Outage("Redis", "redemption refused (503 rate_limiter_unavailable)", log)
        self._mark_epoch()

    def _mark_epoch(self) -> None:
        """Start the nonce store's epoch now if it has none (else the first signed request would set it)."""
        try:
            self._redis.set(f"{self._prefix}nonce-epoch", int(self._redis.time()[0]), nx=True)
        except Exception:  # noqa: BLE001 - down: the first nonce after recovery sets it
            log.debug("cannot mark the nonce store's epoch (Redis down)")

    @property
    def available(self) -> bool:
        return self.outage.available

    def _refuse_now(self) -> None:
        from issuer.service.errors import RateLimiterUnavailable

        if not self.outage.available:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                self.outage.failed(refused=True)
                raise RateLimiterUnavailable(wait)

    def _failed(self, exc: BaseException, refused: bool = True) -> Exception:
        from issuer.service.errors import RateLimiterUnavailable

        self._retry_at = time.monotonic() + self._retry_interval
        self.outage.failed(exc, refused=refused)
        return RateLimiterUnavailable(self._retry_interval)

    def hit(self, key: str, rate: Rate) -> float:
        if rate.unlimited:
            return 0.0
        self._refuse_now()
        try:
            wait_ms = self._script(keys=[f"{self._prefix}rl:{key}"],
                                   args=[f"{rate.period * 1000.0 / rate.limit:.3f}", f"{rate.period * 1000.0:.3f}"])
        except Exception as exc:  # noqa: BLE001 - redis.RedisError, OSError
            raise self._failed(exc) from None
        self.outage.ok()
        return float(wait_ms) / 1000.0

    def once(self, key: str, ttl: float, signed_at: float | None = None) -> bool:
        """True the first time ``key`` is seen; RateLimiterUnavailable when Redis cannot say (never True then).
        With ``signed_at``, False too when Redis started keeping nonces (or lost them) in a later second.
        A client refused with 503 signs again with a new nonce (its first may have been stored)."""
        self._refuse_now()
        try:
            first = bool(self._once(keys=[f"{self._prefix}nonce-epoch", f"{self._prefix}nonce:{key}"],
                                    args=[max(1, math.ceil(ttl * 1000)),
                                          "" if signed_at is None else str(int(signed_at))]))
        except Exception as exc:  # noqa: BLE001
            raise self._failed(exc) from None
        self.outage.ok()
        return first

    def ping(self) -> bool:
        """Ask Redis now (readiness); records the outage's start or end."""
        try:
            self._redis.ping()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc, refused=False)
            return False
        self.outage.ok()
        self._mark_epoch()
        return True

    def close(self) -> None:
        try:
            self._redis.close()
        except Exception:  # noqa: BLE001
            pass


def make_limiter(redis_url: str | None, prefix: str = "cardproof-issuer:") -> Limiter:
    return RedisLimiter(redis_url, prefix) if redis_url else MemoryLimiter()
