"""Talking to a JSON-RPC node over HTTP: one timeout, bounded retries, and a circuit breaker.

* **One timeout** (``CARDPROOF_RPC_TIMEOUT``, seconds): a request costs at most that long. A request that
  timed out is never retried (a frozen node would cost the timeout again), so a lookup against a frozen node
  costs the timeout once, then the breaker answers at once.
* **Bounded retries** (``CARDPROOF_RPC_RETRIES``): only failures that cost nothing and say nothing about the
  node's state are retried, within the same time budget: a refused or reset connection, HTTP 429/502/503/504.
  web3's own retry loop (5 attempts on every timeout, 17 s per lookup) is switched off.
* **A circuit breaker per node URL, shared by the process** (``CARDPROOF_RPC_BREAKER_FAILURES``,
  ``CARDPROOF_RPC_BREAKER_COOLDOWN``): it opens after N consecutive failures, or as soon as consecutive
  failures have cost the timeout (one time-out). While it is open, requests fail at once with
  :class:`~chain.errors.ChainUnreachable`, naming the URL and the last failure. After the cool-down one request
  probes the node (the others still fail fast); its success closes the circuit, its failure opens it again for
  twice as long. The first cool-down is 1 s (a restarted node is used again at once), doubling up to
  ``CARDPROOF_RPC_BREAKER_COOLDOWN``.

Only transport failures count: a JSON-RPC error (a revert, a nonce error) is an answer.

A wrong URL says so in the same one line: "connection refused", "unknown host" (DNS), "HTTP 404: not a JSON-RPC
endpoint", "not a JSON-RPC endpoint: it answered '<html>...'" (:data:`WRONG_URL_REASONS`; the console then names
CARDPROOF_RPC_URL), or a time-out.

Openings and recoveries are logged once each on ``cardproof.chain.rpc`` at INFO (a command's stderr carries only
its one-line error); services show :func:`breaker_states` in their readiness and metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from web3 import HTTPProvider
from web3.types import RPCEndpoint

from chain.errors import ChainUnreachable

log = logging.getLogger("cardproof.chain.rpc")

__all__ = ["NOT_JSON_RPC", "WRONG_URL_REASONS", "CircuitBreaker", "GuardedHTTPProvider", "RpcPolicy", "breaker_for",
           "breaker_states", "reset_breakers"]

#: HTTP statuses worth another attempt (rate limits, a proxy in front of a restarting node).
RETRY_STATUSES = frozenset({429, 502, 503, 504})

NOT_JSON_RPC = "not a JSON-RPC endpoint"
#: Diagnoses that point at a wrong URL (the console then names CARDPROOF_RPC_URL); a time-out or an HTTP 503 is a
#: node that is down or frozen, not a wrong URL.
WRONG_URL_REASONS = ("connection refused", "unknown host", NOT_JSON_RPC, "HTTP 401", "HTTP 403")


@dataclass(frozen=True)
class RpcPolicy:
    """How requests to one node behave (see the module docstring)."""

    timeout: float = 5.0
    retries: int = 2
    breaker_failures: int = 3
    breaker_cooldown: float = 5.0

    @classmethod
    def from_settings(cls, settings: Any, timeout: float | None = None) -> RpcPolicy:
        return cls(timeout=float(timeout if timeout is not None else settings.rpc_timeout),
                   retries=settings.rpc_retries, breaker_failures=settings.rpc_breaker_failures,
                   breaker_cooldown=settings.rpc_breaker_cooldown)


def _secs(value: float) -> str:
    return f"{value:g} s" if value < 10 else f"{value:.0f} s"


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures (or failures costing ``timeout``) -> half-open
    after ``cooldown`` (one probe) -> closed on success. Thread-safe; one per node URL and process."""

    def __init__(self, url: str, failures: int = 3, cooldown: float = 5.0, timeout: float = 5.0,
                 clock: Any = time.monotonic) -> None:
        self.url = url
        self.failures = max(1, failures)
        self.cooldown = cooldown
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._cost = 0.0
        self._opened_at: float | None = None
        self._wait = 0.0
        self._probing = False
        self._reason = ""
        #: How many times the circuit opened (for metrics and tests).
        self.openings = 0

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._probing or self._clock() - self._opened_at >= self._wait:
                return "half-open"
            return "open"

    @property
    def reason(self) -> str:
        return self._reason

    def before(self) -> None:
        """Raise ChainUnreachable when the circuit is open; let one probe through after the cool-down."""
        with self._lock:
            if self._opened_at is None:
                return
            waited = self._clock() - self._opened_at
            if waited >= self._wait and not self._probing:
                self._probing = True
                return
            left = max(self._wait - waited, 0.0)
        raise ChainUnreachable(f"the chain node at {self.url} does not answer ({self._reason}); "
                               f"not asked again for {_secs(round(left, 1))}")

    def success(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                log.info("the chain node at %s answers again", self.url)
            self._count, self._cost, self._opened_at, self._probing = 0, 0.0, None, False

    def failure(self, reason: str, cost: float) -> None:
        with self._lock:
            self._reason = reason
            self._count += 1
            self._cost += cost
            if self._opened_at is not None:  # a failed probe (or a request that started before it opened)
                if self._probing:
                    self._opened_at, self._probing = self._clock(), False
                    self._wait = min(self._wait * 2, self.cooldown)
                return
            if self._count >= self.failures or self._cost >= 0.9 * self.timeout:
                self._opened_at = self._clock()
                self._wait = min(1.0, self.cooldown)
                self.openings += 1
                log.info("the chain node at %s does not answer (%s): failing fast for %s", self.url, reason,
                         _secs(self._wait))

    def configure(self, policy: RpcPolicy) -> None:
        with self._lock:
            self.failures, self.cooldown, self.timeout = max(1, policy.breaker_failures), policy.breaker_cooldown, \
                policy.timeout


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(url: str, policy: RpcPolicy | None = None) -> CircuitBreaker:
    """The process's breaker for the node at ``url`` (created, or reconfigured, with ``policy``)."""
    key = url.rstrip("/")
    with _breakers_lock:
        breaker = _breakers.get(key)
        if breaker is None:
            policy = policy or RpcPolicy()
            breaker = _breakers[key] = CircuitBreaker(key, policy.breaker_failures, policy.breaker_cooldown,
                                                      policy.timeout)
        elif policy is not None:
            breaker.configure(policy)
        return breaker


def breaker_states() -> list[dict[str, Any]]:
    """Every node this process talks to: url, state (closed, open, half-open), openings, last failure."""
    with _breakers_lock:
        breakers = list(_breakers.values())
    return [{"url": b.url, "state": b.state, "openings": b.openings, "last_failure": b.reason or None}
            for b in breakers]


def reset_breakers() -> None:
    """Forget every breaker (tests)."""
    with _breakers_lock:
        _breakers.clear()


def describe(exc: BaseException, timeout: float) -> str:
    """A few words on a transport failure."""
    if isinstance(exc, requests.Timeout) and not isinstance(exc, requests.ConnectTimeout):
        return f"timed out after {_secs(timeout)}"
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection after {_secs(timeout)}"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return f"HTTP {status}: refused, a key missing from the URL?"
        if status == 501 or (400 <= status < 500 and status != 429):  # 501: a web server without POST
            return f"HTTP {status}: {NOT_JSON_RPC}"
        return f"HTTP {status}"
    text = str(exc)
    if "Connection refused" in text or isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if "Connection reset" in text or "RemoteDisconnected" in text or "Connection aborted" in text:
        return "connection reset"
    if "Name or service not known" in text or "nodename nor servname" in text or "resolve" in text.lower():
        return "unknown host"
    return type(exc).__name__


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, requests.Timeout):
        return False  # the node may be frozen: one timeout is the whole budget
    if isinstance(exc, requests.HTTPError):
        return exc.response is not None and exc.response.status_code in RETRY_STATUSES
    return isinstance(exc, requests.ConnectionError | ConnectionError)


class GuardedHTTPProvider(HTTPProvider):
    """web3's HTTPProvider with :class:`RpcPolicy`: one timeout, bounded retries, the URL's circuit breaker.

    Transport failures raise :class:`~chain.errors.ChainUnreachable` with one line naming the URL:
    "the chain node at URL does not answer (timed out after 5 s)".
    """

    def __init__(self, url: str, policy: RpcPolicy | None = None, **kwargs: Any) -> None:
        self.policy = policy or RpcPolicy()
        if "session" not in kwargs:
            # No proxy, netrc or CA-bundle lookups from the environment on every request (requests does them per
            # request when trust_env is on: measurable on a busy node).
            session = requests.Session()
            session.trust_env = False
            kwargs["session"] = session
        super().__init__(url, request_kwargs={"timeout": self.policy.timeout}, exception_retry_configuration=None,
                         **kwargs)
        self.breaker = breaker_for(str(self.endpoint_uri), self.policy)

    def _make_request(self, method: RPCEndpoint, request_data: bytes) -> bytes:
        self.breaker.before()
        start = time.monotonic()
        deadline = start + self.policy.timeout
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            kwargs = self.get_request_kwargs()
            kwargs["timeout"] = max(min(self.policy.timeout, left), 0.05)
            try:
                raw = self._request_session_manager.make_post_request(self.endpoint_uri, request_data, **kwargs)
            except (requests.RequestException, ConnectionError, TimeoutError) as exc:
                reason = describe(exc, self.policy.timeout)
                backoff = 0.05 * 2**attempt
                if _retryable(exc) and attempt < self.policy.retries and time.monotonic() + backoff < deadline:
                    attempt += 1
                    time.sleep(backoff)
                    continue
                self.breaker.failure(reason, time.monotonic() - start)
                raise ChainUnreachable(f"the chain node at {self.endpoint_uri} does not answer ({reason})") from None
            except BaseException as exc:  # anything else (interrupted, a bug): never leave a probe in flight
                self.breaker.failure(type(exc).__name__, time.monotonic() - start)
                raise
            self.breaker.success()
            return raw

    def decode_rpc_response(self, raw_response: bytes) -> Any:  # type: ignore[override]
        """web3's decoding, with one line naming the URL when the answer is not JSON-RPC (a web page, say)."""
        try:
            response = super().decode_rpc_response(raw_response)
        except ValueError:  # JSON decoding (FriendlyJsonSerde raises ValueError subclasses) or not UTF-8
            response = None
        if isinstance(response, list) or (isinstance(response, dict) and ("result" in response
                                                                            or "error" in response)):
            return response
        raise ChainUnreachable(f"the chain node at {self.endpoint_uri} does not answer ({NOT_JSON_RPC}: "
                               f"{_first_bytes(raw_response)})")


def _first_bytes(raw: bytes) -> str:
    """What a non-JSON-RPC answer starts with, in a few printable characters (an HTML page, "404 page not found")."""
    text = bytes(raw[:40]).decode("utf-8", "replace")
    shown = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return f"it answered {shown!r}" if shown else "it answered nothing"
