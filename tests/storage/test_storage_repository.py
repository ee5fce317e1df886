"""Repository functions on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from issuer.core.errors import InvalidSerial
from issuer.core.serial import format_serial, new_serial_value, parse_serial
from issuer.errors import BatchNotFound, CardNotFound, DuplicateCode, InvalidBatchState, StorageError
from issuer.storage import repository as repo
from issuer.storage.db import make_engine, session_factory, upgrade
from issuer.storage.models import BATCH_STATES, NODE_SIZE, TREE_CHUNK_NODES, Batch, Card

ISSUER = "0x" + "ab" * 20


def new_batch(session, n=0, **kw):
    values = dict(
        batch_id=bytes.fromhex(ISSUER[2:]) + os.urandom(12),
        issuer_address=ISSUER,
        sku="STEAM-50",
        face_value=5000,
        currency="USD",
        expiry=1_900_000_000,
        card_count=n,
        root="0x" + "11" * 32,
        manifest_hash="0x" + "22" * 32,
        secret_ct=b"\x01" + os.urandom(60),
    )
    values.update(kw)
    return repo.insert_batch(session, **values)


def serial() -> str:
    return repo.db_serial(new_serial_value())


def card_rows(n, start=0):
    """n random card rows (tuples in CARD_ROW_FIELDS order), built fast."""
    blob = os.urandom(109 * n)
    rows = []
    for k, i in enumerate(range(start, start + n)):
        b = blob[109 * k:109 * (k + 1)]
        rows.append((i, serial(), b[:45], b[45:77], b[77:], n - 1 + i))
    return rows


def count_queries(engine):
    statements: list[str] = []

    def before(conn, cursor, statement, params, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    return statements, lambda: event.remove(engine, "before_cursor_execute", before)


# --------------------------------------------------------------------------- batches


def test_batch_round_trip(Session):
    with Session() as s:
        b = new_batch(s, n=3, chain_id=31337, registry_address="0x" + "cd" * 20)
        batch_id = b.batch_id
        s.commit()
    with Session() as s:
        got = repo.get_batch(s, batch_id)
        assert got.batch_id == batch_id and len(got.batch_id) == 66
        assert got.issuer_address == repo.checksum_address(ISSUER)
        assert (got.sku, got.face_value, got.currency, got.expiry) == ("STEAM-50", 5000, "USD", 1_900_000_000)
        assert (got.card_count, got.state, got.revoked, got.chain_id) == (3, "minted", False, 31337)
        assert got.registry_address == repo.checksum_address("0x" + "cd" * 20)
        assert got.created_at.tzinfo is not None and got.updated_at.tzinfo is not None
        assert got.anchored_at is None and got.error is None
        # bytes id and upper-case hex find it too
        assert repo.get_batch(s, bytes.fromhex(batch_id[2:])).id == got.id
        assert repo.get_batch(s, batch_id.upper().replace("0X", "0x")).id == got.id
        assert got.batch_id_bytes == bytes.fromhex(batch_id[2:])
        assert [b.id for b in repo.list_batches(s, state="minted", issuer_address=ISSUER)] == [got.id]


def test_batch_not_found(Session):
    with Session() as s:
        with pytest.raises(BatchNotFound) as ei:
            repo.get_batch(s, "0x" + "00" * 32)
        assert isinstance(ei.value, LookupError)
        with pytest.raises(BatchNotFound):
            repo.get_batch(s, "not-a-batch-id")
        with pytest.raises(BatchNotFound):
            repo.get_batch_by_pk(s, 12345)


def test_duplicate_batch(Session):
    with Session() as s:
        b = new_batch(s)
        s.commit()
        with pytest.raises(StorageError, match="already exists"):
            new_batch(s, batch_id=b.batch_id)


def test_state_check_constraint(Session):
    with Session() as s:
        b = new_batch(s)
        s.commit()
        with pytest.raises(sa.exc.IntegrityError):
            s.execute(sa.update(Batch).where(Batch.id == b.id).values(state="bogus"))
        s.rollback()


# --------------------------------------------------------------------------- state machine

ALLOWED = {("minted", "anchoring"), ("anchoring", "anchored"), ("anchoring", "failed"),
           ("failed", "anchoring"), ("minted", "failed"),
           ("anchored", "anchoring")}  # the chain lost the anchor: anchoring again
PATH_TO = {"minted": [], "anchoring": ["anchoring"], "failed": ["failed"],
           "anchored": ["anchoring", "anchored"]}


@pytest.mark.parametrize("src", BATCH_STATES)
@pytest.mark.parametrize("dst", BATCH_STATES)
def test_state_transitions(Session, src, dst):
    with Session() as s:
        b = new_batch(s)
        for step in PATH_TO[src]:
            repo.set_batch_state(s, b, step)
        assert b.state == src
        if (src, dst) in ALLOWED:
            repo.set_batch_state(s, b, dst)
            assert b.state == dst
            s.commit()
            s.expire_all()
            assert repo.get_batch(s, b.batch_id).state == dst
        else:
            with pytest.raises(InvalidBatchState):
                repo.set_batch_state(s, b, dst)
            assert b.state == src


def test_state_fields_and_unknown_state(Session):
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with Session() as s:
        b = new_batch(s)
        repo.set_batch_state(s, b, "anchoring", chain_id=31337, registry_address="0x" + "ef" * 20)
        repo.set_batch_state(s, b, "failed", error="boom\nsecond line")
        repo.set_batch_state(s, b, "anchoring", error=None)
        repo.set_batch_state(s, b, "anchored", anchor_tx="0x" + "aa" * 32, anchor_block=12,
                             anchored_at=now)
        with pytest.raises(InvalidBatchState):
            repo.set_batch_state(s, b, "exploded")
        with pytest.raises(TypeError):
            repo.set_batch_state(s, b, "failed", sku="X")
        s.commit()
    with Session() as s:
        got = repo.get_batch(s, b.batch_id)
        assert (got.state, got.anchor_tx, got.anchor_block, got.chain_id) == (
            "anchored", "0x" + "aa" * 32, 12, 31337)
        assert got.anchored_at == now and got.anchored_at.tzinfo is not None
        assert got.error is None


def test_state_change_is_compare_and_set(Session):
    with Session() as s:
        b = new_batch(s)
        s.commit()
    s1, s2 = Session(), Session()
    try:
        b1 = repo.get_batch(s1, b.batch_id)
        b2 = repo.get_batch(s2, b.batch_id)
        repo.set_batch_state(s1, b1, "anchoring")
        s1.commit()
        with pytest.raises(InvalidBatchState, match="changed"):
            repo.set_batch_state(s2, b2, "anchoring")  # b2 still thinks "minted"
        assert b2.state == "anchoring"
    finally:
        s1.close(), s2.close()


def test_batch_revoked_and_delete(Session):
    with Session() as s:
        b = new_batch(s, n=2)
        repo.bulk_insert_cards(s, b.id, card_rows(2))
        repo.save_tree(s, b.id, os.urandom(3 * NODE_SIZE))
        repo.mark_batch_revoked(s, b, 3)
        s.commit()
        assert repo.get_batch(s, b.batch_id).revoked is True
        repo.delete_batch(s, b)
        s.commit()
        with pytest.raises(BatchNotFound):
            repo.get_batch(s, b.batch_id)
        assert s.scalar(sa.select(sa.func.count()).select_from(Card)) == 0


# --------------------------------------------------------------------------- cards


def test_bulk_insert_and_lookup(Session):
    with Session() as s:
        b = new_batch(s, n=5)
        rows = card_rows(5)
        # tuples for 3 of them, mappings for the rest, from a generator
        mixed = [*rows[:3], *(dict(zip(repo.CARD_ROW_FIELDS, r)) for r in rows[3:])]
        assert repo.bulk_insert_cards(s, b.id, (r for r in mixed)) == 5
        s.commit()
    with Session() as s:
        assert repo.count_cards(s, b.id) == 5
        idx, ser, ct, com, fp, pos = rows[4]
        pretty = "-".join(ser[i:i + 4] for i in range(0, 17, 4)).lower()
        card = repo.get_card_by_serial(s, pretty)
        value = parse_serial(ser)
        assert repo.get_card_by_serial(s, value).id == card.id  # the 80-bit value
        assert repo.get_card_by_serial(s, format_serial(value)).id == card.id  # display form
        assert (card.index, card.serial, card.code_ct, card.code_commitment, card.code_fingerprint,
                card.tree_pos) == (idx, ser, ct, com, fp, pos)
        assert card.revoked is False and card.redeemed_at is None
        assert card.batch.batch_id == b.batch_id
        assert repo.get_card(s, b.id, 2).serial == rows[2][1]
        assert [c.index for c in repo.iter_cards(s, b.id, chunk=2)] == [0, 1, 2, 3, 4]
        assert repo.existing_fingerprints(s, [rows[0][4], b"\0" * 32]) == {rows[0][4]}
        with pytest.raises(CardNotFound) as ei:
            repo.get_card_by_serial(s, serial())
        assert isinstance(ei.value, LookupError)
        with pytest.raises(InvalidSerial):
            repo.get_card_by_serial(s, "ZZZZ-ZZZZ")
        with pytest.raises(InvalidSerial):  # one symbol mistyped: the check symbol catches it
            repo.get_card_by_serial(s, ("1" if ser[0] != "1" else "2") + ser[1:])
        with pytest.raises(CardNotFound):
            repo.get_card(s, b.id, 99)
        assert ct.hex() not in repr(card) and str(ct) not in repr(card)


def test_duplicate_code_across_batches(Session):
    with Session() as s:
        b1 = new_batch(s, n=2)
        rows = card_rows(2)
        repo.bulk_insert_cards(s, b1.id, rows)
        s.commit()
        b2 = new_batch(s, n=1)
        b2_id = b2.batch_id
        dup = (0, serial(), os.urandom(45), os.urandom(32), rows[1][4], 0)
        with pytest.raises(DuplicateCode) as ei:
            repo.bulk_insert_cards(s, b2.id, [dup])
        assert isinstance(ei.value, ValueError)
        s.rollback()
        # duplicate serial is a StorageError, not a DuplicateCode
        b3 = new_batch(s, n=1)
        dup_serial = (0, rows[0][1], os.urandom(45), os.urandom(32), os.urandom(32), 0)
        with pytest.raises(StorageError, match="serial") as ei:
            repo.bulk_insert_cards(s, b3.id, [dup_serial])
        assert not isinstance(ei.value, DuplicateCode)
        s.rollback()
        with pytest.raises(BatchNotFound):
            repo.get_batch(s, b2_id)
        assert repo.count_cards(s, b1.id) == 2


def test_bulk_insert_on_connection(engine):
    with engine.begin() as conn:
        conn.execute(sa.insert(Batch), [dict(
            batch_id="0x" + "99" * 32, issuer_address=repo.checksum_address(ISSUER), sku="X",
            face_value=1, currency="EUR", expiry=None, card_count=3, root="0x" + "0" * 64,
            manifest_hash="0x" + "0" * 64, state="minted", secret_ct=b"x", revoked=False)])
        pk = conn.scalar(sa.select(Batch.id))
        assert repo.bulk_insert_cards(conn, pk, card_rows(3)) == 3
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(Card)) == 3


def test_redeem_once_and_not_revoked(Session):
    with Session() as s:
        b = new_batch(s, n=3)
        rows = card_rows(3)
        repo.bulk_insert_cards(s, b.id, rows)
        s.commit()
        c0 = repo.get_card(s, b.id, 0)
        c1 = repo.get_card(s, b.id, 1)
        assert repo.mark_card_redeemed(s, c0.id, "alice") is True
        assert c0.redeemed_by == "alice" and c0.redeemed_at is not None
        assert repo.mark_card_redeemed(s, c0.id, "bob") is False
        assert repo.mark_cards_revoked(s, b.id, [1, 2], reason=7) == 2
        assert repo.mark_cards_revoked(s, b.id, [1], reason=7) == 0  # already
        assert c1.revoked is True and c1.revoke_reason == 7  # expired, reloaded
        assert repo.mark_card_redeemed(s, c1.id, "carol") is False
        s.commit()
    with Session() as s:
        got = repo.get_card(s, b.id, 0)
        assert got.redeemed_by == "alice" and got.redeemed_at.tzinfo is not None
        assert repo.mark_cards_revoked(s, b.id, None, reason=1) == 1  # card 0 only left


@pytest.mark.parametrize("read_first", [False, True], ids=["update-only", "read-then-update"])
def test_concurrent_redemption_exactly_one_wins(Session, read_first):
    with Session() as s:
        b = new_batch(s, n=1)
        rows = card_rows(1)
        repo.bulk_insert_cards(s, b.id, rows)
        s.commit()
        card_id = repo.get_card(s, b.id, 0).id
    n = 20
    barrier = threading.Barrier(n)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        try:
            with Session() as s:
                if read_first:  # as the API would: look the card up, then redeem
                    card = repo.get_card_by_serial(s, rows[0][1])
                    assert card.redeemed_at is None
                barrier.wait(timeout=30)
                won = repo.mark_card_redeemed(s, card_id, f"worker-{i}")
                s.commit()
            with lock:
                results.append(won)
        except BaseException as exc:  # noqa: BLE001
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(results) == n
    assert results.count(True) == 1
    with Session() as s:
        card = repo.get_card(s, b.id, 0)
        assert card.redeemed_by.startswith("worker-")


# --------------------------------------------------------------------------- tree


@pytest.mark.parametrize("leaves", [1, 2, 1024, 2500])
def test_tree_chunks_round_trip(Session, engine, leaves):
    node_count = 2 * leaves - 1
    nodes = hashlib.shake_256(str(leaves).encode()).digest(node_count * NODE_SIZE)
    with Session() as s:
        b = new_batch(s, n=leaves)
        chunks = repo.save_tree(s, b.id, nodes)
        assert chunks == -(-node_count // TREE_CHUNK_NODES)
        s.commit()
    rng = secrets.SystemRandom()
    positions = {0, node_count - 1, *(rng.randrange(node_count) for _ in range(30))}
    if node_count > TREE_CHUNK_NODES:
        positions |= {TREE_CHUNK_NODES - 1, TREE_CHUNK_NODES}
    with Session() as s:
        statements, stop = count_queries(engine)
        try:
            got = repo.load_tree_nodes(s, b.id, sorted(positions))
        finally:
            stop()
        assert len(statements) == 1  # one query, whatever the number of chunks
        assert got == {p: nodes[p * NODE_SIZE:(p + 1) * NODE_SIZE] for p in positions}
        assert repo.load_tree(s, b.id) == nodes
        with pytest.raises(StorageError):
            repo.load_tree_nodes(s, b.id, [node_count])
        assert repo.load_tree_nodes(s, b.id, []) == {}


def test_tree_save_replaces_and_validates(Session):
    with Session() as s:
        b = new_batch(s, n=2)
        repo.save_tree(s, b.id, b"\x01" * (3000 * NODE_SIZE))
        repo.save_tree(s, b.id, b"\x02" * (3 * NODE_SIZE))
        s.commit()
        assert repo.load_tree(s, b.id) == b"\x02" * (3 * NODE_SIZE)
        with pytest.raises(ValueError):
            repo.save_tree(s, b.id, b"\x00" * 33)


# --------------------------------------------------------------------------- deployments, issuers, meta


def test_deployments(Session):
    with Session() as s:
        assert repo.get_deployment(s, 31337, "CardRegistry") is None
        repo.put_deployment(s, chain_id=31337, name="CardRegistry", address="0x" + "12" * 20,
                            block_number=5, tx_hash="0x" + "AB" * 32, deployer="0x" + "34" * 20)
        s.commit()
        repo.put_deployment(s, chain_id=31337, name="CardRegistry", address="0x" + "56" * 20,
                            block_number=9)
        repo.put_deployment(s, chain_id=1, name="CardRegistry", address="0x" + "78" * 20)
        s.commit()
    with Session() as s:
        d = repo.get_deployment(s, 31337)
        assert d.address == repo.checksum_address("0x" + "56" * 20)
        assert d.block_number == 9 and d.tx_hash is None
        assert [x.chain_id for x in repo.list_deployments(s)] == [1, 31337]


def test_issuers(Session):
    with Session() as s:
        i = repo.upsert_issuer(s, ISSUER.lower(), "Acme")
        s.commit()
        assert i.address == repo.checksum_address(ISSUER)
        again = repo.upsert_issuer(s, ISSUER.upper().replace("0X", "0x"))
        assert again.id == i.id and again.name == "Acme"
        repo.upsert_issuer(s, ISSUER, "Acme Ltd")
        s.commit()
        assert repo.get_issuer(s, ISSUER).name == "Acme Ltd"
        assert repo.get_issuer(s, "0x" + "00" * 20) is None
        with pytest.raises(ValueError):
            repo.upsert_issuer(s, "0x1234")


def test_meta(Session):
    with Session() as s:
        assert repo.get_meta(s, "master_key_id") is None
        assert repo.get_meta(s, "master_key_id", "x") == "x"
        repo.set_meta(s, "master_key_id", "abc")
        repo.set_meta(s, "master_key_id", "def")
        s.commit()
        assert repo.get_meta(s, "master_key_id") == "def"


# --------------------------------------------------------------------------- speed


def test_bulk_insert_speed(db_url, backend, capsys):
    n = 200_000
    rows = card_rows(n)
    engine = make_engine(db_url)
    upgrade(engine)
    Session = session_factory(engine)  # noqa: N806
    with Session() as s:
        b = new_batch(s, n=n)
        t0 = time.perf_counter()
        assert repo.bulk_insert_cards(s, b.id, rows) == n
        s.commit()
        elapsed = time.perf_counter() - t0
        assert repo.count_cards(s, b.id) == n
    engine.dispose()
    with capsys.disabled():
        print(f"\n[bulk_insert_cards] {backend}: {n:,} rows in {elapsed:.2f} s = {n / elapsed:,.0f} rows/s")
