"""The event indexer: mirrors the CardRegistry's and the CardEscrow's events into the database.

Tables: verify_api/storage/index_models.py (``chain_events``, ``indexed_blocks``, ``index_cursors``).

One pass (:meth:`Indexer.run_once`):

1. **Reorg check.** The cursor (last indexed block and its hash) is compared with the chain. On a mismatch
   the stored hashes of the recent blocks (the last ``keep`` indexed blocks, 256 by default) are walked back
   to the newest one the chain still has: the common ancestor. Events and block records above it are
   deleted and the cursor moves back to it, in one transaction; the blocks after it are indexed again.
   If no stored block is on the chain any more (a reorg deeper than the kept window, or a chain reset)
   everything indexed for the chain is dropped and indexing starts over.
2. **Catch up** to ``head - confirmations`` in steps of ``step`` blocks, each step one transaction: its
   events, the hashes of its blocks that are among the newest ``keep``, and the cursor. Logs whose block
   hash differs from the header read for that block (the chain moved while reading) abort the pass; the
   next one starts with the reorg check.

Several indexers may share a database (``cardproof index`` and the one under ``cardproof serve``): every
step moves the cursor only from the exact position it read, so a step that lost a race is rolled back
whole; the unique key (chain id, transaction, log index) rules out duplicates anyway.

Contracts added later (an escrow deployed after the registry was followed) are backfilled from their
deployment block before the next catch-up.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from hexbytes import HexBytes
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from chain.client import ChainClient, guard
from chain.errors import CardproofError, NotDeployed
from chain.events import ChainEvent, read_events
from verify_api.storage.index_models import ChainEventRow, IndexCursor, IndexedBlock
from issuer.storage.types import utcnow

log = logging.getLogger("cardproof.indexer")

__all__ = [
    "KEEP_BLOCKS",
    "STEP",
    "Followed",
    "Indexer",
    "IndexerError",
    "IndexerThread",
    "PassReport",
    "Reorg",
    "build_indexer",
    "followed_contracts",
    "read_client",
    "read_logs",
    "run_forever",
]

#: Block hashes kept per chain for reorg detection.
KEEP_BLOCKS = 256
#: Blocks per catch-up step (one get_logs call and one transaction).
STEP = 2_000
_MAX_BIGINT = 2**63 - 1


class IndexerError(CardproofError):
    code = "indexer_error"


class _ChainMoved(Exception):
    """The chain changed while a step read it: retry from the reorg check."""


class _LostRace(Exception):
    """Another indexer moved the cursor first."""


@dataclass(frozen=True)
class Followed:
    """A contract whose events are indexed."""

    name: str
    address: str
    abi: list[dict[str, Any]]
    #: First block that can hold its events (its deployment block).
    from_block: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", Web3.to_checksum_address(self.address))


@dataclass(frozen=True)
class Reorg:
    #: The cursor block whose hash the chain no longer has.
    detected_at: int
    #: Newest indexed block still on the chain (-1 / the start when none is).
    ancestor: int
    removed_events: int

    @property
    def depth(self) -> int:
        return self.detected_at - self.ancestor

    def to_json(self) -> dict[str, Any]:
        return {"detected_at": self.detected_at, "ancestor": self.ancestor, "depth": self.depth,
                "removed_events": self.removed_events}


@dataclass
class PassReport:
    chain_id: int
    head: int | None = None
    target: int | None = None
    cursor: int = -1
    from_block: int | None = None
    to_block: int | None = None
    events: int = 0
    backfilled: int = 0
    reorg: Reorg | None = None
    retried: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "head": self.head, "target": self.target, "cursor": self.cursor,
                "indexed": None if self.from_block is None else {"from": self.from_block, "to": self.to_block},
                "events": self.events, "backfilled": self.backfilled,
                "reorg": self.reorg.to_json() if self.reorg else None, "retried": self.retried}

    def summary(self) -> str:
        parts = []
        if self.reorg:
            parts.append(f"reorg: rolled back {self.reorg.removed_events} events above block {self.reorg.ancestor}")
        if self.from_block is not None:
            parts.append(f"indexed blocks {self.from_block}..{self.to_block}: {self.events} events")
        if self.backfilled:
            parts.append(f"backfilled {self.backfilled} events of a newly followed contract")
        if not parts:
            parts.append("nothing new")
        return f"chain {self.chain_id}: " + "; ".join(parts) + f" (cursor {self.cursor}, head {self.head})"


@dataclass
class _Cursor:
    block_number: int
    block_hash: str | None
    contracts: dict[str, str]


@dataclass(frozen=True)
class _Header:
    number: int
    hash: str
    parent: str
    timestamp: int


# ------------------------------------------------------------------------------------------ reading the chain


def read_logs(client: ChainClient, contracts: Iterable[Followed], from_block: int, to_block: int) -> list[ChainEvent]:
    """Decoded events of `contracts` in [from_block, to_block], in chain order."""
    return read_events(client, [(c.address, c.abi) for c in contracts], from_block, to_block)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def _header(client: ChainClient, number: int) -> _Header | None:
    from web3.exceptions import BlockNotFound

    try:
        block = guard(lambda: client.w3.eth.get_block(number))
    except BlockNotFound:
        return None
    if block is None:
        return None
    return _Header(int(block["number"]), HexBytes(block["hash"]).to_0x_hex(),
                   HexBytes(block["parentHash"]).to_0x_hex(), int(block["timestamp"]))


# ------------------------------------------------------------------------------------------ the indexer


class Indexer:
    """Indexes `contracts` on `client`'s chain into the database of `sessions`."""

    def __init__(self, client: ChainClient, sessions: sessionmaker[Session], contracts: Iterable[Followed], *,
                 confirmations: int = 0, step: int = STEP, keep: int = KEEP_BLOCKS) -> None:
        self.client = client
        self.sessions = sessions
        self.contracts = list(contracts)
        if not self.contracts:
            raise IndexerError("nothing to index: no contract given")
        self.confirmations = max(0, int(confirmations))
        self.step = max(1, int(step))
        self.keep = max(1, int(keep))
        self.chain_id = client.chain_id
        self._names = {c.address: c.name for c in self.contracts}

    # -------------------------------------------------------------- cursor

    @property
    def start_block(self) -> int:
        return min(c.from_block for c in self.contracts)

    def cursor(self) -> _Cursor | None:
        with self.sessions() as s:
            row = s.get(IndexCursor, self.chain_id)
            if row is None:
                return None
            return _Cursor(int(row.block_number), row.block_hash, json.loads(row.contracts))

    def _ensure_cursor(self) -> _Cursor:
        cur = self.cursor()
        if cur is not None:
            return cur
        contracts = {c.address: c.name for c in self.contracts}
        try:
            with self.sessions.begin() as s:
                s.add(IndexCursor(chain_id=self.chain_id, block_number=self.start_block - 1, block_hash=None,
                                  contracts=json.dumps(contracts, sort_keys=True)))
        except IntegrityError:
            pass  # another indexer created it
        cur = self.cursor()
        assert cur is not None
        return cur

    def _move_cursor(self, s: Session, old: _Cursor, number: int, block_hash: str | None,
                     contracts: Mapping[str, str] | None = None) -> None:
        """Move the cursor from exactly `old` (else _LostRace), inside the caller's transaction."""
        cond = [IndexCursor.chain_id == self.chain_id, IndexCursor.block_number == old.block_number]
        cond.append(IndexCursor.block_hash.is_(None) if old.block_hash is None
                    else IndexCursor.block_hash == old.block_hash)
        values: dict[str, Any] = {"block_number": number, "block_hash": block_hash, "updated_at": utcnow()}
        if contracts is not None:
            values["contracts"] = json.dumps(dict(contracts), sort_keys=True)
        res = s.execute(sa.update(IndexCursor).where(*cond).values(**values))
        if res.rowcount != 1:
            raise _LostRace

    # -------------------------------------------------------------- a pass

    def run_once(self) -> PassReport:
        """Check for a reorg, backfill newly followed contracts, then catch up to head - confirmations."""
        report = PassReport(self.chain_id)
        for attempt in range(3):
            try:
                self._pass(report)
                return report
            except _ChainMoved:
                log.info("chain %s moved while indexing; checking again", self.chain_id)
                report.retried = True
            except (_LostRace, IntegrityError):
                log.info("another indexer advanced chain %s first", self.chain_id)
                report.retried = True
                if attempt == 2:
                    break
        cur = self.cursor()
        report.cursor = cur.block_number if cur else -1
        return report

    def _pass(self, report: PassReport) -> None:
        cur = self._ensure_cursor()
        reorg = self._check_reorg(cur)
        if reorg is not None:
            report.reorg = reorg
            cur = self._ensure_cursor()
        cur, report.backfilled = self._backfill(cur)
        head = int(self.client.block_number())
        target = head - self.confirmations
        report.head, report.target, report.cursor = head, target, cur.block_number
        while cur.block_number < target:
            a = cur.block_number + 1
            b = min(a + self.step - 1, target)
            cur, n = self._index_step(cur, a, b, target)
            if report.from_block is None:
                report.from_block = a
            report.to_block = b
            report.events += n
            report.cursor = cur.block_number

    # -------------------------------------------------------------- reorgs

    def _check_reorg(self, cur: _Cursor) -> Reorg | None:
        if cur.block_number < 0 or cur.block_hash is None:
            return None
        header = _header(self.client, cur.block_number)
        if header is not None and header.hash == cur.block_hash:
            return None
        with self.sessions() as s:
            stored = s.execute(sa.select(IndexedBlock.block_number, IndexedBlock.block_hash)
                               .where(IndexedBlock.chain_id == self.chain_id,
                                      IndexedBlock.block_number < cur.block_number)
                               .order_by(IndexedBlock.block_number.desc())).all()
        ancestor: tuple[int, str | None] | None = None
        for number, block_hash in stored:
            h = _header(self.client, int(number))
            if h is not None and h.hash == block_hash:
                ancestor = (int(number), block_hash)
                break
        if ancestor is None:
            ancestor = (self.start_block - 1, None)
            log.warning("chain %s: none of the %d kept block hashes is on the chain any more (deep reorg or reset): "
                        "re-indexing from block %d", self.chain_id, len(stored), self.start_block)
        with self.sessions.begin() as s:
            removed = s.execute(sa.delete(ChainEventRow).where(ChainEventRow.chain_id == self.chain_id,
                                                              ChainEventRow.block_number > ancestor[0])).rowcount
            s.execute(sa.delete(IndexedBlock).where(IndexedBlock.chain_id == self.chain_id,
                                                    IndexedBlock.block_number > ancestor[0]))
            contracts = None if ancestor[1] is not None else {c.address: c.name for c in self.contracts}
            self._move_cursor(s, cur, ancestor[0], ancestor[1], contracts)
        reorg = Reorg(cur.block_number, ancestor[0], int(removed or 0))
        log.warning("chain %s reorganised: block %d is no longer on the chain; common ancestor %d; %d events "
                    "rolled back", self.chain_id, cur.block_number, ancestor[0], reorg.removed_events)
        return reorg

    # -------------------------------------------------------------- catching up

    def _rows(self, events: list[ChainEvent], times: Mapping[int, int]) -> list[dict[str, Any]]:
        rows = []
        for ev in events:
            args = _jsonable(ev.args)
            name = self._names.get(ev.address, "")
            order_id = args.get("orderId") if "Order" in ev.name else None
            if not isinstance(order_id, int) or not 0 <= order_id <= _MAX_BIGINT:
                order_id = None
            batch_id = args.get("batchId")
            rows.append({"chain_id": self.chain_id, "block_number": ev.block_number, "block_hash": ev.block_hash,
                         "block_time": times.get(ev.block_number), "tx_hash": ev.tx_hash, "log_index": ev.log_index,
                         "contract": name, "address": ev.address, "event": ev.name, "order_id": order_id,
                         "batch_id": batch_id if isinstance(batch_id, str) else None,
                         "args": json.dumps(args, sort_keys=True)})
        return rows

    def _times(self, events: list[ChainEvent], headers: Mapping[int, _Header]) -> dict[int, int]:
        times = {n: h.timestamp for n, h in headers.items()}
        for ev in events:
            h = headers.get(ev.block_number)
            if h is not None and h.hash != ev.block_hash:
                raise _ChainMoved
            if ev.block_number not in times:
                other = _header(self.client, ev.block_number)
                if other is None or other.hash != ev.block_hash:
                    raise _ChainMoved
                times[ev.block_number] = other.timestamp
        return times

    def _index_step(self, cur: _Cursor, a: int, b: int, target: int) -> tuple[_Cursor, int]:
        first = max(a, target - self.keep + 1)
        headers: dict[int, _Header] = {}
        prev = cur.block_hash if first == a else None
        for n in range(first, b + 1):
            h = _header(self.client, n)
            if h is None or (prev is not None and h.parent != prev):
                raise _ChainMoved
            headers[n] = h
            prev = h.hash
        last = headers.get(b) or _header(self.client, b)
        if last is None:
            raise _ChainMoved
        events = read_logs(self.client, self.contracts, a, b)
        rows = self._rows(events, self._times(events, headers))
        with self.sessions.begin() as s:
            self._move_cursor(s, cur, b, last.hash)
            if rows:
                s.execute(sa.insert(ChainEventRow), rows)
            if headers:
                s.execute(sa.insert(IndexedBlock), [{"chain_id": self.chain_id, "block_number": n,
                                                     "block_hash": h.hash} for n, h in headers.items()])
            s.execute(sa.delete(IndexedBlock).where(IndexedBlock.chain_id == self.chain_id,
                                                    IndexedBlock.block_number <= b - self.keep))
        return _Cursor(b, last.hash, cur.contracts), len(rows)

    def _backfill(self, cur: _Cursor) -> tuple[_Cursor, int]:
        """Index the past events of contracts followed since the cursor last moved."""
        new = [c for c in self.contracts if c.address not in cur.contracts]
        if not new:
            return cur, 0
        contracts = {**cur.contracts, **{c.address: c.name for c in new}}
        rows: list[dict[str, Any]] = []
        if cur.block_number >= 0:
            for c in new:
                start = c.from_block
                while start <= cur.block_number:
                    end = min(start + self.step - 1, cur.block_number)
                    events = read_logs(self.client, [c], start, end)
                    rows.extend(self._rows(events, self._times(events, {})))
                    start = end + 1
        with self.sessions.begin() as s:
            self._move_cursor(s, cur, cur.block_number, cur.block_hash, contracts)
            if rows:
                have = {(t, i) for t, i in s.execute(
                    sa.select(ChainEventRow.tx_hash, ChainEventRow.log_index)
                    .where(ChainEventRow.chain_id == self.chain_id,
                           ChainEventRow.address.in_([c.address for c in new])))}
                rows = [r for r in rows if (r["tx_hash"], r["log_index"]) not in have]
                if rows:
                    s.execute(sa.insert(ChainEventRow), rows)
        if new:
            log.info("chain %s: now following %s (%d past events)", self.chain_id,
                     ", ".join(f"{c.name} {c.address}" for c in new), len(rows))
        return _Cursor(cur.block_number, cur.block_hash, contracts), len(rows)


# ------------------------------------------------------------------------------------------ wiring


def read_client(settings: Any) -> ChainClient:
    """A client of the configured chain for reading (a throwaway account when none is configured)."""
    from chain.client import connect

    return connect(settings, read_only=True)  # CARDPROOF_RPC_TIMEOUT


def followed_contracts(client: ChainClient, home: Any) -> list[Followed]:
    """The registry (required: NotDeployed otherwise) and the escrow when it is deployed."""
    from chain.artifacts import load_artifact
    from chain.deployments import REGISTRY, find
    from chain.escrow import ESCROW

    registry = find(client, home, REGISTRY)
    out = [Followed(REGISTRY, registry.address, load_artifact(REGISTRY).abi, registry.block_number)]
    try:
        escrow = find(client, home, ESCROW)
    except NotDeployed:
        log.info("no CardEscrow on chain %s: indexing the registry alone", client.chain_id)
    else:
        out.append(Followed(ESCROW, escrow.address, load_artifact(ESCROW).abi, escrow.block_number))
    return out


def build_indexer(settings: Any, *, confirmations: int | None = None, sessions: sessionmaker[Session] | None = None,
                  client: ChainClient | None = None) -> Indexer:
    """The indexer for the configured chain, database and deployments (CARDPROOF_HOME)."""
    if sessions is None:
        from verify_api.storage.db import open_public_database

        _engine, sessions = open_public_database(settings)
    client = client or read_client(settings)
    return Indexer(client, sessions, followed_contracts(client, settings.home),
                   confirmations=settings.confirmations if confirmations is None else confirmations)


def run_forever(indexer: Indexer | None, interval: float, stop: threading.Event, *,
                on_report: Callable[[PassReport], None] | None = None,
                refresh: Callable[[], Indexer] | None = None, refresh_every: float = 30.0) -> None:
    """Run passes every `interval` seconds until `stop` is set. Failures are logged and retried.

    `refresh` rebuilds the indexer (a contract deployed since, a node restarted): when there is none
    yet, after a failure, and every `refresh_every` seconds while the escrow is not followed.
    """
    import time

    last_refresh = time.monotonic()
    failing = False
    while not stop.is_set():
        try:
            stale = indexer is None or failing or (
                len(indexer.contracts) < 2 and time.monotonic() - last_refresh > refresh_every)
            if refresh is not None and stale:
                last_refresh = time.monotonic()
                indexer = refresh()
            if indexer is None:
                raise IndexerError("no indexer")
            report = indexer.run_once()
            failing = False
            if on_report is not None:
                on_report(report)
        except Exception as exc:  # noqa: BLE001 - the loop must survive a node or database outage
            if not failing:
                log.warning("indexer pass failed (retrying every %.1f s): %s: %s", interval, type(exc).__name__,
                            " ".join(str(exc).split())[:200])
            failing = True
        stop.wait(interval)


@dataclass
class IndexerThread:
    """The indexer in a daemon thread (what `cardproof serve` runs next to the API)."""

    settings: Any
    interval: float = 2.0
    confirmations: int | None = None
    sessions: sessionmaker[Session] | None = None
    #: While the escrow is not deployed, look for it again this often (seconds).
    refresh_every: float = 30.0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    reports: int = 0

    def _build(self) -> Indexer:
        if self.sessions is None:
            from verify_api.storage.db import open_public_database

            _engine, self.sessions = open_public_database(self.settings)
        return build_indexer(self.settings, confirmations=self.confirmations, sessions=self.sessions)

    def _counted(self, report: PassReport) -> None:
        self.reports += 1
        if report.events or report.reorg:
            log.info("%s", report.summary())

    def start(self) -> IndexerThread:
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(
            target=run_forever, args=(None, self.interval, self._stop),
            kwargs={"on_report": self._counted, "refresh": self._build, "refresh_every": self.refresh_every},
            name="cardproof-indexer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
