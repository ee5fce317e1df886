"""Thin data-access functions used by minting, anchoring and the API.

They take a SQLAlchemy ``Session`` (or, for the bulk paths, a ``Connection``)
and never commit: transaction boundaries belong to the caller.  After any
``StorageError`` raised from a write, roll the transaction back.

Concurrency-sensitive writes are single conditional UPDATEs, so they are safe
across processes on both SQLite and PostgreSQL:

* :func:`mark_card_redeemed` – exactly one of many concurrent redemptions wins;
* :func:`set_batch_state` – compare-and-set on the current state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from issuer.errors import (
    BatchNotFound,
    CardNotFound,
    DuplicateCode,
    InvalidBatchState,
    StorageError,
)
from issuer.storage.models import (
    BATCH_STATES,
    NODE_SIZE,
    TREE_CHUNK_NODES,
    Batch,
    Card,
    Deployment,
    Issuer,
    Meta,
    TreeChunk,
    utcnow,
)

__all__ = [
    "CARD_ROW_FIELDS",
    "ALLOWED_TRANSITIONS",
    "normalize_batch_id",
    "db_serial",
    "checksum_address",
    "insert_batch",
    "get_batch",
    "get_batch_by_pk",
    "list_batches",
    "delete_batch",
    "set_batch_state",
    "mark_batch_revoked",
    "bulk_insert_cards",
    "existing_fingerprints",
    "count_cards",
    "get_card",
    "get_card_by_serial",
    "iter_cards",
    "mark_card_redeemed",
    "mark_cards_revoked",
    "save_tree",
    "load_tree",
    "load_tree_nodes",
    "get_deployment",
    "put_deployment",
    "list_deployments",
    "get_issuer",
    "upsert_issuer",
    "get_meta",
    "set_meta",
]

#: Order of the fields of a tuple row given to :func:`bulk_insert_cards`.
CARD_ROW_FIELDS = ("index", "serial", "code_ct", "code_commitment", "code_fingerprint", "tree_pos")

#: (from, to) pairs allowed by :func:`set_batch_state`.
ALLOWED_TRANSITIONS = frozenset(
    {
        ("minted", "anchoring"),
        ("minted", "failed"),
        ("anchoring", "anchored"),
        ("anchoring", "failed"),
        ("failed", "anchoring"),
        # The chain lost the anchor (rollback, reorg, node crash): anchoring again (issuer.anchoring).
        ("anchored", "anchoring"),
    }
)

#: Columns ``set_batch_state`` may update together with the state.
_STATE_FIELDS = frozenset(
    {"chain_id", "registry_address", "anchor_tx", "anchor_block", "anchored_at", "error"}
)

_IN_CHUNK = 5000  # values per IN (...) list; far below SQLite's 32766 parameters


# --------------------------------------------------------------------------- helpers


def _conn(session_or_conn: Session | Connection) -> Connection:
    if isinstance(session_or_conn, Session):
        session_or_conn.flush()
        return session_or_conn.connection()
    return session_or_conn


def normalize_batch_id(batch_id: str | bytes) -> str:
    """``0x`` + 64 lowercase hex chars; raises ``ValueError`` for anything else."""
    if isinstance(batch_id, (bytes, bytearray, memoryview)):
        raw = bytes(batch_id)
        if len(raw) != 32:
            raise ValueError("a batch id is 32 bytes")
        return "0x" + raw.hex()
    if not isinstance(batch_id, str):
        raise ValueError("a batch id is 0x + 64 hex characters")
    text = batch_id.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if len(text) != 64:
        raise ValueError("a batch id is 0x + 64 hex characters")
    try:
        bytes.fromhex(text)
    except ValueError:
        raise ValueError("a batch id is 0x + 64 hex characters") from None
    return "0x" + text


def db_serial(serial: str | int) -> str:
    """The stored form of a serial: 16 Crockford symbols + check symbol, no dashes.

    Accepts what ``issuer.core.serial.parse_serial`` accepts (lower case, dashes,
    spaces, Crockford aliases) or the 80-bit value; raises
    ``issuer.core.errors.InvalidSerial`` (a ``ValueError``) for a malformed or
    mistyped serial.
    """
    from issuer.core.serial import format_serial, parse_serial

    value = serial if isinstance(serial, int) else parse_serial(serial)
    return format_serial(value).replace("-", "")


def checksum_address(address: str) -> str:
    """EIP-55 checksummed form; ``ValueError`` if not a 20-byte hex address."""
    from eth_utils import is_address, to_checksum_address

    if not isinstance(address, str) or not is_address(address):
        raise ValueError("not a valid 0x address")
    return to_checksum_address(address)


def _integrity_message(exc: BaseException) -> tuple[str, str]:
    """(which, one-line message) for a unique violation on cards, without values."""
    orig = getattr(exc, "orig", exc)
    diag = getattr(orig, "diag", None)
    name = (getattr(diag, "constraint_name", None) or "") if diag is not None else ""
    lines = str(orig).splitlines()
    low = (name or (lines[0] if lines else "")).lower()
    if "fingerprint" in low:
        return "fingerprint", "a card's code is already stored (duplicate code)"
    if "serial" in low:
        return "serial", "a card serial is already used; generate new serials"
    if "index" in low:
        return "index", "a card index is already used in this batch"
    if "foreign" in low or "fk_" in low or "batch_pk" in low:
        return "batch", "the batch of these cards does not exist"
    return "other", "the cards violate a database constraint"


# --------------------------------------------------------------------------- batches


def insert_batch(
    session: Session,
    *,
    batch_id: str | bytes,
    issuer_address: str,
    sku: str,
    face_value: int,
    currency: str,
    expiry: int | None,
    card_count: int,
    root: str,
    manifest_hash: str,
    secret_ct: bytes,
    code_form: int = 0,
    state: str = "minted",
    chain_id: int | None = None,
    registry_address: str | None = None,
) -> Batch:
    """Add a batch row and flush it (so ``batch.id`` is set)."""
    if state not in BATCH_STATES:
        raise ValueError(f"unknown batch state {state!r}")
    batch = Batch(
        batch_id=normalize_batch_id(batch_id),
        issuer_address=checksum_address(issuer_address),
        sku=sku,
        face_value=face_value,
        currency=currency,
        expiry=expiry,
        code_form=code_form,
        card_count=card_count,
        root=root,
        manifest_hash=manifest_hash,
        secret_ct=secret_ct,
        state=state,
        chain_id=chain_id,
        registry_address=checksum_address(registry_address) if registry_address else None,
        revoked=False,
    )
    exists = session.scalar(select(Batch.id).where(Batch.batch_id == batch.batch_id))
    if exists is not None:
        raise StorageError(f"batch {batch.batch_id} already exists")
    session.add(batch)
    try:
        session.flush()
    except IntegrityError:
        # Inserted concurrently, or a constraint failed: the caller must roll back.
        raise StorageError(
            f"batch {batch.batch_id} could not be stored (already exists or invalid values)"
        ) from None
    return batch


def get_batch(session: Session, batch_id: str | bytes) -> Batch:
    """The batch with this id (hex string or 32 bytes); :class:`BatchNotFound` if none."""
    try:
        key = normalize_batch_id(batch_id)
    except ValueError:
        raise BatchNotFound(batch_id if isinstance(batch_id, str) else None) from None
    batch = session.scalars(select(Batch).where(Batch.batch_id == key)).one_or_none()
    if batch is None:
        raise BatchNotFound(key)
    return batch


def get_batch_by_pk(session: Session, batch_pk: int) -> Batch:
    batch = session.get(Batch, batch_pk)
    if batch is None:
        raise BatchNotFound(f"#{batch_pk}")
    return batch


def list_batches(
    session: Session,
    *,
    state: str | None = None,
    issuer_address: str | None = None,
    limit: int | None = None,
) -> list[Batch]:
    """Batches, newest first, optionally filtered."""
    q = select(Batch).order_by(Batch.id.desc())
    if state is not None:
        q = q.where(Batch.state == state)
    if issuer_address is not None:
        q = q.where(Batch.issuer_address == checksum_address(issuer_address))
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q))


def delete_batch(session: Session, batch: Batch) -> None:
    """Delete a batch with its cards and tree (only sensible before anchoring)."""
    if batch.state == "anchored":
        raise InvalidBatchState(batch.batch_id, batch.state, detail="anchored batches are kept")
    conn = _conn(session)
    conn.execute(delete(TreeChunk.__table__).where(TreeChunk.__table__.c.batch_pk == batch.id))
    conn.execute(delete(Card.__table__).where(Card.__table__.c.batch_pk == batch.id))
    session.delete(batch)
    session.flush()


def set_batch_state(session: Session, batch: Batch, state: str, **fields: Any) -> Batch:
    """Move ``batch`` to ``state`` (compare-and-set) and update ``fields`` with it.

    Allowed: minted→anchoring→anchored, anchoring→failed, failed→anchoring,
    minted→failed, anchored→anchoring (the chain lost the anchor); anything else raises :class:`InvalidBatchState`, as does a
    batch whose state was changed by someone else since it was loaded.
    ``fields`` may be any of chain_id, registry_address, anchor_tx, anchor_block,
    anchored_at, error.
    """
    unknown = set(fields) - _STATE_FIELDS
    if unknown:
        raise TypeError(f"set_batch_state cannot set {', '.join(sorted(unknown))}")
    if state not in BATCH_STATES:
        raise InvalidBatchState(batch.batch_id, batch.state, state, detail=f"{state!r} is not a state")
    current = batch.state
    if (current, state) not in ALLOWED_TRANSITIONS:
        raise InvalidBatchState(batch.batch_id, current, state)
    if fields.get("registry_address"):
        fields["registry_address"] = checksum_address(fields["registry_address"])
    if fields.get("error") is not None:
        fields["error"] = " ".join(str(fields["error"]).split())[:2000]
    values = {"state": state, "updated_at": utcnow(), **fields}
    result = session.execute(
        update(Batch)
        .where(Batch.id == batch.id, Batch.state == current)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        actual = session.scalar(select(Batch.state).where(Batch.id == batch.id))
        if actual is not None:
            set_committed_value(batch, "state", actual)
        raise InvalidBatchState(
            batch.batch_id, actual or "gone", state, detail=f"it changed while going to {state}"
        )
    for key, value in values.items():
        set_committed_value(batch, key, value)
    return batch


def mark_batch_revoked(session: Session, batch: Batch, reason: int) -> None:
    """Record that the batch was revoked (on chain) with ``reason``."""
    values = {"revoked": True, "revoke_reason": int(reason), "updated_at": utcnow()}
    session.execute(
        update(Batch).where(Batch.id == batch.id).values(**values)
        .execution_options(synchronize_session=False)
    )
    for key, value in values.items():
        set_committed_value(batch, key, value)


# --------------------------------------------------------------------------- cards


def _tuple_rows(batch_pk: int, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> Iterator[tuple]:
    for row in rows:
        if isinstance(row, Mapping):
            yield (
                batch_pk,
                row["index"],
                row["serial"],
                row["code_ct"],
                row["code_commitment"],
                row["code_fingerprint"],
                row["tree_pos"],
            )
        else:
            if len(row) != 6:
                raise ValueError(f"a card row has the 6 fields {CARD_ROW_FIELDS}")
            yield (batch_pk, *row)


def bulk_insert_cards(
    session_or_conn: Session | Connection,
    batch_pk: int,
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
) -> int:
    """Insert many cards of one batch fast; returns the number inserted.

    ``rows`` yields tuples ``(index, serial, code_ct, code_commitment,
    code_fingerprint, tree_pos)`` (:data:`CARD_ROW_FIELDS`) or mappings with those
    keys; it may be a generator.  SQLite: the driver's ``executemany`` on one
    prepared statement; PostgreSQL: binary ``COPY FROM STDIN``.  Both run in the
    caller's transaction.  A duplicate code raises :class:`DuplicateCode` (use
    :func:`existing_fingerprints` beforehand to name the offending CSV lines);
    other violations raise :class:`StorageError`.
    """
    conn = _conn(session_or_conn)
    dialect = conn.dialect.name
    tuples = _tuple_rows(int(batch_pk), rows)
    try:
        if dialect == "postgresql":
            return _copy_cards_pg(conn, tuples)
        if dialect == "sqlite":
            return _executemany_cards_sqlite(conn, tuples)
        return _insert_cards_core(conn, tuples)
    except IntegrityError as exc:
        _raise_card_integrity(exc)
    except Exception as exc:  # raw DB-API errors (sqlite3 / psycopg) from the fast paths
        if _is_integrity_error(exc):
            _raise_card_integrity(exc)
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def _is_integrity_error(exc: BaseException) -> bool:
    return type(exc).__name__ in {"IntegrityError", "UniqueViolation", "ForeignKeyViolation"} or any(
        c.__name__ == "IntegrityError" for c in type(exc).__mro__
    )


def _raise_card_integrity(exc: BaseException) -> None:
    which, message = _integrity_message(exc)
    if which == "fingerprint":
        raise DuplicateCode(None) from None
    raise StorageError(message) from None


_CARD_COLUMNS_SQL = (
    'batch_pk, "index", serial, code_ct, code_commitment, code_fingerprint, tree_pos, revoked'
)


def _executemany_cards_sqlite(conn: Connection, tuples: Iterator[tuple]) -> int:
    dbapi = conn.connection.dbapi_connection
    cur = dbapi.cursor()
    try:
        cur.executemany(
            f"INSERT INTO cards ({_CARD_COLUMNS_SQL}) VALUES (?, ?, ?, ?, ?, ?, ?, 0)", tuples
        )
        return max(cur.rowcount, 0)
    finally:
        cur.close()


def _copy_cards_pg(conn: Connection, tuples: Iterator[tuple]) -> int:
    dbapi = conn.connection.dbapi_connection
    count = 0
    with dbapi.cursor() as cur:
        with cur.copy(f"COPY cards ({_CARD_COLUMNS_SQL}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "int4", "text", "bytea", "bytea", "bytea", "int4", "bool"])
            write = copy.write_row
            for t in tuples:
                write((*t, False))
                count += 1
    return count


def _insert_cards_core(conn: Connection, tuples: Iterator[tuple], chunk: int = 10_000) -> int:
    table = Card.__table__
    keys = ("batch_pk", *CARD_ROW_FIELDS)
    count = 0
    batch: list[dict[str, Any]] = []
    for t in tuples:
        batch.append({**dict(zip(keys, t)), "revoked": False})
        if len(batch) >= chunk:
            conn.execute(insert(table), batch)
            count += len(batch)
            batch = []
    if batch:
        conn.execute(insert(table), batch)
        count += len(batch)
    return count


def existing_fingerprints(session: Session, fingerprints: Iterable[bytes]) -> set[bytes]:
    """Which of these code fingerprints are already stored (any batch)."""
    wanted = list(dict.fromkeys(bytes(f) for f in fingerprints))
    found: set[bytes] = set()
    col = Card.__table__.c.code_fingerprint
    conn = _conn(session)
    for i in range(0, len(wanted), _IN_CHUNK):
        part = wanted[i : i + _IN_CHUNK]
        found.update(bytes(v) for v in conn.scalars(select(col).where(col.in_(part))))
    return found


def count_cards(session: Session, batch_pk: int) -> int:
    return session.scalar(select(func.count()).select_from(Card).where(Card.batch_pk == batch_pk)) or 0


def get_card(session: Session, batch_pk: int, index: int) -> Card:
    card = session.scalars(
        select(Card).where(Card.batch_pk == batch_pk, Card.index == index)
    ).one_or_none()
    if card is None:
        raise CardNotFound(f"#{index}")
    return card


def get_card_by_serial(session: Session, serial: str | int, *, with_batch: bool = True) -> Card:
    """The card with this serial, as typed or as the 80-bit value.

    :class:`CardNotFound` if no card has it; ``issuer.core.errors.InvalidSerial``
    (a ``ValueError``) if it is malformed or its check symbol is wrong.
    """
    key = db_serial(serial)
    q = select(Card).where(Card.serial == key)
    if with_batch:
        q = q.options(joinedload(Card.batch))
    card = session.scalars(q).one_or_none()
    if card is None:
        raise CardNotFound(key)
    return card


def iter_cards(session: Session, batch_pk: int, *, chunk: int = 10_000) -> Iterator[Card]:
    """All cards of a batch ordered by index, loaded ``chunk`` at a time."""
    last = -1
    while True:
        page = list(
            session.scalars(
                select(Card)
                .where(Card.batch_pk == batch_pk, Card.index > last)
                .order_by(Card.index)
                .limit(chunk)
            )
        )
        if not page:
            return
        yield from page
        last = page[-1].index
        if len(page) < chunk:
            return


def mark_card_redeemed(
    session: Session, card_id: int, by: str | None, *, at: dt.datetime | None = None
) -> bool:
    """Redeem the card if it is neither redeemed nor revoked; True if this call won.

    One conditional ``UPDATE ... WHERE id = :id AND redeemed_at IS NULL AND NOT
    revoked``: of concurrent callers exactly one sees a row updated (PostgreSQL
    re-checks the WHERE after waiting on the row lock; SQLite serializes
    writers).  Commit promptly after a True to release the write lock.
    """
    when = at or utcnow()
    table = Card.__table__
    result = _conn(session).execute(
        update(table)
        .where(table.c.id == card_id, table.c.redeemed_at.is_(None), table.c.revoked.is_(False))
        .values(redeemed_at=when, redeemed_by=by)
    )
    won = result.rowcount == 1
    if won:
        card = (
            session.identity_map.get(session.identity_key(Card, card_id))
            if isinstance(session, Session)
            else None
        )
        if card is not None:
            set_committed_value(card, "redeemed_at", when)
            set_committed_value(card, "redeemed_by", by)
    return won


def mark_cards_revoked(
    session: Session, batch_pk: int, indexes: Iterable[int] | None, reason: int
) -> int:
    """Revoke cards of a batch (all of them when ``indexes`` is None); returns how many changed."""
    table = Card.__table__
    base = (
        update(table)
        .where(table.c.batch_pk == batch_pk, table.c.revoked.is_(False))
        .values(revoked=True, revoke_reason=int(reason))
    )
    conn = _conn(session)
    if indexes is None:
        changed = conn.execute(base).rowcount
    else:
        wanted = sorted(set(int(i) for i in indexes))
        changed = 0
        for i in range(0, len(wanted), _IN_CHUNK):
            part = wanted[i : i + _IN_CHUNK]
            changed += conn.execute(base.where(table.c.index.in_(part))).rowcount
    if isinstance(session, Session):
        # Cards already loaded in this session must not keep stale flags.
        for obj in list(session.identity_map.values()):
            if isinstance(obj, Card) and obj.batch_pk == batch_pk:
                session.expire(obj, ["revoked", "revoke_reason"])
    return changed


# --------------------------------------------------------------------------- Merkle tree


def save_tree(session: Session | Connection, batch_pk: int, nodes: bytes) -> int:
    """Store a batch's Merkle heap array (``2n-1`` nodes of 32 bytes), replacing any.

    Returns the number of chunks written.
    """
    data = memoryview(nodes).cast("B")
    if len(data) == 0 or len(data) % NODE_SIZE:
        raise ValueError("the tree must be a non-empty multiple of 32 bytes")
    step = TREE_CHUNK_NODES * NODE_SIZE
    table = TreeChunk.__table__
    conn = _conn(session)
    conn.execute(delete(table).where(table.c.batch_pk == batch_pk))
    rows = [
        {"batch_pk": batch_pk, "chunk_no": n, "data": bytes(data[off : off + step])}
        for n, off in enumerate(range(0, len(data), step))
    ]
    for i in range(0, len(rows), 500):
        conn.execute(insert(table), rows[i : i + 500])
    return len(rows)


def load_tree_nodes(
    session: Session | Connection, batch_pk: int, positions: Iterable[int]
) -> dict[int, bytes]:
    """The nodes at these heap positions, reading only their chunks, in one query."""
    wanted = sorted(set(int(p) for p in positions))
    if not wanted:
        return {}
    if wanted[0] < 0:
        raise StorageError(f"tree position {wanted[0]} is out of range")
    chunk_nos = sorted({p // TREE_CHUNK_NODES for p in wanted})
    table = TreeChunk.__table__
    conn = _conn(session)
    chunks = {
        no: bytes(data)
        for no, data in conn.execute(
            select(table.c.chunk_no, table.c.data).where(
                table.c.batch_pk == batch_pk, table.c.chunk_no.in_(chunk_nos)
            )
        )
    }
    out: dict[int, bytes] = {}
    for p in wanted:
        chunk = chunks.get(p // TREE_CHUNK_NODES)
        off = (p % TREE_CHUNK_NODES) * NODE_SIZE
        if chunk is None or off + NODE_SIZE > len(chunk):
            raise StorageError(f"tree position {p} is out of range for batch #{batch_pk}")
        out[p] = chunk[off : off + NODE_SIZE]
    return out


def load_tree(session: Session | Connection, batch_pk: int) -> bytes:
    """The whole heap array of a batch (``b""`` if none stored)."""
    table = TreeChunk.__table__
    rows = _conn(session).execute(
        select(table.c.data).where(table.c.batch_pk == batch_pk).order_by(table.c.chunk_no)
    )
    return b"".join(bytes(r[0]) for r in rows)


# --------------------------------------------------------------------------- deployments


def get_deployment(session: Session, chain_id: int, name: str = "CardRegistry") -> Deployment | None:
    return session.scalars(
        select(Deployment).where(Deployment.chain_id == chain_id, Deployment.name == name)
    ).one_or_none()


def put_deployment(
    session: Session,
    *,
    chain_id: int,
    name: str,
    address: str,
    block_number: int | None = None,
    tx_hash: str | None = None,
    deployer: str | None = None,
) -> Deployment:
    """Record (or replace) the deployment of contract ``name`` on ``chain_id``."""
    dep = get_deployment(session, chain_id, name)
    if dep is None:
        dep = Deployment(chain_id=chain_id, name=name)
        session.add(dep)
    dep.address = checksum_address(address)
    dep.block_number = block_number
    dep.tx_hash = tx_hash.lower() if tx_hash else None
    dep.deployer = checksum_address(deployer) if deployer else None
    dep.created_at = utcnow()
    session.flush()
    return dep


def list_deployments(session: Session, chain_id: int | None = None) -> list[Deployment]:
    q = select(Deployment).order_by(Deployment.chain_id, Deployment.name)
    if chain_id is not None:
        q = q.where(Deployment.chain_id == chain_id)
    return list(session.scalars(q))


# --------------------------------------------------------------------------- issuers


def get_issuer(session: Session, address: str) -> Issuer | None:
    return session.scalars(
        select(Issuer).where(Issuer.address == checksum_address(address))
    ).one_or_none()


def upsert_issuer(session: Session, address: str, name: str | None = None) -> Issuer:
    """The issuer with this address, created if new; ``name`` updates it when given."""
    issuer = get_issuer(session, address)
    if issuer is None:
        issuer = Issuer(address=checksum_address(address), name=name or "")
        session.add(issuer)
        try:
            session.flush()
        except IntegrityError:  # created concurrently: the caller must roll back and retry
            raise StorageError(f"issuer {issuer.address} was recorded concurrently; retry") from None
    if name is not None and issuer.name != name:
        issuer.name = name
        session.flush()
    return issuer


# --------------------------------------------------------------------------- meta


def get_meta(session: Session, key: str, default: str | None = None) -> str | None:
    row = session.get(Meta, key)
    return row.value if row is not None else default


def set_meta(session: Session, key: str, value: str) -> None:
    row = session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value=value))
    else:
        row.value = value
    session.flush()
