"""The cold lookup path: a card, its proof and its scan counts in one database round trip.

A QR scan is nearly always a serial nobody asked about before, so this path is the one users feel. One
query, on the DB-API cursor (a server-side prepared statement on PostgreSQL), returns the card, the
serial's scan counts and the tile that holds the card's leaf (``pub_cards.tile``). The rest of the proof
comes from the tiles above it, which every card of the batch shares, kept in a bounded in-process cache
(read once, in one more query, when missing); published batches never change, so neither can go stale.
Batches are cached the same way.

An unknown serial costs the same: the query reads the decoy card's leaf tile instead (``COALESCE``), and
the decoy's leaf and proof are computed and checked as a known card's would be.

On PostgreSQL the query runs on the event loop (:meth:`CardReader.read_async`, psycopg's async pool) once the
decoy, the batch and its upper tiles are cached: no worker thread per lookup (the thread hand-off and the GIL
contention of a dozen threads were a quarter of a worker's time, scripts/bench_api with py-spy). A failed query
sends lookups down the blocking path for ``ASYNC_PAUSE`` seconds, which answers 503 while the database is down.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from issuer.core.errors import InvalidProof
from issuer.core.leaf import LEAF_VERSION, CardLeaf, currency_to_bytes3, leaf_hash, sku_to_bytes32
from issuer.core.merkle import is_leaf_position, process_proof, proof_positions
from issuer.core.serial import format_serial, parse_serial
from verify_api.lookup import BatchRecord, CardRecord, StoreCorrupt
from verify_api.storage.models import PubBatch, PubCard, PubTile
from verify_api.storage.tiles import TILE_HEIGHT, MissingTile, depth, tile_of, walk

__all__ = ["CardReader", "StatsRow"]

log = logging.getLogger("cardproof.api.reader")

#: Seconds the event loop's path stands aside after a failed query (the blocking path answers meanwhile).
ASYNC_PAUSE = 2.0

_SQL = (
    'SELECT c.batch_pk, c."index", c.code_commitment, c.tree_pos, c.tile, '
    "s.scans, s.checks, s.failed_checks, s.first_scan_at, s.first_check_at, t.data "
    "FROM (SELECT {p_serial} AS q_serial) q "
    "LEFT JOIN pub_cards c ON c.serial = q.q_serial "
    "LEFT JOIN api_card_stats s ON s.serial = q.q_serial "
    "LEFT JOIN pub_tiles t ON t.batch_pk = COALESCE(c.batch_pk, {p_dbatch}) AND t.tile = COALESCE(c.tile, {p_dtile})"
)
_PARAMS = {"postgresql": ("%(serial)s::varchar", "%(dbatch)s", "%(dtile)s"),
           "sqlite": (":serial", ":dbatch", ":dtile")}


class _NeedsIO(Exception):
    """Answering needs a blocking read (a batch or tile not cached yet)."""


class StatsRow:
    """An ``api_card_stats`` row, as ``ScanRecorder.stats_from_row`` reads it."""

    __slots__ = ("scans", "checks", "failed_checks", "first_scan_at", "first_check_at")

    def __init__(self, scans: int, checks: int, failed: int, first_scan: Any, first_check: Any) -> None:
        self.scans, self.checks, self.failed_checks = scans, checks, failed
        self.first_scan_at, self.first_check_at = _utc(first_scan), _utc(first_check)


def _utc(value: Any) -> dt.datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive text, PostgreSQL aware datetimes)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class CardReader:
    """Reads cards of the public database on the hot path (thread-safe)."""

    def __init__(self, engine: Engine, *, tile_cache: int = 100_000) -> None:
        self.engine = engine
        dialect = engine.dialect.name
        self._pg = dialect == "postgresql"
        names = _PARAMS.get(dialect)
        if names is None:
            raise ValueError(f"the public database must be PostgreSQL or SQLite, not {dialect}")
        self._sql = _SQL.format(p_serial=names[0], p_dbatch=names[1], p_dtile=names[2])
        self._lock = threading.Lock()
        self._batches: dict[int, tuple[BatchRecord, bytes, bytes, bytes]] = {}
        self._tiles: dict[tuple[int, int], bytes] = {}
        self._tile_cache = tile_cache
        #: (batch_pk, tile, tree_pos, index, commitment, serial) of a real card, for unknown serials.
        self._decoy: tuple[int, int | None, int, int, bytes, str] | None = None
        self.queries = 0
        #: PostgreSQL only: psycopg's async pool, for the query on the event loop (``open_async``).
        self._apool: Any = None
        self._async_down_until = 0.0

    # ------------------------------------------------------------------ the event loop's path

    async def open_async(self, size: int = 16) -> None:
        """On PostgreSQL, open an async connection pool (psycopg's) so that :meth:`read_async` queries on the
        event loop, without a worker thread per lookup."""
        if not self._pg or self._apool is not None:
            return
        from psycopg_pool import AsyncConnectionPool

        url = self.engine.url.set(drivername="postgresql")
        self._apool = AsyncConnectionPool(url.render_as_string(hide_password=False), min_size=1, max_size=size,
                                          kwargs={"autocommit": True, "connect_timeout": 3}, open=False,
                                          timeout=ASYNC_PAUSE)
        await self._apool.open(wait=False)

    async def close_async(self) -> None:
        pool, self._apool = self._apool, None
        if pool is not None:
            await pool.close()

    async def read_async(self, canon: str) -> tuple[CardRecord | None, StatsRow | None] | None:
        """:meth:`read` with the query on the event loop and the rest from caches; None when only the blocking
        path can answer (no async pool, or the decoy, the batch or a tile not cached yet)."""
        decoy = self._decoy
        if self._apool is None or decoy is None or time.monotonic() < self._async_down_until:
            return None
        params = {"serial": canon, "dbatch": decoy[0], "dtile": decoy[1]}
        try:
            async with self._apool.connection() as conn:
                cur = await conn.execute(self._sql, params, prepare=True)
                row = await cur.fetchone()
        except Exception as exc:  # noqa: BLE001 - the blocking path reads again, and reports an outage as such
            # (A connection a database restart closed, or the database down: the pool replaces its connections
            # in the background; meanwhile lookups take the blocking path, which answers 503 while it is down.)
            self._async_down_until = time.monotonic() + ASYNC_PAUSE
            log.info("async lookup failed (%s): the blocking path answers for %.0f s", type(exc).__name__,
                     ASYNC_PAUSE)
            return None
        self.queries += 1
        try:
            return self._decode(canon, decoy, row, io=False)
        except _NeedsIO:
            return None

    # ------------------------------------------------------------------ the one query

    def _execute(self, canon: str, decoy: tuple | None) -> tuple | None:
        params = {"serial": canon, "dbatch": decoy[0] if decoy else None, "dtile": decoy[1] if decoy else None}
        raw = self.engine.raw_connection()
        try:
            if self._pg:
                # One statement, read only: autocommit (a client-side switch in psycopg 3), so no BEGIN and no
                # ROLLBACK round trip around it.
                dbapi = raw.driver_connection
                dbapi.autocommit = True
                try:
                    with dbapi.cursor() as cur:
                        cur.execute(self._sql, params, prepare=True)
                        row = cur.fetchone()
                finally:
                    dbapi.autocommit = False
            else:
                cur = raw.cursor()
                try:
                    cur.execute(self._sql, params)
                    row = cur.fetchone()
                finally:
                    cur.close()
        finally:
            raw.close()
        self.queries += 1
        return row

    def read(self, canon: str) -> tuple[CardRecord | None, StatsRow | None]:
        """The published card with this canonical serial (None if unknown) and its stored scan counts."""
        decoy = self._decoy or self._pick_decoy()
        return self._decode(canon, decoy, self._execute(canon, decoy), io=True)

    def _decode(self, canon: str, decoy: tuple | None, row: tuple, *, io: bool
                ) -> tuple[CardRecord | None, StatsRow | None]:
        batch_pk, index, commitment, tree_pos, tile, scans, checks, failed, fs, fc, tile_data = row
        stats = None if scans is None else StatsRow(int(scans), int(checks), int(failed), fs, fc)
        if batch_pk is None:
            if decoy is not None:  # the same work as for a card: leaf, proof and its check, on the decoy
                try:
                    self._record(decoy[0], decoy[3], decoy[4], decoy[2], decoy[1], tile_data, decoy[5], io)
                except _NeedsIO:
                    raise
                except Exception:  # noqa: BLE001 - only here to spend the same time
                    pass
            return None, stats
        record = self._record(batch_pk, int(index), bytes(commitment), int(tree_pos), tile, tile_data, canon, io)
        return record, stats

    # ------------------------------------------------------------------ records

    def _record(self, batch_pk: int, index: int, commitment: bytes, tree_pos: int, tile: int | None,
                tile_data: Any, canon: str, io: bool = True) -> CardRecord:
        if not io and batch_pk not in self._batches:
            raise _NeedsIO
        batch, batch_id, sku, root = self._batch(batch_pk)
        leaf = CardLeaf(LEAF_VERSION, batch_id, index, parse_serial(canon), sku, batch.face_value,
                        currency_to_bytes3(batch.currency), batch.expiry, batch.code_form, commitment)
        expected = leaf_hash(leaf)
        corrupt = f"the stored tree of batch {batch.batch_id} is corrupt"
        if not is_leaf_position(tree_pos, 2 * batch.card_count - 1):
            raise StoreCorrupt(corrupt)
        tiles: dict[int, bytes] = {}
        if tile is not None:
            if tile_data is None:
                raise StoreCorrupt(f"the stored tree of batch {batch.batch_id} lacks the tile of card {canon}")
            tiles[int(tile)] = bytes(tile_data)
        cached = self._tiles

        def get(t: int) -> bytes | None:
            data = tiles.get(t)
            return data if data is not None else cached.get((batch_pk, t))

        try:
            try:
                node, proof = walk(get, tree_pos)
            except MissingTile:
                if not io:
                    raise _NeedsIO from None
                needed = {tile_of(p) for p in proof_positions(tree_pos, 2 * batch.card_count - 1)} - tiles.keys()
                tiles.update(self._upper_tiles(batch_pk, needed))
                node, proof = walk(get, tree_pos)
            if tree_pos and node != expected:
                raise InvalidProof("the stored leaf is not this card's")
            if process_proof(expected, proof) != root:
                raise InvalidProof("the proof does not reach the root")
        except (InvalidProof, MissingTile):
            raise StoreCorrupt(corrupt) from None
        return CardRecord(serial=format_serial(leaf.serial), index=index, leaf=leaf, proof=proof, batch=batch,
                          leaf_hash=expected, proven_root=root)

    def _batch(self, batch_pk: int) -> tuple[BatchRecord, bytes, bytes, bytes]:
        found = self._batches.get(batch_pk)
        if found is None:
            from verify_api.lookup import _batch_record

            with self.engine.connect() as conn:
                b = conn.execute(select(PubBatch.__table__).where(PubBatch.__table__.c.id == batch_pk)).one()
            rec = _batch_record(b)
            found = (rec, bytes.fromhex(rec.batch_id[2:]), sku_to_bytes32(rec.sku), bytes.fromhex(rec.root[2:]))
            self._load_upper_tiles(batch_pk, rec.card_count)
            with self._lock:
                self._batches[batch_pk] = found
        return found

    def _load_upper_tiles(self, batch_pk: int, card_count: int) -> None:
        """Cache, in one query, every tile above the shallowest leaf's tile: the tiles all of the batch's proofs
        share (1,057 tiles, about 2 MiB, for a million cards)."""
        if card_count < 2:
            return
        shallowest = depth(card_count - 1)  # the first leaf position, n - 1
        below = ((shallowest - 1) // TILE_HEIGHT) * TILE_HEIGHT  # root depth of the shallowest leaf's tile
        if below == 0:
            return
        table = PubTile.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(select(table.c.tile, table.c.data).where(
                table.c.batch_pk == batch_pk, table.c.tile < (1 << below) - 1)).all()
        with self._lock:
            if len(self._tiles) + len(rows) > self._tile_cache:
                self._tiles.clear()
            for t, data in rows:
                self._tiles[(batch_pk, int(t))] = bytes(data)

    def _upper_tiles(self, batch_pk: int, wanted: set[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        missing = []
        for t in wanted:
            data = self._tiles.get((batch_pk, t))
            if data is None:
                missing.append(t)
            else:
                out[t] = data
        if missing:
            table = PubTile.__table__
            with self.engine.connect() as conn:
                rows = conn.execute(select(table.c.tile, table.c.data).where(
                    table.c.batch_pk == batch_pk, table.c.tile.in_(sorted(missing)))).all()
            with self._lock:
                if len(self._tiles) + len(rows) > self._tile_cache:
                    self._tiles.clear()
                for t, data in rows:
                    out[int(t)] = self._tiles[(batch_pk, int(t))] = bytes(data)
        return out

    def _pick_decoy(self) -> tuple | None:
        """A real published card (read once), whose leaf tile an unknown serial's query reads."""
        c = PubCard.__table__
        with self.engine.connect() as conn:
            row = conn.execute(select(c.c.batch_pk, c.c.tile, c.c.tree_pos, c.c.index, c.c.code_commitment,
                                      c.c.serial).limit(1)).first()
        if row is None:
            return None
        self._decoy = (int(row[0]), None if row[1] is None else int(row[1]), int(row[2]), int(row[3]),
                       bytes(row[4]), row[5])
        return self._decoy

    def decoy_serial(self) -> str | None:
        decoy = self._decoy or self._pick_decoy()
        return None if decoy is None else decoy[5]

    def forget(self) -> None:
        """Forget the decoy and the cached batches and tiles (after a publish: there may be cards now where
        there were none, and a squatting batch may be gone)."""
        with self._lock:
            self._decoy = None
            self._batches.clear()
            self._tiles.clear()
