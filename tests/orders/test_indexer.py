"""The event indexer on both chain backends (eth-tester and anvil) and both databases (SQLite, PostgreSQL):
what it stores, confirmations, resuming after a restart without duplicates, reorgs rolled back, races
between two indexers, contracts followed late."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from chain.artifacts import load_artifact
from verify_api.indexer import Followed, Indexer, _LostRace, read_logs
from verify_api.storage.index_models import ChainEventRow, IndexCursor, IndexedBlock
from tests.escrow.world import PRICE
from tests.orders.conftest import followed, make_indexer


def rows(sessions, **where) -> list[ChainEventRow]:
    with sessions() as s:
        q = sa.select(ChainEventRow).order_by(ChainEventRow.block_number, ChainEventRow.log_index)
        for k, v in where.items():
            q = q.where(getattr(ChainEventRow, k) == v)
        return list(s.execute(q).scalars())


def cursor(sessions, chain_id: int) -> IndexCursor:
    with sessions() as s:
        return s.get(IndexCursor, chain_id)


def block_hash(env, number: int) -> str:
    return env.admin.w3.eth.get_block(number)["hash"].to_0x_hex()


def assert_no_duplicates(sessions) -> None:
    all_rows = rows(sessions)
    assert len({(r.chain_id, r.tx_hash, r.log_index) for r in all_rows}) == len(all_rows)


def test_indexes_an_order_life_cycle(world, sessions):
    env = world.env
    order_id, batch_id, _ = world.delivered_order(quantity=3)
    world.escrow("buyer").confirm(order_id)
    indexer = make_indexer(world, sessions)
    report = indexer.run_once()
    head = env.admin.block_number()
    assert report.cursor == head == report.target and report.reorg is None and report.events > 0

    order_rows = rows(sessions, order_id=order_id, address=world.escrow_address)
    assert [r.event for r in order_rows] == ["OrderOpened", "OrderDelivered", "OrderConfirmed"]
    opened, delivered, confirmed = order_rows
    assert {r.contract for r in order_rows} == {"CardEscrow"}
    args = json.loads(opened.args)
    assert args["quantity"] == 3 and args["unitPrice"] == PRICE and args["amount"] == 3 * PRICE
    assert args["buyer"] == world.addr("buyer") and args["productId"] == 1
    assert delivered.batch_id == "0x" + batch_id.hex()
    assert json.loads(delivered.args)["ranges"] == [{"start": 0, "length": 3}]
    assert json.loads(confirmed.args)["supplierAmount"] > 0
    for r in order_rows:
        assert r.chain_id == env.admin.chain_id
        assert r.block_hash == block_hash(env, r.block_number)
        assert r.block_time == env.admin.w3.eth.get_block(r.block_number)["timestamp"]
        assert r.tx_hash.startswith("0x") and len(r.tx_hash) == 66
    anchored = rows(sessions, event="BatchAnchored", batch_id="0x" + batch_id.hex())
    assert len(anchored) == 1 and anchored[0].contract == "CardRegistry" and anchored[0].order_id is None

    cur = cursor(sessions, env.admin.chain_id)
    assert cur.block_number == head and cur.block_hash == block_hash(env, head)
    with sessions() as s:
        blocks = s.execute(sa.select(IndexedBlock.block_number, IndexedBlock.block_hash)
                           .order_by(IndexedBlock.block_number)).all()
    assert blocks[-1] == (head, block_hash(env, head)) and len(blocks) <= 256
    assert all(h == block_hash(env, n) for n, h in blocks[-5:])

    again = indexer.run_once()
    assert again.events == 0 and again.from_block is None
    assert_no_duplicates(sessions)


def test_resumes_after_restart_without_duplicates(world, sessions):
    env = world.env
    first_order = world.open()
    first = make_indexer(world, sessions).run_once()
    before = len(rows(sessions))

    second_order = world.open()
    # A new process: a new indexer over the same database continues from the stored cursor.
    restarted = make_indexer(world, sessions)
    report = restarted.run_once()
    assert report.from_block == first.cursor + 1
    assert report.events == len(rows(sessions)) - before >= 1
    assert [r.order_id for r in rows(sessions, event="OrderOpened")] == [first_order, second_order]
    assert make_indexer(world, sessions).run_once().events == 0
    assert_no_duplicates(sessions)
    assert cursor(sessions, env.admin.chain_id).block_number == env.admin.block_number()


def test_waits_for_confirmations(world, sqlite_sessions):
    env = world.env
    indexer = make_indexer(world, sqlite_sessions, confirmations=3)
    env.mine(5)
    assert indexer.run_once().cursor == env.admin.block_number() - 3
    order_id = world.open()
    opened_at = env.admin.block_number()
    report = indexer.run_once()
    assert report.target == opened_at - 3 and report.cursor == opened_at - 3
    assert rows(sqlite_sessions, order_id=order_id) == []
    env.mine(2)
    assert indexer.run_once().cursor == opened_at - 1
    assert rows(sqlite_sessions, order_id=order_id) == []
    env.mine(1)
    report = indexer.run_once()
    assert report.cursor == opened_at and report.events == 1
    assert [r.event for r in rows(sqlite_sessions, order_id=order_id)] == ["OrderOpened"]


@pytest.mark.parametrize("new_branch_longer", [False, True], ids=["shorter", "longer"])
def test_reorg_rolls_back_orphaned_events(world, sessions, new_branch_longer):
    """Index a branch, revert the chain to a snapshot, mine different transactions, index again."""
    env = world.env
    indexer = make_indexer(world, sessions)
    indexer.run_once()
    fork_point = env.admin.block_number()
    snap = env.snapshot()

    orphan_id = world.open(quantity=4)
    world.open(quantity=1)
    env.mine(2)
    indexer.run_once()
    orphans = rows(sessions, event="OrderOpened")
    assert len(orphans) == 2
    orphan_txs = {r.tx_hash for r in orphans}
    old_head = env.admin.block_number()

    env.revert(snap)
    env.admin._next_nonce = None
    assert env.admin.block_number() == fork_point
    new_id = world.open(quantity=2, unit_price=PRICE * 2)
    if new_branch_longer:
        env.mine(5)
    assert (env.admin.block_number() > old_head) == new_branch_longer

    report = indexer.run_once()
    assert report.reorg is not None
    assert report.reorg.ancestor == fork_point and report.reorg.removed_events == 2
    assert report.reorg.detected_at == old_head
    opened = rows(sessions, event="OrderOpened")
    assert [r.order_id for r in opened] == [new_id] == [orphan_id]  # the same id, another order
    assert json.loads(opened[0].args)["quantity"] == 2
    assert not orphan_txs & {r.tx_hash for r in rows(sessions)}
    head = env.admin.block_number()
    assert cursor(sessions, env.admin.chain_id).block_hash == block_hash(env, head)
    with sessions() as s:
        stored = dict(s.execute(sa.select(IndexedBlock.block_number, IndexedBlock.block_hash)).all())
    assert max(stored) == head
    assert all(block_hash(env, n) == h for n, h in stored.items() if n > fork_point - 3)
    assert indexer.run_once().reorg is None
    assert_no_duplicates(sessions)


def test_a_step_that_lost_the_race_is_rolled_back(world, sqlite_sessions):
    env = world.env
    world.open()
    slow, fast = make_indexer(world, sqlite_sessions), make_indexer(world, sqlite_sessions)
    stale = slow._ensure_cursor()
    fast.run_once()
    count = len(rows(sqlite_sessions))
    head = env.admin.block_number()
    with pytest.raises(_LostRace):
        slow._index_step(stale, stale.block_number + 1, head, head)
    assert len(rows(sqlite_sessions)) == count
    report = slow.run_once()
    assert report.events == 0 and report.cursor == head
    assert_no_duplicates(sqlite_sessions)


def test_a_contract_followed_later_is_backfilled(world, sqlite_sessions):
    env = world.env
    order_id = world.open()
    registry_only = Indexer(env.admin, sqlite_sessions, followed(env, world.escrow_address)[:1])
    registry_only.run_once()
    assert rows(sqlite_sessions, order_id=order_id) == []
    later = world.open()
    both = make_indexer(world, sqlite_sessions)
    report = both.run_once()
    assert report.backfilled >= 1
    assert [r.order_id for r in rows(sqlite_sessions, event="OrderOpened")] == [order_id, later]
    assert set(json.loads(cursor(sqlite_sessions, env.admin.chain_id).contracts)) == {
        env.registry_address, world.escrow_address}
    assert both.run_once().backfilled == 0
    assert_no_duplicates(sqlite_sessions)


def test_read_logs_decodes_tuple_arrays(world):
    """OrderDelivered carries a (uint32,uint32)[]: its topic must be computed from the canonical signature."""
    order_id, _, _ = world.delivered_order(quantity=2, start=5)
    escrow = Followed("CardEscrow", world.escrow_address, load_artifact("CardEscrow").abi)
    head = world.env.admin.block_number()
    events = read_logs(world.env.admin, [escrow], head - 3, head)
    delivered = [e for e in events if e.name == "OrderDelivered"]
    assert len(delivered) == 1 and delivered[0].args["orderId"] == order_id
    assert [dict(r) for r in delivered[0].args["ranges"]] == [{"start": 5, "length": 2}]
