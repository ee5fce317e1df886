"""Pull payments: withdraw / withdrawTo, fee accrual, hostile tokens (no-return, blocklist, re-entrant)."""

from __future__ import annotations

from typing import Any

import pytest
from web3 import Web3
from web3.logs import DISCARD

from chain import errors
from chain.escrow import OrderStatus
from tests.escrow.world import DAY, FEE_BPS, MINT, PRICE, WINDOW, World

REENTRANT_SELECTOR = Web3.keccak(text="ReentrancyGuardReentrantCall()")[:4]


def _settled(world: World, token: str, quantity: int = 4, revoke: tuple[int, ...] = (), buyer: str = "buyer") -> int:
    order_id, batch_id, _ = world.delivered_order(buyer, token=token, quantity=quantity)
    if revoke:
        world.env.registry("supplier").revoke_cards(batch_id, list(revoke), 1)
    world.escrow(buyer).confirm(order_id)
    return order_id


def test_withdraw_pays_the_whole_credit(world: World) -> None:
    _settled(world, "stable", quantity=10, revoke=(0, 1))
    supplier_credit = world.credits("supplier", "stable")
    assert supplier_credit == 8 * PRICE - 8 * PRICE * FEE_BPS // 10_000
    escrow = world.escrow("supplier")
    amount = escrow.withdraw(world.tokens["stable"])
    assert amount == supplier_credit
    assert world.balance("supplier", "stable") == supplier_credit
    assert world.credits("supplier", "stable") == 0
    assert world.escrow("buyer").withdraw(world.tokens["stable"]) == 2 * PRICE
    assert world.balance("buyer", "stable") == MINT - 10 * PRICE + 2 * PRICE
    fee = world.escrow("feeto").withdraw(world.tokens["stable"])
    assert fee == 8 * PRICE * FEE_BPS // 10_000
    assert world.escrow().fees_accrued(world.tokens["stable"]) == 0
    assert world.balance("escrow", "stable") == 0


def test_withdraw_event_and_withdraw_to(world: World) -> None:
    _settled(world, "stable")
    credit = world.credits("supplier", "stable")
    escrow = world.escrow("supplier")
    receipt = escrow.client.transact(escrow.fn.withdrawTo(world.tokens["stable"], world.addr("stranger")),
                                     gas=200_000)
    (event,) = escrow.contract.events.Withdrawn().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"account": world.addr("supplier"), "token": world.tokens["stable"],
                                   "to": world.addr("stranger"), "amount": credit}
    assert world.balance("stranger", "stable") == credit
    assert world.balance("supplier", "stable") == 0


def test_nothing_to_withdraw(world: World) -> None:
    for who in ("stranger", "supplier", "feeto"):
        with pytest.raises(errors.NothingToWithdraw) as info:
            world.escrow(who).withdraw(world.tokens["stable"])
        assert (info.value.account, info.value.token) == (world.addr(who).lower(), world.tokens["stable"].lower())
    _settled(world, "stable")
    world.escrow("supplier").withdraw(world.tokens["stable"])
    with pytest.raises(errors.NothingToWithdraw):  # a credit is paid once
        world.escrow("supplier").withdraw(world.tokens["stable"])
    with pytest.raises(errors.NothingToWithdraw):  # credits are per token
        world.escrow("feeto").withdraw(world.tokens["stable2"])


def test_withdraw_to_zero_address(world: World) -> None:
    _settled(world, "stable")
    with pytest.raises(errors.ZeroAddress):
        world.escrow("supplier").withdraw(world.tokens["stable"], to="0x" + "00" * 20)


def test_fee_recipient_change_credits_accrued_fees_to_the_old_one(world: World) -> None:
    _settled(world, "stable", quantity=10)
    _settled(world, "stable2", quantity=10)
    fee = 10 * PRICE * FEE_BPS // 10_000
    escrow = world.escrow()
    receipt = escrow.set_fee_recipient(world.addr("stranger"))
    (event,) = escrow.contract.events.FeeRecipientSet().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["previous"], event["args"]["feeRecipient"]) == (world.addr("feeto"), world.addr("stranger"))
    assert escrow.rules().fee_recipient == world.addr("stranger")
    for token in ("stable", "stable2"):
        assert world.credits("feeto", token) == fee
        assert world.credits("stranger", token) == 0
        assert escrow.fees_accrued(world.tokens[token]) == 0
    _settled(world, "stable", quantity=20)
    assert world.credits("stranger", "stable") == 2 * fee
    assert world.credits("feeto", "stable") == fee
    assert world.escrow("feeto").withdraw(world.tokens["stable"]) == fee
    assert world.escrow("stranger").withdraw(world.tokens["stable"]) == 2 * fee
    with pytest.raises(errors.ZeroAddress):
        escrow.set_fee_recipient("0x" + "00" * 20)


def test_fee_recipient_who_is_also_a_buyer_gets_both(world: World) -> None:
    world.escrow().set_fee_recipient(world.addr("buyer"))
    _settled(world, "stable", quantity=10, revoke=(3,))
    fee = 9 * PRICE * FEE_BPS // 10_000
    assert world.credits("buyer", "stable") == PRICE + fee
    assert world.escrow("buyer").withdraw(world.tokens["stable"]) == PRICE + fee


# --------------------------------------------------------------------------- USDT-like token


def test_no_return_token_full_cycle(world: World) -> None:
    _settled(world, "noret", quantity=6, revoke=(2,))
    total = world.balance("escrow", "noret")
    assert total == 6 * PRICE
    paid = sum(world.escrow(who).withdraw(world.tokens["noret"]) for who in ("supplier", "buyer", "feeto"))
    assert paid == total
    assert world.balance("escrow", "noret") == 0
    assert world.balance("supplier", "noret") == 5 * PRICE - 5 * PRICE * FEE_BPS // 10_000


# --------------------------------------------------------------------------- blocklist


def test_blocklisted_supplier_cannot_lock_anyone_else(world: World) -> None:
    _settled(world, "block", quantity=10, revoke=(0, 1, 2))
    refunded = world.open("buyer2", token="block", quantity=2, deadline=world.env.now() + 2 * 3_600)
    world.token_tx("block", "stranger", "setBlocked", world.addr("supplier"), True)
    with pytest.raises(errors.Blocklisted) as info:
        world.escrow("supplier").withdraw(world.tokens["block"])
    assert info.value.account == world.addr("supplier").lower()
    supplier_credit = world.credits("supplier", "block")
    assert supplier_credit > 0  # kept, not lost
    # Everybody else is paid: the buyer's refund, the platform fee, another buyer's cancelled order.
    assert world.escrow("buyer").withdraw(world.tokens["block"]) == 3 * PRICE
    assert world.escrow("feeto").withdraw(world.tokens["block"]) == 7 * PRICE * FEE_BPS // 10_000
    world.advance(3 * 3_600)
    world.escrow("buyer2").cancel(refunded)
    assert world.escrow("buyer2").withdraw(world.tokens["block"]) == 2 * PRICE
    # And the supplier itself can take its money elsewhere.
    assert world.escrow("supplier").withdraw(world.tokens["block"], to=world.addr("issuer")) == supplier_credit
    assert world.balance("issuer", "block") == supplier_credit
    assert world.balance("escrow", "block") == 0


def test_blocklisted_buyer_cannot_lock_the_supplier(world: World) -> None:
    _settled(world, "block", quantity=4, revoke=(1,))
    world.token_tx("block", "stranger", "setBlocked", world.addr("buyer"), True)
    with pytest.raises(errors.Blocklisted):
        world.escrow("buyer").withdraw(world.tokens["block"])
    assert world.escrow("supplier").withdraw(world.tokens["block"]) == 3 * PRICE - 3 * PRICE * FEE_BPS // 10_000
    assert world.credits("buyer", "block") == PRICE


def test_blocklisted_fee_recipient_can_be_replaced(world: World) -> None:
    _settled(world, "block", quantity=10)
    world.token_tx("block", "stranger", "setBlocked", world.addr("feeto"), True)
    with pytest.raises(errors.Blocklisted):
        world.escrow("feeto").withdraw(world.tokens["block"])
    assert world.escrow("supplier").withdraw(world.tokens["block"]) > 0
    fee = 10 * PRICE * FEE_BPS // 10_000
    assert world.escrow("feeto").withdraw(world.tokens["block"], to=world.addr("arbiter")) == fee


# --------------------------------------------------------------------------- re-entrant token


def _arm(world: World, fn_name: str, args: list[Any], swallow: bool) -> None:
    data = world.escrow().contract.encode_abi(fn_name, args=args)
    world.token_tx("reent", "stranger", "arm", world.escrow_address, data, swallow, gas=1_000_000)


def _reentry(world: World) -> tuple[bool, bool, bytes]:
    token = world.token_contract("reent")
    call = world.env.admin.call
    return (call(token.functions.attempted()), call(token.functions.succeeded()), bytes(call(token.functions.result())))


def _calls(world: World, order_id: int) -> list[tuple[str, list[Any]]]:
    token = world.tokens["reent"]
    deadline = world.env.now() + DAY
    return [
        ("withdraw", [token]),
        ("withdrawTo", [token, world.addr("stranger")]),
        ("confirm", [order_id]),
        ("release", [order_id]),
        ("dispute", [order_id]),
        ("cancel", [order_id]),
        ("resolve", [order_id, 0, 0]),
        ("deliver", [order_id, b"\0" * 32, [(0, 1)], b"\1" * 32]),
        ("openOrder", [(world.addr("supplier"), 1, 0, 1, token, 1, deadline, WINDOW), b"\2" * 33]),
        ("disputeMembership", [order_id]),
        ("proveDelivery", [order_id, [(0, 1, 0, b"\0" * 32)], [], []]),
        ("withdrawDispute", [order_id]),
        ("setFee", [0]),
    ]


def test_reentrancy_during_funding_reverts_the_order(world: World) -> None:
    before = (world.balance("buyer", "reent"), world.balance("escrow", "reent"))
    _arm(world, "withdraw", [world.tokens["reent"]], swallow=False)
    with pytest.raises(errors.ReentrancyGuardReentrantCall):
        world.escrow("buyer").open_order(world.addr("supplier"), 1, 4, world.tokens["reent"], PRICE,
                                         world.env.now() + DAY, WINDOW, gas=800_000)
    assert (world.balance("buyer", "reent"), world.balance("escrow", "reent")) == before
    assert world.escrow().order_count() == 0


@pytest.mark.parametrize("index", range(13))
def test_every_entry_point_is_guarded_during_funding(world: World, index: int) -> None:
    probe_id, _, _ = world.delivered_order(token="reent", quantity=2)
    fn_name, args = _calls(world, probe_id)[index]
    _arm(world, fn_name, args, swallow=True)
    order_id = world.escrow("buyer2").open_order(world.addr("supplier"), 1, 4, world.tokens["reent"], PRICE,
                                                 world.env.now() + DAY, WINDOW, gas=800_000)
    attempted, succeeded, result = _reentry(world)
    assert (attempted, succeeded, result) == (True, False, REENTRANT_SELECTOR), fn_name
    assert world.escrow().order(order_id).amount == 4 * PRICE
    assert world.balance("escrow", "reent") == 6 * PRICE


@pytest.mark.parametrize("target", ["withdraw", "confirm", "release"])
def test_reentrancy_during_withdrawal_keeps_funds_intact(world: World, target: str) -> None:
    _settled(world, "reent", quantity=10)
    pending, _, delivered_at = world.delivered_order("buyer2", token="reent", quantity=3)
    world.travel_to(delivered_at + WINDOW + 10)
    credit = world.credits("supplier", "reent")
    escrow_before = world.balance("escrow", "reent")
    args = [world.tokens["reent"]] if target == "withdraw" else [pending]
    # Bubbling: the whole withdrawal reverts, nothing moves.
    _arm(world, target, args, swallow=False)
    with pytest.raises(errors.ReentrancyGuardReentrantCall):
        world.escrow("supplier").withdraw(world.tokens["reent"], gas=800_000)
    assert world.credits("supplier", "reent") == credit
    assert world.balance("escrow", "reent") == escrow_before
    # Swallowed: the withdrawal completes once, the re-entry achieved nothing.
    _arm(world, target, args, swallow=True)
    assert world.escrow("supplier").withdraw(world.tokens["reent"], gas=800_000) == credit
    assert _reentry(world) == (True, False, REENTRANT_SELECTOR)
    assert world.credits("supplier", "reent") == 0
    assert world.balance("supplier", "reent") == credit
    assert world.balance("escrow", "reent") == escrow_before - credit
    assert world.escrow().order(pending).status is OrderStatus.DELIVERED
