"""Disputes end (issue 10): every dispute has a deadline, after which anyone settles it with the default outcome
(the settlement of an undisputed release); the buyer may withdraw a dispute; arbiters are granted at deploy and
may be contracts; `cardproof arbiter grant|revoke|list`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.logs import DISCARD

from chain import errors
from chain.artifacts import load_artifact
from chain.escrow import ARBITER_ROLE, Escrow, OrderStatus
from chain.platform import deploy_platform
from tests.chainkit import ChainEnv
from tests.escrow.world import (
    DAY,
    FEE_BPS,
    GAS_DEPLOY,
    PRICE,
    RESOLUTION,
    WINDOW,
    World,
)


def _split(valid: int, refunded: int, price: int = PRICE) -> tuple[int, int, int]:
    gross = valid * price
    fee = gross * FEE_BPS // 10_000
    return gross - fee, fee, refunded * price


def _events(world: World, receipt: Any, name: str) -> list[dict[str, Any]]:
    return [dict(e["args"]) for e in getattr(world.escrow().contract.events, name)().process_receipt(
        receipt, errors=DISCARD)]


def _disputed(world: World, *, quantity: int = 4, window: int = WINDOW) -> tuple[int, bytes, int, int]:
    """A delivered and disputed order: (order id, batch id, delivered at, dispute deadline)."""
    order_id, batch_id, delivered_at = world.delivered_order(quantity=quantity, window=window)
    receipt = world.escrow("buyer").dispute(order_id)
    (event,) = _events(world, receipt, "OrderDisputed")
    assert event["deadline"] == world.block_time(receipt) + RESOLUTION
    return order_id, batch_id, delivered_at, event["deadline"]


# --------------------------------------------------------------------------- the deadline


def test_a_dispute_has_a_deadline(world: World) -> None:
    order_id, _, _, deadline = _disputed(world)
    order = world.escrow().order(order_id)
    assert (order.status, order.dispute_deadline, order.releasable_at()) == (OrderStatus.DISPUTED, deadline, deadline)
    world.travel_to(deadline - 100)
    with pytest.raises(errors.DisputeDeadlineNotPassed) as info:
        world.escrow("stranger").release(order_id)
    assert (info.value.order_id, info.value.deadline) == (order_id, deadline)
    with pytest.raises(errors.InvalidOrderStatus):
        world.escrow("buyer").confirm(order_id)


def test_an_expired_dispute_settles_with_the_default_outcome(world: World) -> None:
    """Nobody ruled: anyone settles, exactly as an undisputed release would (revoked cards refunded by rule)."""
    order_id, batch_id, _, deadline = _disputed(world, quantity=6)
    world.env.registry("supplier").revoke_cards(batch_id, [1, 4], 1)  # the issuer's remedy for bad cards
    world.travel_to(deadline + 1)  # (eth-tester's latest block is then at the deadline)
    settlement = world.escrow("stranger").release(order_id)
    supplier, fee, refund = _split(4, 2)
    assert settlement.dispute_expired
    assert (settlement.revoked_cards, settlement.supplier_amount, settlement.fee, settlement.buyer_refund) == (
        2, supplier, fee, refund)
    assert (world.credits("supplier", "stable"), world.credits("feeto", "stable"),
            world.credits("buyer", "stable")) == (supplier, fee, refund)
    order = world.escrow().order(order_id)
    assert (order.status, order.dispute_deadline) == (OrderStatus.RELEASED, deadline)
    assert _events(world, settlement.receipt, "DisputeExpired") == [{"orderId": order_id, "deadline": deadline}]
    (released,) = _events(world, settlement.receipt, "OrderReleased")
    assert released["caller"] == world.addr("stranger")
    assert world.balance("escrow", "stable") == supplier + fee + refund
    for action in (lambda: world.escrow("stranger").release(order_id),
                   lambda: world.escrow("arbiter").resolve(order_id, 6 * PRICE, 0),
                   lambda: world.escrow("buyer").withdraw_dispute(order_id)):
        with pytest.raises(errors.InvalidOrderStatus):
            action()


def test_the_default_outcome_pays_redeemed_cards_of_a_revoked_batch(world: World) -> None:
    order_id, batch_id, _, deadline = _disputed(world, quantity=5)
    registry = world.env.registry("supplier")
    registry.mark_redeemed(batch_id, [0, 3])
    registry.revoke_batch(batch_id, 2)
    world.travel_to(deadline + 5)
    settlement = world.escrow("supplier").release(order_id)
    assert (settlement.revoked_cards, settlement.supplier_amount + settlement.fee, settlement.buyer_refund) == (
        3, 2 * PRICE, 3 * PRICE)


def test_the_arbiter_rules_only_before_the_deadline(world: World) -> None:
    order_id, _, _, deadline = _disputed(world)
    world.travel_to(deadline + 1)
    with pytest.raises(errors.DisputeDeadlinePassed) as info:
        world.escrow("arbiter").resolve(order_id, 4 * PRICE, 0)
    assert (info.value.order_id, info.value.deadline) == (order_id, deadline)
    # ... and just before it, the ruling stands
    other, _, _, other_deadline = _disputed(world)
    world.travel_to(other_deadline - 60)
    world.escrow("arbiter").resolve(other, 4 * PRICE, 0)
    assert world.escrow().order(other).status is OrderStatus.RESOLVED


def test_a_dispute_keeps_the_resolution_period_it_was_raised_with(world: World) -> None:
    order_id, _, _, deadline = _disputed(world)
    world.escrow().set_window_rules(90 * DAY, 3_600, 30 * DAY, 3_600)
    assert world.escrow().order(order_id).dispute_deadline == deadline
    other, _, _ = world.delivered_order(quantity=2)
    receipt = world.escrow("buyer").dispute(other)
    assert world.escrow().order(other).dispute_deadline == world.block_time(receipt) + 3_600
    world.travel_to(world.block_time(receipt) + 3_601)
    assert world.escrow("stranger").release(other).dispute_expired
    with pytest.raises(errors.DisputeDeadlineNotPassed):
        world.escrow("stranger").release(order_id)


def test_a_dispute_can_end_before_the_window_does(world: World) -> None:
    """The deadline runs from the dispute, not from the window: a 30-day window does not make it wait longer."""
    order_id, _, delivered_at, deadline = _disputed(world, window=30 * DAY)
    assert deadline < delivered_at + 30 * DAY
    world.travel_to(deadline + 1)
    assert world.escrow("stranger").release(order_id).dispute_expired


# --------------------------------------------------------------------------- withdrawing a dispute


def test_withdrawing_within_the_window_returns_to_delivered(world: World) -> None:
    order_id, _, delivered_at, _ = _disputed(world)
    withdrawal = world.escrow("buyer").withdraw_dispute(order_id)
    assert (withdrawal.settled, withdrawal.settlement) == (False, None)
    assert _events(world, withdrawal.receipt, "DisputeWithdrawn") == [{"orderId": order_id, "settled": False}]
    assert not _events(world, withdrawal.receipt, "OrderReleased")
    order = world.escrow().order(order_id)
    assert (order.status, order.dispute_deadline, order.dispute_window_end) == (
        OrderStatus.DELIVERED, 0, delivered_at + WINDOW)  # the window as it was
    with pytest.raises(errors.DisputeWindowOpen) as info:
        world.escrow("stranger").release(order_id)
    assert info.value.window_end == delivered_at + WINDOW
    # Within the window the buyer may dispute again (a new deadline) or confirm.
    receipt = world.escrow("buyer").dispute(order_id)
    assert world.escrow().order(order_id).dispute_deadline == world.block_time(receipt) + RESOLUTION
    world.escrow("buyer").withdraw_dispute(order_id)
    assert world.escrow("buyer").confirm(order_id).supplier_amount == _split(4, 0)[0]


def test_withdrawing_after_the_window_settles_at_once(world: World) -> None:
    order_id, batch_id, delivered_at, _ = _disputed(world, quantity=5)
    world.env.registry("supplier").revoke_cards(batch_id, [2], 1)
    world.travel_to(delivered_at + WINDOW + 10)
    withdrawal = world.escrow("buyer").withdraw_dispute(order_id)
    assert withdrawal.settled and withdrawal.settlement is not None
    supplier, fee, refund = _split(4, 1)
    s = withdrawal.settlement
    assert (s.revoked_cards, s.supplier_amount, s.fee, s.buyer_refund) == (1, supplier, fee, refund)
    assert _events(world, withdrawal.receipt, "DisputeWithdrawn") == [{"orderId": order_id, "settled": True}]
    (released,) = _events(world, withdrawal.receipt, "OrderReleased")
    assert released["caller"] == world.addr("buyer")
    assert world.escrow().order(order_id).status is OrderStatus.RELEASED
    assert (world.credits("supplier", "stable"), world.credits("buyer", "stable")) == (supplier, refund)


def test_withdrawing_an_expired_dispute_settles_at_once(world: World) -> None:
    order_id, _, delivered_at, deadline = _disputed(world, window=30 * DAY)
    world.travel_to(deadline + 10)
    assert deadline + 10 < delivered_at + 30 * DAY  # the window is still open, but the dispute is over
    withdrawal = world.escrow("buyer").withdraw_dispute(order_id)
    assert withdrawal.settled
    assert world.escrow().order(order_id).status is OrderStatus.RELEASED


def test_only_the_buyer_withdraws_and_only_a_dispute(world: World) -> None:
    order_id, _, _ = world.delivered_order(quantity=2)
    with pytest.raises(errors.InvalidOrderStatus) as info:
        world.escrow("buyer").withdraw_dispute(order_id)
    assert (info.value.status, info.value.required) == (OrderStatus.DELIVERED, OrderStatus.DISPUTED)
    world.escrow("buyer").dispute(order_id)
    for who in ("supplier", "arbiter", "stranger", "buyer2", "admin"):
        with pytest.raises(errors.NotOrderBuyer) as info:
            world.escrow(who).withdraw_dispute(order_id)
        assert info.value.caller == world.addr(who).lower()
    with pytest.raises(errors.OrderNotFound):
        world.escrow("buyer").withdraw_dispute(99)


# --------------------------------------------------------------------------- arbiters


def _deploy_arbiter_contract(world: World, owner: str) -> str:
    art = load_artifact("TestArbiter")
    admin = world.env.admin
    sent = admin.send_deploy(art.abi, art.bytecode, world.addr(owner), gas=GAS_DEPLOY)
    return Web3.to_checksum_address(admin.wait(sent.tx_hash)["contractAddress"])


def test_an_arbiter_may_be_a_contract(world: World) -> None:
    arbiter = _deploy_arbiter_contract(world, "stranger")
    world.escrow().grant_arbiter(arbiter)
    assert arbiter in world.escrow().arbiters()
    order_id, _, _, _ = _disputed(world)
    client = world.env.client("stranger")
    contract = client.contract(arbiter, load_artifact("TestArbiter").abi)
    buyer_share = PRICE
    receipt = client.transact(contract.functions.resolve(world.escrow_address, order_id, buyer_share,
                                                         4 * PRICE - buyer_share), gas=300_000)
    (event,) = _events(world, receipt, "OrderResolved")
    assert (event["arbiter"], event["buyerAmount"]) == (arbiter, buyer_share)
    assert world.escrow().order(order_id).status is OrderStatus.RESOLVED
    assert world.credits("buyer", "stable") == buyer_share


def test_an_arbiter_contract_checks_its_own_callers_and_needs_the_role(world: World) -> None:
    arbiter = _deploy_arbiter_contract(world, "stranger")
    order_id, _, _, _ = _disputed(world)
    abi = load_artifact("TestArbiter").abi
    for who, error in (("buyer", errors.NotArbiterOwner), ("stranger", errors.AccessControlUnauthorizedAccount)):
        client = world.env.client(who)
        fn = client.contract(arbiter, abi).functions.resolve(world.escrow_address, order_id, 4 * PRICE, 0)
        with pytest.raises(error) as info:
            client.transact(fn, gas=300_000)
        if error is errors.AccessControlUnauthorizedAccount:  # the escrow refused the contract: no role yet
            assert (info.value.account, bytes(info.value.needed_role)) == (arbiter.lower(), bytes(ARBITER_ROLE))


def test_an_arbiter_contract_needs_an_owner(world: World) -> None:
    from chain.client import guard

    art = load_artifact("TestArbiter")
    admin = world.env.admin
    ctor = admin.w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor("0x" + "00" * 20)
    with pytest.raises(errors.ZeroAddress):
        guard(lambda: ctor.estimate_gas({"from": admin.address}))


def test_an_escrow_deployed_with_a_contract_arbiter(world: World) -> None:
    arbiter = _deploy_arbiter_contract(world, "stranger")
    art = load_artifact("CardEscrow")
    admin = world.env.admin
    sent = admin.send_deploy(art.abi, art.bytecode, world.env.registry_address, admin.address, world.addr("feeto"),
                             arbiter, gas=GAS_DEPLOY)
    fresh = Escrow(admin, admin.wait(sent.tx_hash)["contractAddress"])
    assert fresh.arbiters() == [arbiter] and fresh.is_arbiter(arbiter)


def test_deploy_platform_grants_an_arbiter(chain_env: ChainEnv, tmp_path: Path) -> None:
    platform = deploy_platform(chain_env.admin, tmp_path / "a")
    assert platform.escrow is not None
    assert Escrow(chain_env.admin, platform.escrow.address).arbiters() == [chain_env.admin.address]
    chain_env.admin._next_nonce = None
    other = deploy_platform(chain_env.admin, tmp_path / "b", arbiter=chain_env.address("arbiter"))
    assert other.escrow is not None
    assert Escrow(chain_env.admin, other.escrow.address).arbiters() == [chain_env.address("arbiter")]
    again = deploy_platform(chain_env.admin, tmp_path / "b", arbiter=chain_env.address("stranger"))
    assert again.escrow == other.escrow  # idempotent: a live escrow keeps its arbiters
    assert Escrow(chain_env.admin, other.escrow.address).arbiters() == [chain_env.address("arbiter")]


# --------------------------------------------------------------------------- cardproof arbiter ...


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    from cardproof import console
    from tests.clikit import in_process_cli
    from verify_api import admin_cli

    # Until cardproof/console.py registers the module itself (then this is a no-op).
    if not any(group.name == "arbiter" for group in console.app.registered_groups):
        monkeypatch.setattr(console.app, "registered_groups", list(console.app.registered_groups))
        admin_cli.register(console.app)
    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        yield c


def test_arbiter_commands(cli: Any) -> None:
    from eth_account import Account

    deployed = cli.ok("deploy", "--json").json
    admin = deployed["escrow"]["deployer"]
    listed = cli.ok("arbiter", "list", "--json").json
    assert listed["escrow"] == deployed["escrow"]["address"]
    assert listed["arbiters"] == listed["admins"] == [admin]  # the deployer is the arbiter granted at deploy
    assert listed["dispute_resolution_period"] == 7 * DAY
    new = Account.from_key("0x" + "c3" * 32).address

    granted = cli.ok("arbiter", "grant", new, "--json").json
    assert (granted["changed"], granted["account"], granted["arbiters"]) == (True, new, [admin, new])
    assert granted["tx"].startswith("0x")
    again = cli.ok("arbiter", "grant", new.lower(), "--json").json
    assert (again["changed"], again["tx"]) == (False, None)
    assert "already an arbiter" in cli.ok("arbiter", "grant", new).out
    assert f"arbiter {new}" in cli.ok("arbiter", "list").out

    # Only the admin: the error names the role and the admin, not a role hash (and nothing is sent).
    from chain.client import ChainClient, dev_account_for, shared_in_process_web3

    _, w3 = shared_in_process_web3()
    funder = ChainClient(w3, dev_account_for(w3, w3.eth.chain_id), backend="eth-tester")
    funder.wait(funder.send_value(new, 10**18).tx_hash)  # eth-tester refuses even calls from empty accounts
    cli.act_as("0x" + "c3" * 32)
    failed = cli.fails("arbiter", "grant", Account.from_key("0x" + "c4" * 32).address)
    assert f"run this as the admin {admin}" in failed.err
    assert "0x" + "00" * 32 not in failed.err
    cli.act_as(None)

    revoked = cli.ok("arbiter", "revoke", new, "--json").json
    assert (revoked["changed"], revoked["arbiters"]) == (True, [admin])
    assert "not an arbiter" in cli.ok("arbiter", "revoke", new).out
    out = cli.ok("arbiter", "revoke", admin).out
    assert "no longer an arbiter" in out and "no arbiter is left" in out
    assert cli.ok("arbiter", "list", "--json").json["arbiters"] == []


def test_arbiter_commands_refuse_bad_addresses(cli: Any) -> None:
    cli.ok("deploy")
    cli.fails("arbiter", "grant", "0x1234", match="not an address")
    cli.fails("arbiter", "grant", "0x" + "00" * 20, match="zero address")
    cli.fails("arbiter", "list", "--escrow", "nope", match="not an address")
