"""`cardproof keeper` (verify_api/keeper.py): releases delivered orders whose dispute window has passed and
disputed orders whose dispute deadline has passed, leaves every other order alone, and is safe to run several at
once (two keepers race over the same orders: each is released exactly once, neither errors, nothing is lost).

Runs on both chains (the package's escrow ``world``) except the race, which needs a real node (anvil)."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from chain.client import ChainClient, http_web3
from chain.escrow import Escrow, OrderStatus
from tests.escrow.world import FEE_BPS, PRICE, WINDOW
from tests.orders.conftest import WORLD_KEY
from tests.orders.sealedkit import Console
from verify_api.keeper import Keeper, KeeperAction


def _fee(amount: int) -> int:
    return amount * FEE_BPS // 10_000


def _after(world, timestamp: int) -> None:
    """Chain time moves to ``timestamp`` (a block is mined there)."""
    world.travel_to(timestamp)
    if world.env.now() < timestamp:
        world.env.mine(1)
    assert world.env.now() >= timestamp


def test_keeper_releases_passed_windows_and_expired_disputes_and_leaves_others_alone(world):
    env = world.env
    start = env.admin.block_number() + 1
    keeper = Keeper(world.escrow("stranger"), from_block=start)
    assert keeper.run_once() == []

    batch = world.anchor()
    a, _, a_at = world.delivered_order(batch_id=batch, start=0)                  # released after its window
    b, _, _ = world.delivered_order(batch_id=batch, start=10)                    # disputed: expires later
    world.escrow("buyer").dispute(b)
    funded = world.open(quantity=2)                                              # never delivered
    assert keeper.run_once() == []  # nothing is due yet
    assert set(keeper.candidates) == {a, b}

    _after(world, a_at + WINDOW + 1)
    c, _, _ = world.delivered_order(batch_id=batch, start=20)                    # its window just opened
    d, _, _ = world.delivered_order(batch_id=batch, start=30)                    # disputed an hour after b
    world.escrow("buyer").dispute(d)
    supplier_before = world.credits("supplier", "stable")
    actions = keeper.run_once()
    assert [(x.order_id, x.what) for x in actions] == [(a, "released")], actions
    assert actions[0].tx and actions[0].tx.startswith("0x")
    assert world.escrow().order(a).status is OrderStatus.RELEASED
    assert world.credits("supplier", "stable") - supplier_before == 4 * PRICE - _fee(4 * PRICE)
    for oid, status in ((b, OrderStatus.DISPUTED), (c, OrderStatus.DELIVERED), (d, OrderStatus.DISPUTED),
                        (funded, OrderStatus.FUNDED)):
        assert world.escrow().order(oid).status is status
    assert keeper.run_once() == []  # idempotent

    b_deadline = world.escrow().order(b).dispute_deadline
    assert b_deadline < world.escrow().order(d).dispute_deadline
    _after(world, b_deadline + 1)
    actions = keeper.run_once()
    assert sorted((x.order_id, x.what) for x in actions) == [(b, "dispute_expired"), (c, "released")], actions
    assert world.escrow().order(b).status is OrderStatus.RELEASED
    assert world.escrow().order(d).status is OrderStatus.DISPUTED
    assert world.escrow().order(funded).status is OrderStatus.FUNDED
    assert keeper.run_once() == []

    # A keeper started afresh (no memory) finds nothing left to do either, then d after its deadline.
    fresh = Keeper(world.escrow("feeto"), from_block=start)
    assert fresh.run_once() == []
    _after(world, world.escrow().order(d).dispute_deadline + 1)
    assert [(x.order_id, x.what) for x in fresh.run_once()] == [(d, "dispute_expired")]
    # The first keeper learns it from the chain: a skip at most, never a second release.
    assert all(x.what == "skipped" for x in keeper.run_once())


def test_a_release_someone_else_did_first_is_a_skip_not_an_error(world):
    start = world.env.admin.block_number() + 1
    keeper = Keeper(world.escrow("stranger"), from_block=start)
    oid, _, at = world.delivered_order()
    keeper.run_once()
    _after(world, at + WINDOW + 1)
    world.escrow("feeto").release(oid)  # another keeper got there first, before this one saw the event
    action = keeper._settle(oid, world.env.now())  # noqa: SLF001 - the candidate is still due in its memory
    assert action is not None and action.what == "skipped" and "already settled" in action.reason
    assert keeper.run_once() == []


def _anvil_escrow(world, who: str) -> Escrow:
    """An escrow handle over its own HTTP connection (a keeper of its own)."""
    node = world.env.extra["node"]
    client = ChainClient(http_web3(node.url), world.env.accounts[who], backend="anvil", poll_interval=0.01)
    return Escrow(client, world.escrow_address)


def test_two_keepers_at_once_release_every_order_exactly_once(world):
    if world.env.backend != "anvil":
        pytest.skip("two keepers racing need a real node (anvil)")
    env = world.env
    start = env.admin.block_number() + 1
    batch = world.anchor()
    n = 8
    orders, last = [], 0
    for i in range(n):
        oid, _, at = world.delivered_order(batch_id=batch, start=4 * i, quantity=4)
        orders.append(oid)
        last = max(last, at)
    # Half of them disputed: those settle when the dispute expires.
    for oid in orders[::2]:
        world.escrow("buyer").dispute(oid)
    deadline = max(world.escrow().order(oid).dispute_deadline for oid in orders[::2])
    _after(world, max(deadline, last + WINDOW) + 1)

    escrow_before = world.balance("escrow", "stable")
    credits_before = {who: world.credits(who, "stable") for who in ("supplier", "feeto", "buyer")}
    fees_before = world.escrow().fees_accrued(world.tokens["stable"])

    keepers = [Keeper(_anvil_escrow(world, who), from_block=start) for who in ("stranger", "issuer2")]
    barrier = threading.Barrier(len(keepers))
    done: dict[int, list[KeeperAction]] = {}
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            acts: list[KeeperAction] = []
            deadline_at = time.monotonic() + 60
            while time.monotonic() < deadline_at:
                acts += keepers[i].run_once()
                if all(world.escrow().order(oid).status is OrderStatus.RELEASED for oid in orders):
                    break
            acts += keepers[i].run_once()
            done[i] = acts
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(keepers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    everything = [a for acts in done.values() for a in acts]
    assert not [a for a in everything if a.what == "error"], everything
    settled = [a for a in everything if a.settled]
    assert sorted(a.order_id for a in settled) == sorted(orders), everything  # each exactly once
    assert {a.order_id for a in settled if a.what == "dispute_expired"} == set(orders[::2])
    escrow = world.escrow()
    for oid in orders:
        assert escrow.order(oid).status is OrderStatus.RELEASED
        assert len(escrow.contract.events.OrderReleased().get_logs(from_block=start,
                                                                   argument_filters={"orderId": oid})) == 1
    # Conservation: releases move no token; they credit exactly what the orders held.
    assert world.balance("escrow", "stable") == escrow_before
    gained = sum(world.credits(who, "stable") - before for who, before in credits_before.items())
    assert gained == n * 4 * PRICE
    fee = world.escrow().fees_accrued(world.tokens["stable"]) - fees_before
    assert fee == world.credits("feeto", "stable") - credits_before["feeto"] == n * _fee(4 * PRICE)


def test_cli_keeper_once_prints_one_line_per_action(world, tmp_path, monkeypatch, capsys):
    holder = SimpleNamespace(env=world.env, world=world, server=None)
    cli = Console(holder, monkeypatch, capsys, tmp_path / "home", WORLD_KEY)
    cli.act_as(bytes(world.env.accounts["stranger"].key))
    start = str(world.env.admin.block_number() + 1)
    oid, _, at = world.delivered_order()
    other, _, _ = world.delivered_order(start=100)
    world.escrow("buyer").confirm(other)
    assert cli.ok("keeper", "--once", "--json", "--from-block", start).out == ""
    _after(world, at + WINDOW + 1)
    lines = cli.ok("keeper", "--once", "--json", "--from-block", start).out.splitlines()
    assert [json.loads(x)["order_id"] for x in lines] == [oid]
    assert json.loads(lines[0])["what"] == "released" and json.loads(lines[0])["tx"].startswith("0x")
    assert world.escrow().order(oid).status is OrderStatus.RELEASED
    assert cli.ok("keeper", "--once", "--from-block", start).out == ""
    r = cli("keeper", "--interval", "0")
    assert r.rc != 0 and r.err.count("\n") == 1 and "Traceback" not in r.err
    cli.monkeypatch.setenv("CARDPROOF_RPC_URL", "http://127.0.0.1:9")  # nobody listens there
    cli.fails("keeper", "--once")
