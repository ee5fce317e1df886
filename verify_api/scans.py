"""Scan recording and the per-card fraud signal.

A scan is recorded without personal data beyond what is needed: the first 8 bytes of an HMAC of the
client's IP under a key that changes every day (so a client can be counted within a day, not
followed across days, and the IP cannot be recovered), the user-agent *family* ("Chrome", "curl"),
and a country only when a trusted proxy supplies one (otherwise unknown). Never the code.

Requests only append to an in-memory queue; a background thread writes the queue in batches (one
transaction per flush): scan rows plus an upsert of ``api_card_stats``. So the hot path makes no
database write. Counts shown to clients are the stored ones plus what this process has not flushed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from verify_api.metrics import SCANS_DROPPED
from verify_api.models import CardStats, Scan

log = logging.getLogger("cardproof.api.scans")

__all__ = ["ScanRecorder", "ua_family", "fraud_signal"]

_UA_RULES = [
    ("bot", re.compile(r"bot\b|crawl|spider|slurp|bingpreview", re.I)),
    ("Edge", re.compile(r"Edg(e|A|iOS)?/")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/")),
    ("Opera", re.compile(r"OPR/|Opera")),
    ("WeChat", re.compile(r"MicroMessenger/")),
    ("Chrome", re.compile(r"Chrome/|CriOS/|Chromium/")),
    ("Firefox", re.compile(r"Firefox/|FxiOS/")),
    ("Safari", re.compile(r"Safari/|AppleWebKit/")),
    ("curl", re.compile(r"^curl/")),
    ("wrk", re.compile(r"^wrk")),
    ("python", re.compile(r"python|httpx|aiohttp|requests", re.I)),
    ("cardproof", re.compile(r"^cardproof", re.I)),
    ("Go", re.compile(r"^Go-http-client")),
]


_UA_MEMO: dict[str, str] = {}


def ua_family(user_agent: str | None) -> str:
    if not user_agent:
        return "none"
    found = _UA_MEMO.get(user_agent)
    if found is not None:
        return found
    ua = user_agent[:512]
    found = next((name for name, rx in _UA_RULES if rx.search(ua)), "other")
    if len(_UA_MEMO) > 10_000:
        _UA_MEMO.clear()
    _UA_MEMO[user_agent] = found
    return found


def _day_key(secret: bytes, day: dt.date) -> bytes:
    return hmac.new(secret, b"cardproof/scan-client/v1/" + day.isoformat().encode(), hashlib.sha256).digest()


class _ClientHasher:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._day: dt.date | None = None
        self._key = b""

    def __call__(self, ip: str, today: dt.date | None = None) -> str:
        day = today or dt.datetime.now(dt.UTC).date()
        if day != self._day:
            self._key, self._day = _day_key(self._secret, day), day
            self._memo: dict[str, str] = {}
        out = self._memo.get(ip)
        if out is None:
            out = hmac.new(self._key, ip.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:16]
            if len(self._memo) > 100_000:
                self._memo.clear()
            self._memo[ip] = out
        return out


def fraud_signal(stats: dict[str, Any]) -> str:
    """none | elevated | high, from the counts: failed code checks weigh most."""
    failed = stats.get("failed_checks", 0)
    if failed >= 5 or stats.get("checks", 0) >= 20:
        return "high"
    if failed >= 1 or stats.get("checks", 0) >= 3 or stats.get("scans", 0) >= 25:
        return "elevated"
    return "none"


@dataclass
class _Pending:
    scans: int = 0
    checks: int = 0
    failed: int = 0
    first_scan: dt.datetime | None = None
    first_check: dt.datetime | None = None
    last: dt.datetime | None = None

    def add(self, kind: str, ok: bool | None, at: dt.datetime) -> None:
        if kind in ("lookup", "page"):
            self.scans += 1
            self.first_scan = self.first_scan or at
        elif kind == "check":
            self.checks += 1
            self.failed += 0 if ok else 1
            self.first_check = self.first_check or at
        self.last = at


@dataclass
class _StatsEntry:
    scans: int
    checks: int
    failed: int
    first_scan: dt.datetime | None
    first_check: dt.datetime | None
    read_at: float = field(default=0.0)


def _min(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _sqlite_ts(value: dt.datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DateTime stores (naive UTC), so the ORM reads these rows back."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


_SQLITE_SCAN = ("INSERT INTO api_scans (at, serial, kind, verdict, ok, client, ua_family, country) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_SQLITE_STATS = (
    "INSERT INTO api_card_stats (serial, scans, checks, failed_checks, first_scan_at, first_check_at, last_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO UPDATE SET "
    "scans = api_card_stats.scans + excluded.scans, checks = api_card_stats.checks + excluded.checks, "
    "failed_checks = api_card_stats.failed_checks + excluded.failed_checks, "
    "first_scan_at = COALESCE(api_card_stats.first_scan_at, excluded.first_scan_at), "
    "first_check_at = COALESCE(api_card_stats.first_check_at, excluded.first_check_at), "
    "last_at = excluded.last_at")


def _write_sqlite(session: Session, rows: list[tuple], increments: dict[str, _Pending]) -> None:
    """The SQLite fast path: the driver's executemany on tuples (far less work under the GIL than the ORM's
    parameter processing, so the event loop is held up less by a flush)."""
    cur = session.connection().connection.dbapi_connection.cursor()
    try:
        cur.executemany(_SQLITE_SCAN, [
            (_sqlite_ts(at), serial, kind, verdict, None if ok is None else int(ok), client, ua, country)
            for at, serial, kind, verdict, ok, client, ua, country in rows])
        cur.executemany(_SQLITE_STATS, [
            (serial, inc.scans, inc.checks, inc.failed, _sqlite_ts(inc.first_scan), _sqlite_ts(inc.first_check),
             _sqlite_ts(inc.last)) for serial, inc in sorted(increments.items())])
    finally:
        cur.close()


_PG_STATS = (
    "INSERT INTO api_card_stats (serial, scans, checks, failed_checks, first_scan_at, first_check_at, last_at) "
    "SELECT * FROM unnest(%s::varchar[], %s::bigint[], %s::bigint[], %s::bigint[], %s::timestamptz[], "
    "%s::timestamptz[], %s::timestamptz[]) "
    "ON CONFLICT (serial) DO UPDATE SET "
    "scans = api_card_stats.scans + excluded.scans, checks = api_card_stats.checks + excluded.checks, "
    "failed_checks = api_card_stats.failed_checks + excluded.failed_checks, "
    "first_scan_at = COALESCE(api_card_stats.first_scan_at, excluded.first_scan_at), "
    "first_check_at = COALESCE(api_card_stats.first_check_at, excluded.first_check_at), "
    "last_at = excluded.last_at")


def _write_postgres(session: Session, rows: list[tuple], increments: dict[str, _Pending]) -> None:
    """The PostgreSQL fast path: the scans by binary COPY, the counts in one statement over arrays (a few
    round trips whatever the number of rows, and little work for the server: it shares the 2 cores)."""
    dbapi = session.connection().connection.dbapi_connection
    with dbapi.cursor() as cur:
        with cur.copy("COPY api_scans (at, serial, kind, verdict, ok, client, ua_family, country) "
                      "FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["timestamptz", "varchar", "varchar", "varchar", "bool", "varchar", "varchar", "varchar"])
            for row in rows:
                copy.write_row(row)
        items = sorted(increments.items())
        cur.execute(_PG_STATS, (
            [k for k, _ in items], [i.scans for _, i in items], [i.checks for _, i in items],
            [i.failed for _, i in items], [i.first_scan for _, i in items], [i.first_check for _, i in items],
            [i.last for _, i in items]))


class ScanRecorder:
    """Queue of scans written by a background thread; per-serial counts for the fraud signal."""

    def __init__(self, sessions: sessionmaker[Session] | None, secret: bytes, *, enabled: bool = True,
                 flush_interval: float = 1.0, queue_max: int = 100_000, retention_days: int = 90,
                 stats_ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self.enabled = enabled and sessions is not None
        self._hasher = _ClientHasher(secret)
        self._queue: deque[tuple] = deque()
        self._queue_max = queue_max
        self._pending: dict[str, _Pending] = {}
        self._stats: dict[str, _StatsEntry] = {}
        self._stale: set[str] = set()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flush_interval = flush_interval
        self._retention = dt.timedelta(days=retention_days)
        self._stats_ttl = stats_ttl
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_prune = 0.0
        self.dropped = 0
        self.written = 0

    # ----------------------------------------------------------------- recording

    def client(self, ip: str) -> str:
        return self._hasher(ip)

    def record(self, kind: str, serial: str | None, *, client: str, ua: str, verdict: str | None = None,
               ok: bool | None = None, country: str | None = None) -> None:
        if not self.enabled:
            return
        at = dt.datetime.now(dt.UTC)
        if len(self._queue) >= self._queue_max:
            self.dropped += 1
            SCANS_DROPPED.inc()
            return
        self._queue.append((at, serial, kind, verdict, ok, client, ua[:24], country))
        if serial is not None and kind in ("lookup", "page", "check"):
            with self._lock:
                p = self._pending.get(serial)
                if p is None:
                    p = self._pending[serial] = _Pending()
                p.add(kind, ok, at)

    # ----------------------------------------------------------------- stats

    def peek_stats(self, serial: str) -> dict[str, Any] | None:
        """Counts if cached (no I/O), else None. An entry older than the TTL is still answered with (it
        already holds this process's own counts) and is re-read by the writer thread, which is where
        other workers' counts come in."""
        entry = self._stats.get(serial)
        if entry is None:
            return None
        if self._clock() - entry.read_at > self._stats_ttl and len(self._stale) < 50_000:
            self._stale.add(serial)
        return self._combine(serial, entry)

    def _refresh_stale(self, limit: int = 500) -> None:
        """Re-read the counts of up to ``limit`` serials whose cached counts are older than the TTL (other
        workers' scans come in here); small chunks keep each pause of the event loop short."""
        if not self._stale or self._sessions is None:
            return
        with self._lock:
            keys = [self._stale.pop() for _ in range(min(limit, len(self._stale)))]
        t = CardStats.__table__
        try:
            with self._sessions() as session:
                rows = {r[0]: r for r in session.execute(
                    select(t.c.serial, t.c.scans, t.c.checks, t.c.failed_checks, t.c.first_scan_at,
                           t.c.first_check_at).where(t.c.serial.in_(keys)))}
        except Exception as exc:  # noqa: BLE001
            log.warning("could not refresh scan counts: %s", type(exc).__name__)
            return
        now = self._clock()
        with self._lock:
            for serial in keys:
                r = rows.get(serial)
                self._stats[serial] = (_StatsEntry(0, 0, 0, None, None, now) if r is None else
                                       _StatsEntry(int(r[1]), int(r[2]), int(r[3]), r[4], r[5], now))

    def stats(self, session: Session | None, serial: str) -> dict[str, Any]:
        cached = self.peek_stats(serial)
        if cached is not None:
            return cached
        row = session.get(CardStats, serial) if session is not None and self.enabled else None
        return self._keep(serial, row)

    def stats_from_row(self, serial: str, row: Any) -> dict[str, Any]:
        """Like ``stats``, from the serial's ``api_card_stats`` row (or None) already read by the caller
        (``card_reader.CardReader.read`` reads it with the card, in the same query)."""
        cached = self.peek_stats(serial)
        if cached is not None:
            return cached
        return self._keep(serial, row if self.enabled else None)

    def _keep(self, serial: str, row: Any) -> dict[str, Any]:
        entry = _StatsEntry(0, 0, 0, None, None, self._clock())
        if row is not None:
            entry = _StatsEntry(int(row.scans), int(row.checks), int(row.failed_checks), row.first_scan_at,
                                row.first_check_at, self._clock())
        with self._lock:
            if len(self._stats) > 200_000:
                self._stats.clear()
            self._stats[serial] = entry
        return self._combine(serial, entry)

    def _combine(self, serial: str, e: _StatsEntry) -> dict[str, Any]:
        p = self._pending.get(serial)
        scans, checks, failed, fs, fc = e.scans, e.checks, e.failed, e.first_scan, e.first_check
        if p is not None:
            scans, checks, failed = scans + p.scans, checks + p.checks, failed + p.failed
            fs, fc = _min(fs, p.first_scan), _min(fc, p.first_check)
        out = {"scans": scans, "first_scan_at": _iso(fs), "checks": checks, "failed_checks": failed,
               "first_check_at": _iso(fc)}
        out["signal"] = fraud_signal(out)
        return out

    # ----------------------------------------------------------------- writing

    def flush(self) -> int:
        """Write what is queued (one transaction); returns the number of scans written."""
        if self._sessions is None:
            self._queue.clear()
            return 0
        with self._flush_lock:
            rows = []
            while self._queue and len(rows) < 20_000:
                rows.append(self._queue.popleft())
            if not rows:
                self._maybe_prune()
                return 0
            with self._lock:
                increments: dict[str, _Pending] = {}
                for at, serial, kind, _v, ok, *_ in rows:
                    if serial is None or kind not in ("lookup", "page", "check"):
                        continue
                    inc = increments.get(serial)
                    if inc is None:
                        inc = increments[serial] = _Pending()
                    inc.add(kind, ok, at)
            try:
                with self._sessions.begin() as session:
                    dialect = session.get_bind().dialect.name
                    if dialect == "sqlite":
                        _write_sqlite(session, rows, increments)
                    elif dialect == "postgresql":
                        _write_postgres(session, rows, increments)
                    else:
                        session.execute(insert(Scan.__table__), [
                            {"at": at, "serial": serial, "kind": kind, "verdict": verdict, "ok": ok,
                             "client": client, "ua_family": ua, "country": country}
                            for at, serial, kind, verdict, ok, client, ua, country in rows
                        ])
                        self._upsert_stats(session, increments)
            except Exception as exc:  # noqa: BLE001 - never lose the worker over statistics
                log.warning("could not write %d scans: %s", len(rows), type(exc).__name__)
                with self._lock:  # forget the pending counts of what was lost
                    self._subtract(increments)
                return 0
            with self._lock:
                self._subtract(increments)
                for serial, inc in increments.items():
                    e = self._stats.get(serial)
                    if e is not None:
                        e.scans += inc.scans
                        e.checks += inc.checks
                        e.failed += inc.failed
                        e.first_scan = _min(e.first_scan, inc.first_scan)
                        e.first_check = _min(e.first_check, inc.first_check)
            self.written += len(rows)
            self._maybe_prune()
            return len(rows)

    def _subtract(self, increments: dict[str, _Pending]) -> None:
        for serial, inc in increments.items():
            p = self._pending.get(serial)
            if p is None:
                continue
            p.scans -= inc.scans
            p.checks -= inc.checks
            p.failed -= inc.failed
            if p.scans <= 0 and p.checks <= 0:
                del self._pending[serial]

    def _upsert_stats(self, session: Session, increments: dict[str, _Pending]) -> None:
        if not increments:
            return
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:  # pragma: no cover - other databases: read-modify-write
            for serial, inc in increments.items():
                row = session.get(CardStats, serial) or CardStats(serial=serial, scans=0, checks=0, failed_checks=0)
                row.scans += inc.scans
                row.checks += inc.checks
                row.failed_checks += inc.failed
                row.first_scan_at = _min(row.first_scan_at, inc.first_scan)
                row.first_check_at = _min(row.first_check_at, inc.first_check)
                row.last_at = inc.last
                session.add(row)
            return
        from sqlalchemy import func

        t = CardStats.__table__
        stmt = dialect_insert(t)
        ex = stmt.excluded
        stmt = stmt.on_conflict_do_update(index_elements=[t.c.serial], set_={
            "scans": t.c.scans + ex.scans,
            "checks": t.c.checks + ex.checks,
            "failed_checks": t.c.failed_checks + ex.failed_checks,
            "first_scan_at": func.coalesce(t.c.first_scan_at, ex.first_scan_at),
            "first_check_at": func.coalesce(t.c.first_check_at, ex.first_check_at),
            "last_at": ex.last_at,
        })
        rows = [{"serial": serial, "scans": inc.scans, "checks": inc.checks, "failed_checks": inc.failed,
                 "first_scan_at": inc.first_scan, "first_check_at": inc.first_check, "last_at": inc.last}
                for serial, inc in sorted(increments.items())]
        session.execute(stmt, rows)  # one executemany

    def _maybe_prune(self) -> None:
        now = self._clock()
        if now < self._next_prune or self._sessions is None:
            return
        self._next_prune = now + 3600.0
        cutoff = dt.datetime.now(dt.UTC) - self._retention
        try:
            with self._sessions.begin() as session:
                session.execute(delete(Scan.__table__).where(Scan.__table__.c.at < cutoff))
        except Exception as exc:  # noqa: BLE001
            log.warning("could not prune old scans: %s", type(exc).__name__)

    def start(self) -> None:
        if not self.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cardproof-scan-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_interval):
            self.flush()
            self._refresh_stale()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
        if self.enabled:
            while self._queue:
                if not self.flush():
                    break

    def count(self, session: Session, serial: str | None = None) -> int:
        """Stored scans (tests and tools)."""
        from sqlalchemy import func

        q = select(func.count()).select_from(Scan)
        if serial is not None:
            q = q.where(Scan.serial == serial)
        return int(session.scalar(q) or 0)
