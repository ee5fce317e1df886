"""The card service: database records + chain view -> the public answer about a card.

Hot path: a lookup whose card record, chain facts and counts are all cached is answered without any
I/O (``view_fast``); a card not cached whose chain facts are is read with one query on the event loop
(``view_async``, PostgreSQL); otherwise ``view`` reads what is missing (database, chain) in a worker thread.

Unknown serials cost the same work and get the same shape as known ones: the database lookup that
misses is followed by the same lookup of a real "decoy" card, the same chain reads for the decoy's
batch and words, and the answer has every key of a known card's answer, with nulls.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from issuer.core.errors import InvalidProof
from issuer.core.leaf import LEAF_ENCODING, LEAF_FIELDS, leaf_hash
from issuer.core.merkle import process_proof
from issuer.core.serial import format_serial, parse_serial
from verify_api.chain_view import MISSING, ChainView
from verify_api.lookup import CardRecord
from verify_api.scans import ScanRecorder
from verify_api.verdict import ChainFacts, Verdict, decide

log = logging.getLogger("cardproof.api.service")

__all__ = ["CachedCard", "CardService", "canonical_serial"]


_CANON: dict[str, tuple[str, str]] = {}


def canonical_serial(text: str) -> tuple[str, str]:
    """(stored form without dashes, display form) of a typed serial; InvalidSerial if malformed."""
    found = _CANON.get(text)
    if found is not None:
        return found
    display = format_serial(parse_serial(text))
    found = (display.replace("-", ""), display)
    if len(_CANON) > 100_000:
        _CANON.clear()
    _CANON[text] = found
    return found


def _iso(value: dt.datetime | int | None) -> str | None:
    if value is None or value == 0:
        return None
    if isinstance(value, int):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _hex(b: bytes | None) -> str | None:
    return None if b is None else "0x" + bytes(b).hex()


@dataclass
class CachedCard:
    canon: str
    display: str
    record: CardRecord | None
    batch_id: bytes | None
    proof_root: bytes | None
    #: Parts of the answer that do not change: product, proof, the database's batch fields.
    static: dict[str, Any]
    expires: float


def _leaf_named(value: list[str]) -> dict[str, str]:
    return {name: v for (name, _t), v in zip(LEAF_FIELDS, value, strict=True)}


def _static_parts(record: CardRecord) -> tuple[dict[str, Any], bytes | None]:
    b = record.batch
    lh = record.leaf_hash or leaf_hash(record.leaf)
    root = record.proven_root  # the card reader has folded the proof already
    if root is None:
        try:
            root = process_proof(lh, record.proof)
        except InvalidProof:
            root = None
    value = record.leaf.to_json()
    static = {
        "issuer": {"address": b.issuer_address},
        "product": {"sku": b.sku, "face_value": b.face_value, "currency": b.currency, "expiry": b.expiry or 0,
                    "expiry_iso": _iso(b.expiry or 0)},
        "batch": {"id": b.batch_id, "card_count": b.card_count, "root": b.root, "code_form": b.code_form,
                  "anchor_tx": b.anchor_tx, "anchor_block": b.anchor_block},
        "proof": {"index": record.index, "leaf": _leaf_named(value), "value": value,
                  "leaf_encoding": list(LEAF_ENCODING), "leaf_hash": _hex(lh),
                  "proof": [_hex(p) for p in record.proof], "root": b.root},
    }
    return static, root


# Every key of a known card's answer, so an unknown serial's answer has the same shape.
_BLANK_STATIC = {
    "issuer": {"address": None},
    "product": {"sku": None, "face_value": None, "currency": None, "expiry": None, "expiry_iso": None},
    "batch": {"id": None, "card_count": None, "root": None, "code_form": None, "anchor_tx": None,
              "anchor_block": None},
    "proof": {"index": None, "leaf": {name: None for name, _t in LEAF_FIELDS}, "value": [], "leaf_encoding":
              list(LEAF_ENCODING), "leaf_hash": None, "proof": [], "root": None},
}


@dataclass(frozen=True)
class _Facts:
    facts: ChainFacts
    #: (holds ISSUER_ROLE, display name recorded on chain), or None when unknown.
    issuer: tuple[bool, str] | None


class CardService:
    def __init__(self, sessions: sessionmaker[Session], chain: ChainView, scans: ScanRecorder,
                 *, cache_ttl: float = 60.0, cache_size: int = 200_000,
                 public_url: str = "", explorer_url: str | None = None,
                 clock: Callable[[], float] = time.monotonic, wallclock: Callable[[], float] = time.time) -> None:
        self.sessions = sessions
        self.chain = chain
        self.scans = scans
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.public_url = public_url.rstrip("/")
        self.explorer_url = explorer_url.rstrip("/") if explorer_url else None
        self._clock = clock
        self._wallclock = wallclock
        self._cache: dict[str, CachedCard] = {}
        self._lock = threading.Lock()
        self._decoy: CachedCard | None = None
        self._decoy_at = -1e9
        from verify_api.card_reader import CardReader

        self.reader = CardReader(sessions.kw["bind"])

    # ------------------------------------------------------------------ records

    def peek(self, canon: str) -> CachedCard | None:
        c = self._cache.get(canon)
        if c is None or c.expires < self._clock():
            return MISSING
        return c

    def forget(self, canon: str) -> None:
        with self._lock:
            self._cache.pop(canon, None)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._decoy = None
            self._decoy_at = -1e9
        self.reader.forget()

    def _store(self, c: CachedCard) -> None:
        if self.cache_ttl <= 0 or self.cache_size <= 0:
            return
        with self._lock:
            if len(self._cache) >= self.cache_size:
                for key in list(self._cache)[: max(1, self.cache_size // 10)]:
                    del self._cache[key]
            self._cache[c.canon] = c

    def _make(self, canon: str, display: str, record: CardRecord | None) -> CachedCard:
        ttl = self.cache_ttl
        if record is None:
            return CachedCard(canon, display, None, None, None, _BLANK_STATIC, self._clock() + ttl)
        static, root = _static_parts(record)
        return CachedCard(canon, display, record, bytes.fromhex(record.batch.batch_id[2:]), root, static,
                          self._clock() + ttl)

    def _decoy_card(self) -> CachedCard | None:
        """A real published card whose chain facts an unknown serial reads (refreshed every 5 minutes), so that
        an unknown serial costs what a known one does (its database work is mirrored by the card reader)."""
        now = self._clock()
        if self._decoy is not None and now - self._decoy_at < 300:
            return self._decoy
        self._decoy_at = now
        serial = self.reader.decoy_serial()
        record = None
        if serial is not None:
            try:
                record, _stats = self.reader.read(serial)
            except Exception:  # noqa: BLE001
                record = None
        self._decoy = None if record is None else self._make(serial, record.serial, record)
        return self._decoy

    # ------------------------------------------------------------------ chain facts

    def _mirror(self, c: CachedCard) -> tuple[CardRecord | None, bytes | None, int]:
        """(record, batch id, index) whose chain facts to read: the card's, or for an unknown serial a
        card of the decoy's batch chosen by the serial (so cold and warm caches behave alike)."""
        if c.record is not None:
            return c.record, c.batch_id, c.record.index
        d = self._decoy
        if d is None or d.record is None:
            return None, None, 0
        n = max(1, d.record.batch.card_count)
        idx = int.from_bytes(hashlib.blake2b(c.canon.encode(), digest_size=8).digest(), "big") % n
        return d.record, d.batch_id, idx

    def peek_facts(self, c: CachedCard) -> _Facts | None:
        record, bid, idx = self._mirror(c)
        now = int(self._wallclock())
        if record is None:
            return _Facts(ChainFacts(None, None, None, now), None)
        batch = self.chain.peek_batch(bid)
        if batch is MISSING:
            return None
        rev, red = self.chain.peek_bits(bid, idx)
        if rev is MISSING or red is MISSING:
            return None
        issuer = self.chain.peek_issuer(record.batch.issuer_address)
        if issuer is MISSING:
            return None
        return _Facts(ChainFacts(batch, rev, red, now), issuer)

    def facts(self, c: CachedCard) -> _Facts:
        record, bid, idx = self._mirror(c)
        now = int(self._wallclock())
        if record is None:
            return _Facts(ChainFacts(None, None, None, now), None)
        batch = self.chain.batch(bid)
        if batch is not None and batch.anchored:
            rev, red = self.chain.bits(bid, idx)
        else:
            rev = red = None
        return _Facts(ChainFacts(batch, rev, red, now), self.chain.issuer(record.batch.issuer_address))

    # ------------------------------------------------------------------ answers

    def build(self, c: CachedCard, f: _Facts, stats: dict[str, Any]) -> dict[str, Any]:
        status = self.chain.status()
        known = c.record is not None
        has_role = f.issuer[0] if f.issuer is not None else None
        v: Verdict = decide(c.record if known else None, f.facts, proof_root=c.proof_root if known else None,
                            issuer_has_role=has_role)
        s = c.static
        b = f.facts.batch if known else None
        anchored = bool(b is not None and b.anchored)
        batch = dict(s["batch"])
        batch.update({
            "anchored": anchored if known else None,
            "anchored_root": _hex(b.root) if anchored else None,
            "anchored_at": b.anchored_at if anchored else None,
            "anchored_at_iso": _iso(b.anchored_at) if anchored else None,
            "revoked": b.revoked if anchored else None,
            "chain_id": status.chain_id if known else None,
            "registry": status.registry if known else None,
        })
        issuer = dict(s["issuer"])
        chain_name = (f.issuer[1] or None) if (known and f.issuer is not None) else None
        issuer["name"] = chain_name
        issuer["name_source"] = "chain" if chain_name else None
        issuer["has_role"] = has_role if known else None
        anchor_tx = batch.get("anchor_tx")
        links = {
            "self": f"/v1/cards/{c.display}",
            "page": f"{self.public_url}/c/{c.display}",
            "anchor_tx": f"{self.explorer_url}/tx/{anchor_tx}" if (self.explorer_url and anchor_tx) else None,
        }
        return {
            "serial": c.display,
            "verdict": v.verdict,
            "reason": v.reason,
            "checked_at": _iso(dt.datetime.now(dt.UTC)),
            "chain": status.to_json(),
            "status": {"revoked": v.revoked, "redeemed": v.redeemed, "source": v.source,
                       "block": status.last_block if v.source else None},
            "issuer": issuer,
            "product": s["product"],
            "batch": batch,
            "proof": s["proof"],
            "fraud": stats,
            "links": links,
        }

    def view_fast(self, canon: str) -> tuple[dict[str, Any], CachedCard] | None:
        """The answer from caches only, or None when something must be read (no I/O)."""
        c = self.peek(canon)
        if c is MISSING:
            return None
        f = self.peek_facts(c)
        if f is None:
            return None
        stats = self.scans.peek_stats(canon)
        if stats is None:
            return None
        return self.build(c, f, stats), c

    def view(self, canon: str, display: str) -> tuple[dict[str, Any], CachedCard]:
        """The answer, reading the database and the chain as needed (blocking)."""
        c = self.peek(canon)
        stats = self.scans.peek_stats(canon)
        if c is MISSING:
            # One round trip: the card, its counts and its leaf's tile (for a serial that is not published,
            # the decoy's tile, and the same work on it): verify_api.card_reader.
            record, row = self.reader.read(canon)
            if record is None:
                self._decoy_card()
            c = self._make(canon, display, record)
            self._store(c)
            if stats is None:
                stats = self.scans.stats_from_row(canon, row)
        elif stats is None:
            with self.sessions() as session:
                _read_only(session)
                stats = self.scans.stats(session, canon)
        f = self.peek_facts(c) or self.facts(c)
        return self.build(c, f, stats), c

    async def view_async(self, canon: str, display: str) -> tuple[dict[str, Any], CachedCard] | None:
        """:meth:`view` for a card not cached, with its one query on the event loop (PostgreSQL) and everything
        else from caches; None when something must be read the blocking way."""
        if self.peek(canon) is not MISSING:
            return None
        got = await self.reader.read_async(canon)
        if got is None:
            return None
        record, row = got
        if record is None and self._decoy is None:
            return None
        c = self._make(canon, display, record)
        f = self.peek_facts(c)
        if f is None:
            return None
        self._store(c)
        stats = self.scans.peek_stats(canon)
        if stats is None:
            stats = self.scans.stats_from_row(canon, row)
        return self.build(c, f, stats), c

    def stats(self, canon: str) -> dict[str, Any]:
        cached = self.scans.peek_stats(canon)
        if cached is not None:
            return cached
        with self.sessions() as session:
            return self.scans.stats(session, canon)


def _read_only(session: Session) -> None:
    """On PostgreSQL, run this session's reads in autocommit: no BEGIN and no ROLLBACK round trip around
    them (each read is one statement; the tiles of a published batch never change). Reset on check-in."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


async def verify_and_record(deps: Any, canon: str, display: str, client: Any, kind: str) -> dict[str, Any]:
    """The verification answer for a serial (cached facts on the event loop, else a worker thread),
    recorded as a scan of `kind` ("lookup" or "page") and counted in the metrics."""
    from starlette.concurrency import run_in_threadpool

    from verify_api.metrics import LOOKUPS, VERDICTS, child

    res = deps.service.view_fast(canon)
    if res is None:
        child(LOOKUPS, "slow").inc()
        res = await deps.service.view_async(canon, display)
        if res is None:
            res = await run_in_threadpool(deps.service.view, canon, display)
    else:
        child(LOOKUPS, "fast").inc()
    body, _cached = res
    deps.scans.record(kind, canon, client=client.hash, ua=client.ua, verdict=body["verdict"], country=client.country)
    child(VERDICTS, body["verdict"]).inc()
    return body
