"""The supplier's escrow acts (deliver, withdraw) are recorded intents: a rerun settles them, and redoes what a
rollback removed. On both chains and both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from web3 import Web3

from chain.escrow import CardRange, OrderStatus
from issuer.escrow_acts import deliver_order, settle_escrow_acts, withdraw_credit
from issuer.storage.models import ChainAct
from tests.chainkit import ChainEnv
from tests.escrow.world import World, worlds_on_session_chains

KEY = "escrow_world_issuer_acts"


class SimulatedCrash(BaseException):
    pass


def die(*_a, **_k):
    raise SimulatedCrash()


@pytest.fixture(scope="module", autouse=True)
def _escrow_worlds(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from worlds_on_session_chains(request, KEY)


@pytest.fixture
def world(chain_env: ChainEnv) -> World:
    return World.of(chain_env, KEY)


def supplier_escrow(world: World):
    escrow = world.escrow("supplier")
    escrow.client._next_nonce = None
    return escrow


def rollback(world: World, snap) -> None:
    height = world.env.admin.block_number()
    world.env.revert(snap)
    world.env.mine(max(1, height - world.env.admin.block_number() + 2))
    world.env.admin._next_nonce = None


def sealed(order_id: int) -> bytes:
    """A sealed delivery's hash (the escrow only checks that there is one)."""
    return bytes(Web3.keccak(text=f"sealed delivery of order {order_id}"))


def rows(sessions, kind):
    with sessions() as s:
        return list(s.scalars(sa.select(ChainAct).where(ChainAct.kind == kind).order_by(ChainAct.id)))


def test_rollback_past_a_delivery_then_deliver_again(world, sessions):
    order_id = world.open(quantity=4)
    batch_id = world.anchor(count=16)
    snap = world.env.snapshot()
    first = deliver_order(sessions, supplier_escrow(world), order_id, batch_id, [(0, 4)], sealed(order_id))
    assert first.state == "final" and not first.already and first.tx_hash
    rollback(world, snap)
    escrow = supplier_escrow(world)
    assert escrow.order(order_id).status == OrderStatus.FUNDED  # the chain lost the delivery
    again = deliver_order(sessions, escrow, order_id, batch_id, [(0, 4)], sealed(order_id))
    # Sent again (the same nonce and fees may well give the very same transaction hash).
    assert again.state == "final" and not again.already and again.tx_hash
    assert escrow.order(order_id).status == OrderStatus.DELIVERED
    assert escrow.delivery(order_id) == (batch_id, [CardRange(0, 4)])
    [act] = rows(sessions, "deliver")
    assert act.attempts == 2
    done = deliver_order(sessions, escrow, order_id, batch_id, [(0, 4)], sealed(order_id))  # settles, sends nothing
    assert done.already and done.tx_hash == again.tx_hash and rows(sessions, "deliver")[0].attempts == 2


def test_delivery_mined_after_a_crash_is_settled_not_sent_twice(world, sessions, monkeypatch):
    order_id = world.open(quantity=2)
    batch_id = world.anchor(count=8)
    escrow = supplier_escrow(world)
    monkeypatch.setattr(escrow.client, "wait", die)
    with pytest.raises(SimulatedCrash):
        deliver_order(sessions, escrow, order_id, batch_id, [(3, 2)], sealed(order_id))
    monkeypatch.undo()
    [act] = rows(sessions, "deliver")
    assert act.tx_hash and act.state in ("pending", "broadcast")
    with sessions.begin() as s:
        s.get(ChainAct, act.id).lease_until = None
    assert settle_escrow_acts(sessions, escrow) == [("deliver", "repaired",
                                                     f"order {order_id}: delivery recorded from the chain")]
    [act] = rows(sessions, "deliver")
    assert act.state == "final" and act.attempts == 1
    assert settle_escrow_acts(sessions, escrow) == []


def test_rollback_past_a_delivery_is_repaired_by_settling(world, sessions):
    order_id = world.open(quantity=2)
    batch_id = world.anchor(count=8)
    snap = world.env.snapshot()
    deliver_order(sessions, supplier_escrow(world), order_id, batch_id, [(0, 2)], sealed(order_id))
    rollback(world, snap)
    escrow = supplier_escrow(world)
    [(kind, status, detail)] = settle_escrow_acts(sessions, escrow)
    assert (kind, status) == ("deliver", "repaired") and "lost the delivery" in detail
    assert escrow.order(order_id).status == OrderStatus.DELIVERED


def test_rollback_past_a_withdrawal_then_withdraw_again(world, sessions):
    order_id, _batch, _at = world.delivered_order(quantity=2)
    world.escrow("buyer").confirm(order_id)
    token = world.tokens["stable"]
    credit = world.credits("supplier", "stable")
    assert credit > 0
    before = world.balance("supplier", "stable")
    snap = world.env.snapshot()
    first = withdraw_credit(sessions, supplier_escrow(world), token)
    assert first.state == "final" and world.balance("supplier", "stable") == before + credit
    rollback(world, snap)
    assert world.credits("supplier", "stable") == credit  # the chain lost the withdrawal
    escrow = supplier_escrow(world)
    [(kind, status, _detail)] = settle_escrow_acts(sessions, escrow)
    assert (kind, status) == ("withdraw", "repaired")
    assert world.credits("supplier", "stable") == 0 and world.balance("supplier", "stable") == before + credit
    assert rows(sessions, "withdraw")[0].attempts == 2


# ----------------------------------------------------------------------------- the commands


@pytest.fixture
def supplier_order_commands():
    """`order deliver` / `order withdraw` replaced by the supplier's recorded acts (as cardproof/console.py is to
    do), for this test only."""
    import issuer.cli
    import verify_api.order_cli

    app = verify_api.order_cli.order_app
    before = list(app.registered_commands)
    issuer.cli.register_order_commands(app)
    try:
        yield
    finally:
        app.registered_commands[:] = before


def test_cli_deliver_and_withdraw_are_recorded_and_rerun_after_a_rollback(tmp_path, monkeypatch, capsys,
                                                                          supplier_order_commands):
    from tests.clikit import in_process_cli
    from tests.orders import test_orders_cli as oc

    with in_process_cli(tmp_path, monkeypatch, capsys) as cli:
        # The orders CLI tests' platform (registry, escrow, stablecoin, a funded buyer), reused as a function.
        p = oc.platform.__wrapped__(cli) if hasattr(oc.platform, "__wrapped__") else None
        if p is None:
            pytest.skip("the orders CLI platform fixture is not reusable here")
        oc.open_order(cli, p, quantity=2, price="5")
        batch = p.batch()
        snap = p.tester.take_snapshot()
        first = cli.ok("order", "deliver", "1", "--batch", batch, "--range", "0:2", "--json").json
        assert first["status"] == "delivered" and first["tx"].startswith("0x")
        p.tester.revert_to_snapshot(snap)
        p.tester.mine_blocks(2)
        assert p.escrow.order(1).status == OrderStatus.FUNDED
        again = cli.ok("order", "deliver", "1", "--batch", batch, "--range", "0:2", "--json").json
        assert again["tx"].startswith("0x") and p.escrow.order(1).status == OrderStatus.DELIVERED
        settled = cli.ok("order", "deliver", "1", "--batch", batch, "--range", "0:2", "--json").json
        assert settled["tx"] == again["tx"]  # settled from the chain, nothing sent
        oc.as_buyer(cli, "order", "confirm", "1")
        out = cli.ok("order", "withdraw", "--json").json
        assert out["amount"]["amount"] != "0.00" and out["account"] == p.supplier
        report = cli.ok("reconcile", "--all", "--json").json
        assert report["consistent"] is True
