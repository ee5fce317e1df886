"""The supplier's node in this process, on anvil (tests/node/conftest.py): picks from the right batches, never a
partial delivery, out of stock then filled, many orders at once with no card given twice, low stock once, a reorg
that removes an order."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from chain.escrow import OrderStatus
from issuer.node import runner as node_runner
from issuer.node.config import NodeConfigError, load_config
from issuer.node.stock import choose, runs
from issuer.storage.models import ChainAct, NodeOrder, SealedDelivery
from tests.node.conftest import assert_disjoint, delivered_cards, open_orders

pytestmark = pytest.mark.anvil


def rows(sw) -> dict[int, NodeOrder]:
    with sw.sessions() as s:
        return {int(r.order_id): r for r in s.scalars(sa.select(NodeOrder))}


def deliver_acts(sw) -> dict[int, list[ChainAct]]:
    out: dict[int, list[ChainAct]] = {}
    with sw.sessions() as s:
        for act in s.scalars(sa.select(ChainAct).where(ChainAct.kind == "deliver")):
            out.setdefault(int(json.loads(act.payload)["order_id"]), []).append(act)
    return out


def delivered_events(sw, order_ids) -> dict[int, int]:
    logs = sw.escrow().contract.events.OrderDelivered().get_logs(from_block=0)
    counts = {oid: 0 for oid in order_ids}
    for entry in logs:
        oid = int(entry["args"]["orderId"])
        if oid in counts:
            counts[oid] += 1
    return counts


def test_orders_of_two_products_out_of_stock_then_filled(sw, make_node, monkeypatch):
    monkeypatch.setattr(node_runner, "OUT_OF_STOCK_RETRY", 0.0)
    a = sw.mint(10, sku="GC-NODE-A")
    b = sw.mint(10, sku="GC-NODE-B")
    assert a.product_id != b.product_id
    o1, o3 = open_orders(sw, a.product_id, [4, 12])
    [o2] = open_orders(sw, b.product_id, [3])
    node, rec = make_node(sw)
    node.run_once()
    got = rows(sw)
    assert got[o1].state == "published" and got[o2].state == "published"
    assert got[o3].state == "out_of_stock"
    cards = delivered_cards(sw, [o1, o2])
    assert cards[o1][0] == a.hex and len(cards[o1][1]) == 4
    assert cards[o2][0] == b.hex and len(cards[o2][1]) == 3
    escrow = sw.escrow()
    assert escrow.order(o3).status == OrderStatus.FUNDED  # nothing of it was delivered
    assert o3 not in deliver_acts(sw)
    with sw.sessions() as s:
        assert s.scalar(sa.select(SealedDelivery).where(SealedDelivery.order_id == str(o3))) is None
    assert [p["order_id"] for p in rec.kinds("order.out_of_stock")] == [o3]
    node.run_once()  # still out of stock: reported once
    assert len(rec.kinds("order.out_of_stock")) == 1 and rows(sw)[o3].state == "out_of_stock"
    c = sw.mint(25, sku="GC-NODE-A")  # stock arrives before the deadline
    assert c.product_id == a.product_id
    node.run_once()
    assert rows(sw)[o3].state == "published"
    cards = delivered_cards(sw, [o1, o2, o3])
    assert cards[o3][0] == c.hex and len(cards[o3][1]) == 12
    assert_disjoint(cards)
    assert {p["order_id"] for p in rec.kinds("order.published")} == {o1, o2, o3}
    levels = node.stock.stock_levels(sw.sessions(), a.product_id)[a.product_id]
    assert levels["available"] == 10 - 4 + 25 - 12 and levels["sku"] == "GC-NODE-A"


def test_twenty_orders_at_once_each_delivered_once_no_card_twice(sw, make_node):
    m = sw.mint(80, sku="GC-NODE-MANY")
    quantities = [1 + i % 5 for i in range(20)]
    orders = open_orders(sw, m.product_id, quantities)
    node, rec = make_node(sw, workers=16)
    node.run_once()
    got = rows(sw)
    assert {got[o].state for o in orders} == {"published"}
    cards = delivered_cards(sw, orders)
    assert [len(cards[o][1]) for o in orders] == quantities
    assert_disjoint(cards)
    assert set(delivered_events(sw, orders).values()) == {1}
    acts = deliver_acts(sw)
    assert all(len(acts[o]) == 1 and acts[o][0].attempts == 1 for o in orders)
    assert len(rec.kinds("order.delivered")) == 20
    node.run_once()  # nothing left to do, nothing done twice
    assert set(delivered_events(sw, orders).values()) == {1}


def test_background_node_delivers_orders_as_they_come(sw, make_node):
    m = sw.mint(30, sku="GC-NODE-BG")
    node, _ = make_node(sw, poll_interval=0.1)
    node.start()
    orders = open_orders(sw, m.product_id, [2] * 6)
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and {r.state for r in rows(sw).values()} != {"published"} \
            or len(rows(sw)) < 6:
        time.sleep(0.1)
    node.stop()
    assert {rows(sw)[o].state for o in orders} == {"published"}
    assert_disjoint(delivered_cards(sw, orders))


def test_low_stock_fires_once_per_crossing(sw, make_node):
    m = sw.mint(12, sku="GC-NODE-LOW")
    node, rec = make_node(sw, low_stock=8)
    open_orders(sw, m.product_id, [3])
    node.run_once()
    assert rec.kinds("stock.low") == []  # 9 left
    open_orders(sw, m.product_id, [2])
    node.run_once()
    [low] = rec.kinds("stock.low")  # 7 left: crossed
    assert low["product_id"] == m.product_id and low["available"] == 7 and low["threshold"] == 8
    open_orders(sw, m.product_id, [2, 1])
    node.run_once()
    assert len(rec.kinds("stock.low")) == 1  # still below: not again
    sw.mint(20, sku="GC-NODE-LOW")
    open_orders(sw, m.product_id, [1])
    node.run_once()  # back above (23 left)
    assert len(rec.kinds("stock.low")) == 1
    open_orders(sw, m.product_id, [18])
    node.run_once()  # 5 left: a new crossing
    assert len(rec.kinds("stock.low")) == 2


def _reorg(sw, depth: int) -> None:
    admin = sw.env.admin
    resp = admin.w3.provider.make_request("anvil_reorg", [depth, []])
    assert "error" not in resp, resp
    admin._next_nonce = None


def test_reorg_that_removes_an_order_is_closed_never_delivered(private_sw, make_node):
    sw = private_sw
    m = sw.mint(20, sku="GC-NODE-REORG")
    node, rec = make_node(sw)
    # 1. seen, then reorganised away before it was delivered.
    start = sw.env.admin.block_number()
    [gone] = open_orders(sw, m.product_id, [3])
    node.watcher.scan()
    assert rows(sw)[gone].state == "seen"
    _reorg(sw, sw.env.admin.block_number() - start)
    assert sw.escrow().order(gone).status == OrderStatus.NONE
    node.run_once()
    assert rows(sw)[gone].state == "closed"
    assert gone not in deliver_acts(sw)
    # 2. delivered, then the order and the delivery reorganised away: closed, not delivered again.
    start = sw.env.admin.block_number()
    [again] = open_orders(sw, m.product_id, [4])
    assert again == gone  # the same id, a new order
    node.run_once()
    assert rows(sw)[again].state == "published" and rows(sw)[again].quantity == 4
    _reorg(sw, sw.env.admin.block_number() - start)
    assert sw.escrow().order(again).status == OrderStatus.NONE
    node.run_once()
    assert rows(sw)[again].state == "closed"
    assert sw.escrow().order(again).status == OrderStatus.NONE  # nothing was sent for an order that is not there
    # 3. another order under the same id: handled afresh with its own terms.
    [third] = open_orders(sw, m.product_id, [2], )
    assert third == gone
    node.run_once()
    row = rows(sw)[third]
    assert row.state == "published" and row.quantity == 2
    cards = delivered_cards(sw, [third])
    assert len(cards[third][1]) == 2


def test_config_file_env_and_one_line_errors(tmp_path):
    from chain.settings import get_settings

    settings = get_settings(home=tmp_path, public_url="http://pub.test")
    cfg = load_config(settings=settings, env={})
    assert cfg.public_urls == ("http://pub.test",) and cfg.workers == 64 and cfg.poll_interval == 0.5
    assert (cfg.low_stock, cfg.confirmations, cfg.reorg_depth) == (100, 0, 12)
    env = {"CARDPROOF_NODE_PUBLIC_URLS": "http://a.test, http://b.test/", "CARDPROOF_NODE_WORKERS": "4"}
    cfg = load_config(settings=settings, env=env)
    assert cfg.public_urls == ("http://a.test", "http://b.test") and cfg.workers == 4
    (tmp_path / "node.toml").write_text('[node]\nworkers = 32\nlow_stock = 5\n')
    cfg = load_config(settings=settings, env=env)  # the home's node.toml, completed by the environment
    assert (cfg.workers, cfg.low_stock, cfg.public_urls) == (32, 5, ("http://a.test", "http://b.test"))
    bad = tmp_path / "bad.toml"
    for text, match in (("workers = 0", "workers"), ("colour = 1", "not a setting"), ("workers = [", "TOML"),
                        ('public_urls = ["ftp://x"]', "public_urls")):
        bad.write_text(text)
        with pytest.raises(NodeConfigError, match=match) as info:
            load_config(bad, settings=settings, env={})
        assert "\n" not in str(info.value)
    with pytest.raises(NodeConfigError, match="POLL|poll_interval"):
        load_config(settings=settings, env={"CARDPROOF_NODE_POLL_INTERVAL": "soon"})


def test_choose_prefers_one_run_and_never_more_than_64_ranges():
    free = bytearray(b"\x00\x01" * 100 + b"\x00" * 10)
    assert choose(runs(free), 5) == [(200, 5)]
    assert choose(runs(free), 12) is not None and sum(n for _, n in choose(runs(free), 12)) == 12
    assert choose(runs(bytearray(b"\x00\x01" * 100)), 65) is None  # 65 single cards: more than 64 ranges
    assert choose(runs(bytearray(b"\x00\x01" * 100)), 64) is not None


def test_passes_without_a_new_block_read_nothing_and_rechecks_cost_a_request_a_block(sw, make_node, monkeypatch):
    """The node polls often: a pass with no new block reads no logs and writes nothing; an order event read again
    in the reorg window is not written again; delivered orders are rechecked by the hashes of the blocks that
    mined them (one request per block), not by reading every order again."""
    m = sw.mint(40, sku="GC-NODE-QUIET")
    orders = open_orders(sw, m.product_id, [2] * 8)
    node, _ = make_node(sw)
    node.run_once()
    assert {rows(sw)[o].state for o in orders} == {"published"}
    asked = {"logs": 0, "orders": 0, "blocks": 0, "upserts": 0}
    real_logs, real_order = node.watcher._logs, node.escrow.order
    real_upsert, real_block = node.watcher._upsert, node.escrow.client.w3.eth.get_block

    def counting(key, fn):
        def wrapped(*a, **kw):
            asked[key] += 1
            return fn(*a, **kw)
        return wrapped

    monkeypatch.setattr(node.watcher, "_logs", counting("logs", real_logs))
    monkeypatch.setattr(node.escrow, "order", counting("orders", real_order))
    monkeypatch.setattr(node.watcher, "_upsert", counting("upserts", real_upsert))
    monkeypatch.setattr(node.escrow.client.w3.eth, "get_block", counting("blocks", real_block))
    node.run_once()  # reads the blocks the deliveries made
    asked.update(logs=0, orders=0, blocks=0, upserts=0)
    for _ in range(3):
        node.run_once()  # no new block
    assert asked["logs"] == 0 and asked["upserts"] == 0 and asked["orders"] == 0, asked
    sw.env.admin.w3.provider.make_request("evm_mine", [])
    node.run_once()  # one new block: the window is read again, nothing in it is new
    assert asked["logs"] == 1 and asked["upserts"] == 0, asked
    assert asked["orders"] == 0, asked  # every delivery's block is still on the chain: no order read again
    delivery_blocks = {b for b, _ in node._recent.values()}
    assert 1 <= asked["blocks"] <= len(delivery_blocks), (asked, delivery_blocks)
