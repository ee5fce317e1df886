"""Reads and writes of the public database. Nothing here ever sees a code, an opening or a key."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator

from typing import Any

from sqlalchemy import String, bindparam, cast, delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from verify_api.storage.models import PubBatch, PubCard, PubMeta, PubTile
from verify_api.storage.tiles import make_tiles, node_from_tiles, tiles_for

__all__ = ["bulk_insert_cards", "card_and_stats", "card_by_serial", "get_or_create_secret", "load_nodes",
           "save_tiles"]

_CARD_COLUMNS = 'serial, batch_pk, "index", code_commitment, tree_pos'


def _conn(session: Session | Connection) -> Connection:
    if isinstance(session, Session):
        session.flush()
        return session.connection()
    return session


def bulk_insert_cards(session: Session | Connection, rows: Iterator[tuple[str, int, int, bytes, int]]) -> int:
    """Insert ``(serial, batch_pk, index, code_commitment, tree_pos)`` rows: executemany on SQLite,
    binary COPY on PostgreSQL, in the caller's transaction."""
    conn = _conn(session)
    dbapi = conn.connection.dbapi_connection
    count = 0
    if conn.dialect.name == "postgresql":
        with dbapi.cursor() as cur:
            with cur.copy(f"COPY pub_cards ({_CARD_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "int4", "int4", "bytea", "int4"])
                for row in rows:
                    copy.write_row(row)
                    count += 1
        return count
    if conn.dialect.name == "sqlite":
        cur = dbapi.cursor()
        try:
            cur.executemany(f"INSERT INTO pub_cards ({_CARD_COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows)
            return max(cur.rowcount, 0)
        finally:
            cur.close()
    keys = ("serial", "batch_pk", "index", "code_commitment", "tree_pos")
    chunk: list[dict] = []
    for row in rows:
        chunk.append(dict(zip(keys, row)))
        if len(chunk) >= 10_000:
            conn.execute(insert(PubCard.__table__), chunk)
            count += len(chunk)
            chunk = []
    if chunk:
        conn.execute(insert(PubCard.__table__), chunk)
        count += len(chunk)
    return count


def save_tiles(session: Session | Connection, batch_pk: int, nodes: bytes) -> int:
    """Store the batch's heap array as tiles, replacing any; returns the number of tiles."""
    conn = _conn(session)
    table = PubTile.__table__
    conn.execute(delete(table).where(table.c.batch_pk == batch_pk))
    rows = [{"batch_pk": batch_pk, "tile": t, "data": data} for t, data in make_tiles(nodes)]
    for i in range(0, len(rows), 1000):
        conn.execute(insert(table), rows[i:i + 1000])
    return len(rows)


def load_nodes(session: Session | Connection, batch_pk: int, positions: Iterable[int]) -> dict[int, bytes]:
    """The nodes at these heap positions (root excluded), reading only their tiles, in one query."""
    wanted = [p for p in set(positions) if p >= 1]
    if not wanted:
        return {}
    wanted_tiles = sorted(tiles_for(wanted))
    tiles = {t: bytes(d) for t, d in _conn(session).execute(
        _tiles_query(len(wanted_tiles)), {"b": batch_pk, **{f"t{i}": t for i, t in enumerate(wanted_tiles)}})}
    out: dict[int, bytes] = {}
    for p in wanted:
        node = node_from_tiles(tiles, p)
        if node is not None:
            out[p] = node
    return out


_TILES_QUERIES: dict[int, Any] = {}


def _tiles_query(n: int) -> Any:
    """``SELECT tile, data ... WHERE batch_pk = :b AND tile IN (:t0 .. :t{n-1})``, built once per ``n`` (a
    proof reads about 4 tiles): plain bound parameters, cheaper to run than an expanding IN."""
    q = _TILES_QUERIES.get(n)
    if q is None:
        t = PubTile.__table__
        q = _TILES_QUERIES[n] = select(t.c.tile, t.c.data).where(
            t.c.batch_pk == bindparam("b"), t.c.tile.in_([bindparam(f"t{i}") for i in range(n)]))
    return q


_CARD_COLS = ("serial", "batch_pk", "index", "code_commitment", "tree_pos")
_BATCH_COLS = ("id", "batch_id", "issuer_address", "sku", "face_value", "currency", "expiry", "code_form",
               "card_count", "root", "chain_id", "registry_address", "anchor_tx", "anchor_block", "anchored_at",
               "published_at")
_STATS_COLS = ("serial", "scans", "checks", "failed_checks", "first_scan_at", "first_check_at")
_CARD_AND_STATS: Any = None


class Row:
    """Plain attributes of a row (what ``lookup`` reads of a card or a batch), detached from any session."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def card_and_stats(session: Session, canon: str) -> tuple[Row | None, Row | None, Row | None]:
    """(card, its batch, the serial's scan counts) in one query and one round trip; each None when absent.

    The query always returns one row (the serial is joined to the cards and to the counts), so a serial
    that is not published costs the same query as one that is, and its counts are read all the same."""
    global _CARD_AND_STATS
    if _CARD_AND_STATS is None:
        from verify_api.models import CardStats

        c, b, st = PubCard.__table__, PubBatch.__table__, CardStats.__table__
        q = select(cast(bindparam("serial"), String).label("q_serial")).subquery("q")
        _CARD_AND_STATS = (
            select(*[c.c[k] for k in _CARD_COLS], *[b.c[k] for k in _BATCH_COLS], *[st.c[k] for k in _STATS_COLS])
            .select_from(q.outerjoin(c, c.c.serial == q.c.q_serial).outerjoin(b, b.c.id == c.c.batch_pk)
                         .outerjoin(st, st.c.serial == q.c.q_serial)))
    row = tuple(_conn(session).execute(_CARD_AND_STATS, {"serial": canon}).one())
    nc, nb = len(_CARD_COLS), len(_BATCH_COLS)
    card = dict(zip(_CARD_COLS, row[:nc]))
    batch = dict(zip(_BATCH_COLS, row[nc:nc + nb]))
    stats = dict(zip(_STATS_COLS, row[nc + nb:]))
    found = card["serial"] is not None and batch["id"] is not None
    return (Row(**card) if found else None, Row(**batch) if found else None,
            Row(**stats) if stats["serial"] is not None else None)


def card_by_serial(session: Session, canon: str) -> tuple[PubCard, PubBatch] | None:
    """The card with this canonical serial and its batch, in one query (None if unknown)."""
    row = session.execute(select(PubCard, PubBatch).join(PubBatch, PubCard.batch_pk == PubBatch.id)
                          .where(PubCard.serial == canon)).first()
    return None if row is None else (row[0], row[1])


def get_or_create_secret(session: Session, key: str, nbytes: int = 32) -> bytes:
    """A random secret of this database (e.g. the key hashing client addresses), made on first use."""
    row = session.get(PubMeta, key)
    if row is None:
        value = secrets.token_bytes(nbytes)
        session.add(PubMeta(key=key, value=value.hex()))
        try:
            session.flush()
        except Exception:  # noqa: BLE001 - made concurrently by another process: read theirs
            session.rollback()
            row = session.get(PubMeta, key)
            if row is None:
                raise
            return bytes.fromhex(row.value)
        return value
    return bytes.fromhex(row.value)
