"""Reads and writes of the public database. Nothing here ever sees a code, an opening or a key."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator

from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from verify_api.storage.models import PubBatch, PubCard, PubMeta, PubTile
from verify_api.storage.tiles import make_tiles, node_from_tiles, tiles_for

__all__ = ["bulk_insert_cards", "card_by_serial", "get_or_create_secret", "load_nodes",
           "save_tiles"]

_CARD_COLUMNS = 'serial, batch_pk, "index", code_commitment, tree_pos, tile'


def _conn(session: Session | Connection) -> Connection:
    if isinstance(session, Session):
        session.flush()
        return session.connection()
    return session


def bulk_insert_cards(session: Session | Connection,
                      rows: Iterator[tuple[str, int, int, bytes, int, int | None]]) -> int:
    """Insert ``(serial, batch_pk, index, code_commitment, tree_pos, tile)`` rows: executemany on SQLite,
    binary COPY on PostgreSQL, in the caller's transaction."""
    conn = _conn(session)
    dbapi = conn.connection.dbapi_connection
    count = 0
    if conn.dialect.name == "postgresql":
        with dbapi.cursor() as cur:
            with cur.copy(f"COPY pub_cards ({_CARD_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "int4", "int4", "bytea", "int4", "int8"])
                for row in rows:
                    copy.write_row(row)
                    count += 1
        return count
    if conn.dialect.name == "sqlite":
        cur = dbapi.cursor()
        try:
            cur.executemany(f"INSERT INTO pub_cards ({_CARD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows)
            return max(cur.rowcount, 0)
        finally:
            cur.close()
    keys = ("serial", "batch_pk", "index", "code_commitment", "tree_pos", "tile")
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
