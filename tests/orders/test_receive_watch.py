"""`cardproof order receive --watch` (verify_api/buyer_watch.py): the buyer's watcher waits for deliveries to its
orders, receives and checks each one, confirms the order when every card passes and disputes it with the
evidence otherwise (a membership dispute for phantom cards); a restart does not act twice.

Runs on both chains with the sealed-delivery world of tests/orders/sealedkit.py (the supplier's database, the
live public app)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import pytest
from web3 import Web3

from chain.escrow import OrderStatus
from chain.registry import ProductSpec
from tests.escrow.world import FEE_BPS, PRICE
from tests.netkit import LiveServer
from tests.orders.conftest import WORLD_KEY
from tests.orders.sealedkit import (
    Console,
    hand_card,
    hand_payload,
    hand_tree,
    make_sealed_world,
    post_blob,
    public_app,
    seal_to_buyer,
)
from tests.orders.test_sealed_delivery import read_csv
from verify_api.buyer_watch import BuyerWatcher
from verify_api.order_receive import review

PHANTOM = ProductSpec.of("GC-PHANTOM-W", 2500, "USD")


@pytest.fixture
def sw(world, tmp_path, sqlite_sessions, sqlite_template):
    s = make_sealed_world(world, tmp_path, sqlite_sessions, tmp_path / "index-sqlite.db", sqlite_template)
    with LiveServer(public_app(s)) as server:
        s.server = server
        yield s


def watcher(sw, tmp_path, start: int, **kw) -> BuyerWatcher:
    kw.setdefault("state_path", tmp_path / "watch-state.json")
    return BuyerWatcher(sw.escrow("buyer"), sw.registry("buyer"), sw.key("buyer"), public_url=sw.url,
                        out_dir=tmp_path / "cards", from_block=start, **kw)


def phantom_order(sw, n: int = 3) -> int:
    """A malicious supplier's delivery of made-up cards of a junk root (as in test_sealed_delivery.py)."""
    batch_id = sw.world.batch_id("supplier")
    sw.registry("supplier").anchor_batch(batch_id, b"\x42" * 32, 64, b"\0" * 32, PHANTOM)
    oid = sw.open(sw.registry().batch(batch_id).product_id, n)
    cards = [hand_card(batch_id, i, f"PHANTOM-W-{i:04d}", product=PHANTOM) for i in range(n)]
    blob = seal_to_buyer(sw, hand_payload(sw.escrow(), oid, batch_id, cards, list(range(n))))
    sw.escrow("supplier").deliver(oid, batch_id, [(0, n)], sealed_hash=Web3.keccak(blob))
    assert post_blob(sw.url, oid, blob).status_code == 201
    return oid


def test_watch_confirms_a_good_delivery_once_uploaded_and_a_restart_does_not_act_twice(sw, tmp_path):
    minted = sw.mint(8)
    start = sw.env.admin.block_number() + 1
    w = watcher(sw, tmp_path, start)
    seen = []
    w.on_result = seen.append
    oid = sw.open(minted.product_id, 3)
    other = sw.open(minted.product_id, 1, who="buyer2")  # not this buyer's: never touched
    assert w.run_once() == []  # funded only
    sw.deliver_sealed(other, minted, [(6, 1)])
    sw.deliver_sealed(oid, minted, [(1, 3)], upload=False)
    assert w.run_once() == [] and w.run_once() == []  # delivered on chain, not uploaded yet: wait
    supplier_before = sw.world.credits("supplier", "stable")
    sw.deliver_sealed(oid, minted, [(1, 3)])  # run again: uploads, sends nothing
    before = time.time()
    (result,) = w.run_once()
    assert result.order_id == oid and result.outcome == "confirmed" and result.ok is True
    assert result.cards == 3 and result.failed == 0 and result.tx.startswith("0x") and result.evidence_key is None
    assert before <= result.codes_at <= time.time()
    assert seen == [result]
    assert result.csv == str(tmp_path / "cards" / f"order-{oid}-cards.csv")
    assert os.stat(result.csv).st_mode & 0o777 == 0o600
    assert [r["code"] for r in read_csv(result.csv)] == minted.codes[1:4]
    assert sw.escrow().order(oid).status is OrderStatus.CONFIRMED
    assert sw.escrow().order(other).status is OrderStatus.DELIVERED
    assert sw.world.credits("supplier", "stable") - supplier_before == 3 * PRICE - 3 * PRICE * FEE_BPS // 10_000
    assert w.run_once() == []
    # The buyer's key is in no file the watcher wrote.
    key_hex = sw.key("buyer").hex()
    for path in (tmp_path / "cards").iterdir():
        assert key_hex not in path.read_text()
    assert key_hex not in (tmp_path / "watch-state.json").read_text()

    # A restart (same state file) does not act again, even on the events it reads again.
    again = watcher(sw, tmp_path, start)
    assert oid in again.handled and again.run_once() == []
    # Without the state it would not act twice either: the order is no longer delivered.
    forgetful = watcher(sw, tmp_path, start, state_path=tmp_path / "other-state.json")
    (skipped,) = forgetful.run_once()
    assert skipped.order_id == oid and skipped.outcome == "skipped" and skipped.tx is None
    assert forgetful.run_once() == []


def test_watch_disputes_phantom_cards_as_membership_and_gives_an_evidence_key_review_accepts(sw, tmp_path):
    start = sw.env.admin.block_number() + 1
    oid = phantom_order(sw)
    (result,) = watcher(sw, tmp_path, start).run_once()
    assert result.outcome == "membership_disputed" and result.ok is False, result
    assert result.cards == 3 and result.failed == 3 and result.tx.startswith("0x")
    assert any("does not reach the root" in p for p in result.problems)
    order = sw.escrow().order(oid)
    assert order.status is OrderStatus.DISPUTED and order.membership_dispute
    key = result.evidence_key
    assert key and key.removeprefix("0x") != sw.key("buyer").hex()
    assert (tmp_path / "cards" / f"order-{oid}-evidence.txt").read_text().strip() == key
    reviewed = review(sw.escrow("arbiter"), sw.registry("arbiter"), oid, bytes.fromhex(key[2:]), public_url=sw.url)
    assert not reviewed.report.ok
    assert all(c.failed == ["in_root"] for c in reviewed.report.cards)


def test_watch_disputes_a_card_that_does_not_open_with_an_ordinary_dispute(sw, tmp_path):
    world = sw.world
    product = ProductSpec.of("GC-OPENS-W", 2500, "USD")
    batch_id = world.batch_id("supplier")
    cards = [hand_card(batch_id, i, f"OPENS-W-{i:04d}", product=product) for i in range(3)]
    sw.registry("supplier").anchor_batch(batch_id, hand_tree(cards).root, 3, b"\0" * 32, product)
    start = sw.env.admin.block_number() + 1
    oid = sw.open(sw.registry().batch(batch_id).product_id, 3)
    payload = hand_payload(sw.escrow(), oid, batch_id, cards, [0, 1, 2])
    payload = replace(payload, cards=tuple(replace(c, code="NOT-THE-CODE") if c.index == 1 else c
                                           for c in payload.cards))
    blob = seal_to_buyer(sw, payload)
    sw.escrow("supplier").deliver(oid, batch_id, [(0, 3)], sealed_hash=Web3.keccak(blob))
    assert post_blob(sw.url, oid, blob).status_code == 201
    (result,) = watcher(sw, tmp_path, start).run_once()
    assert result.outcome == "disputed" and result.failed == 1 and result.evidence_key, result
    order = sw.escrow().order(oid)
    assert order.status is OrderStatus.DISPUTED and not order.membership_dispute


def test_watch_no_confirm_only_checks(sw, tmp_path):
    minted = sw.mint(4)
    start = sw.env.admin.block_number() + 1
    oid = sw.open(minted.product_id, 2)
    sw.deliver_sealed(oid, minted, [(0, 2)])
    (result,) = watcher(sw, tmp_path, start, confirm=False).run_once()
    assert result.outcome == "checked" and result.ok and result.tx is None
    assert sw.escrow().order(oid).status is OrderStatus.DELIVERED


def test_cli_receive_watch_confirms_and_disputes_and_review_accepts_the_printed_key(sw, tmp_path, monkeypatch,
                                                                                   capsys):
    minted = sw.mint(4)
    good = sw.open(minted.product_id, 2)
    sw.deliver_sealed(good, minted, [(0, 2)])
    bad = phantom_order(sw)
    cli = Console(sw, monkeypatch, capsys, tmp_path / "cli-home", WORLD_KEY)
    cli.as_buyer(sw)
    out_dir = tmp_path / "watched"
    lines = cli.ok("order", "receive", "--watch", "--once", "--json", "--out-dir", out_dir).out.splitlines()
    results = {r["order_id"]: r for r in map(json.loads, lines)}
    # The console's escrow record has no deployment block: the watcher reads the chain from block 0.
    assert set(results) >= {good, bad}
    assert results[good]["outcome"] == "confirmed" and results[bad]["outcome"] == "membership_disputed"
    assert sw.escrow().order(good).status is OrderStatus.CONFIRMED
    assert [r["code"] for r in read_csv(out_dir / f"order-{good}-cards.csv")] == minted.codes[0:2]
    key = results[bad]["evidence_key"]
    # The state file (in CARDPROOF_HOME) remembers them: a second run does nothing.
    assert cli.ok("order", "receive", "--watch", "--once", "--json", "--out-dir", out_dir).out == ""
    cli.act_as(sw.key("arbiter"))
    reviewed = json.loads(cli.ok("order", "review", bad, "--evidence-key", key, "--json").out)
    assert reviewed["ok"] is False and len(reviewed["cards_checked"]) == 3


def test_cli_receive_errors_are_one_line(sw, tmp_path, monkeypatch, capsys):
    cli = Console(sw, monkeypatch, capsys, tmp_path / "cli-home", WORLD_KEY)
    cli.as_buyer(sw)
    cli.fails("order", "receive", match="give the order id")
    cli.fails("order", "receive", "3", "--watch", match="give no ORDER")
    cli.fails("order", "receive", "3", "--once", match="go with --watch")
    cli.fails("order", "receive", "--watch", "--confirm", match="not --file, --confirm or --force")
    (tmp_path / "a-file").write_text("x")
    cli.fails("order", "receive", "--watch", "--once", "--out-dir", tmp_path / "a-file", match="not a directory")


def test_watch_disputes_a_delivery_that_opens_to_garbage_with_its_evidence_key(sw, tmp_path):
    from ecies import encrypt

    from issuer.core.sealed import _CONFIG

    minted = sw.mint(3)
    start = sw.env.admin.block_number() + 1
    oid = sw.open(minted.product_id, 1)
    blob = encrypt(bytes(sw.escrow().opened_event(oid)["sealKey"]), b"CPSD\x01 these are not your codes", _CONFIG)
    sw.escrow("supplier").deliver(oid, minted.batch_id, [(0, 1)], sealed_hash=Web3.keccak(blob))
    assert post_blob(sw.url, oid, blob).status_code == 201
    (result,) = watcher(sw, tmp_path, start).run_once()
    assert result.outcome == "disputed" and result.evidence_key and result.csv is None, result
    assert sw.escrow().order(oid).status is OrderStatus.DISPUTED


def test_watch_with_a_key_that_does_not_open_the_delivery_says_so_once_and_sends_nothing(sw, tmp_path):
    from tests.orders.sealedkit import other_key

    minted = sw.mint(3)
    start = sw.env.admin.block_number() + 1
    oid = sw.open(minted.product_id, 2)
    sw.deliver_sealed(oid, minted, [(0, 2)])
    w = BuyerWatcher(sw.escrow("buyer"), sw.registry("buyer"), other_key(), public_url=sw.url,
                     out_dir=tmp_path / "cards", state_path=tmp_path / "s.json", from_block=start)
    (result,) = w.run_once()
    assert result.outcome == "error" and "does not open with this seal key" in result.error
    assert "\n" not in result.error and result.tx is None
    assert w.run_once() == []
    assert sw.escrow().order(oid).status is OrderStatus.DELIVERED
    assert not (tmp_path / "cards" / f"order-{oid}-cards.csv").exists()


def test_watch_and_keeper_run_forever_until_stopped(sw, tmp_path):
    import threading

    from tests.escrow.world import WINDOW
    from verify_api.keeper import Keeper

    if sw.env.backend != "anvil":
        pytest.skip("two threads sending at once need a real node (anvil); the in-process chain is not thread-safe")
    minted = sw.mint(6)
    start = sw.env.admin.block_number() + 1
    good = sw.open(minted.product_id, 2)
    sw.deliver_sealed(good, minted, [(0, 2)])
    lazy = sw.open(minted.product_id, 2, who="buyer2")  # its buyer never confirms: the keeper releases it
    sw.deliver_sealed(lazy, minted, [(2, 2)])
    at = sw.escrow().order(lazy).delivered_at
    sw.world.travel_to(at + WINDOW + 1)
    sw.env.mine(1)

    results, actions = [], []
    w = watcher(sw, tmp_path, start, on_result=results.append)
    keeper = Keeper(sw.escrow("stranger"), from_block=start)
    stop = threading.Event()
    threads = [threading.Thread(target=w.run_forever, args=(0.1, stop)),
               threading.Thread(target=keeper.run_forever, args=(0.1, stop, actions.extend))]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (results and actions):
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    # The buyer confirms its order before the keeper would release it, or the keeper got there first: never both.
    escrow = sw.escrow()
    assert escrow.order(good).status in (OrderStatus.CONFIRMED, OrderStatus.RELEASED)
    assert escrow.order(lazy).status is OrderStatus.RELEASED
    assert [a.order_id for a in actions if a.settled].count(lazy) == 1
    assert not [a for a in actions if a.what == "error"] and not [r for r in results if r.outcome == "error"]


def test_watch_handles_many_deliveries_in_one_pass(sw, tmp_path):
    """Many deliveries at once: checked in parallel (on a real node), their confirmations broadcast together."""
    minted = sw.mint(24)
    start = sw.env.admin.block_number() + 1
    orders = [sw.open(minted.product_id, 3) for _ in range(6)]
    for i, oid in enumerate(orders):
        sw.deliver_sealed(oid, minted, [(3 * i, 3)])
    w = watcher(sw, tmp_path, start)
    assert w.workers == (1 if sw.env.backend == "eth-tester" else 8)
    results = w.run_once()
    assert [(r.order_id, r.outcome) for r in results] == [(oid, "confirmed") for oid in orders], results
    assert len({r.tx for r in results}) == len(orders)
    for i, r in enumerate(results):
        assert [row["code"] for row in read_csv(r.csv)] == minted.codes[3 * i:3 * i + 3]
        assert sw.escrow().order(r.order_id).status is OrderStatus.CONFIRMED
    assert w.run_once() == []


def test_a_pass_reads_the_delivery_once_and_writes_its_state_once(sw, tmp_path, monkeypatch):
    """Handling one delivery reads its ranges once (the confirmation's gas limit comes from what the check read)
    and writes the state file once; the gas limit is the one the escrow wrapper's own rule gives."""
    minted = sw.mint(6)
    w = watcher(sw, tmp_path, sw.env.admin.block_number() + 1)
    oid = sw.open(minted.product_id, 2)
    sw.deliver_sealed(oid, minted, [(0, 2)])
    expected_gas = w.escrow.settle_gas(oid)
    counted = {"delivery": 0, "save": 0}
    real_delivery, real_save = w.escrow.delivery, w._save

    def delivery(order_id):
        counted["delivery"] += 1
        return real_delivery(order_id)

    def save():
        counted["save"] += 1
        real_save()

    monkeypatch.setattr(w.escrow, "delivery", delivery)
    monkeypatch.setattr(w, "_save", save)
    sent = []
    real_send = w.client.send
    monkeypatch.setattr(w.client, "send", lambda fn, **kw: sent.append(kw.get("gas")) or real_send(fn, **kw))
    (result,) = w.run_once()
    assert result.outcome == "confirmed"
    assert counted == {"delivery": 1, "save": 1}, counted
    assert sent == [expected_gas]
