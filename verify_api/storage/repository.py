"""Reads and writes of the public database. Nothing here ever sees a code, an opening or a key."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from verify_api.storage.models import PubCard, PubMeta, PubTile
from verify_api.storage.tiles import make_tiles

__all__ = ["bulk_insert_cards", "get_or_create_secret", "save_tiles"]

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


def get_or_create_secret(session: Session, key: str, nbytes: int = 32) -> bytes:
    """A random secret of this database (e.g. the key hashing client addresses), made on first use.

    Workers starting together may all find it missing: each offers one with INSERT ... ON CONFLICT DO NOTHING (which
    on PostgreSQL waits for a concurrent insert to commit) and then reads the one stored, so all agree on it and
    none fails (a plain INSERT lost the race with a unique violation, and the worker with it)."""
    row = session.get(PubMeta, key)
    if row is not None:
        return bytes.fromhex(row.value)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    offered = secrets.token_bytes(nbytes).hex()
    session.execute(dialect_insert(PubMeta).values(key=key, value=offered)
                    .on_conflict_do_nothing(index_elements=["key"]))
    stored = session.execute(select(PubMeta.value).where(PubMeta.key == key)
                             .execution_options(populate_existing=True)).scalar_one()
    return bytes.fromhex(stored)
