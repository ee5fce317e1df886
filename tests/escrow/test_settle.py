"""confirm / release / dispute / resolve / cancel: who, when, and exactly what gets credited."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from chain import errors
from chain.escrow import OrderStatus
from tests.escrow.world import DAY, FEE_BPS, PRICE, WINDOW, World


def _split(valid: int, revoked: int, price: int = PRICE, fee_bps: int = FEE_BPS) -> tuple[int, int, int]:
    gross = valid * price
    fee = gross * fee_bps // 10_000
    return gross - fee, fee, revoked * price


def _assert_credits(world: World, token: str, supplier: int, fee: int, buyer: int, *, buyer_name: str = "buyer",
                    supplier_name: str = "supplier") -> None:
    assert world.credits(supplier_name, token) == supplier
    assert world.credits("feeto", token) == fee
    assert world.escrow().fees_accrued(world.tokens[token]) == fee
    assert world.credits(buyer_name, token) == buyer


# --------------------------------------------------------------------------- confirm


def test_confirm_pays_supplier_minus_fee(world: World) -> None:
    order_id, _, _ = world.delivered_order(quantity=8)
    settlement = world.escrow("buyer").confirm(order_id)
    supplier, fee, refund = _split(8, 0)
    assert (settlement.revoked_cards, settlement.supplier_amount, settlement.fee, settlement.buyer_refund) == (
        0, supplier, fee, refund)
    _assert_credits(world, "stable", supplier, fee, 0)
    assert world.escrow().order(order_id).status is OrderStatus.CONFIRMED
    assert supplier + fee == 8 * PRICE


def test_confirm_refunds_revoked_cards(world: World) -> None:
    batch_id = world.anchor(count=1024)
    ranges = [(250, 10), (700, 300), (1020, 2)]
    quantity = sum(n for _, n in ranges)
    order_id = world.open(quantity=quantity, unit_price=3)
    world.deliver(order_id, batch_id, ranges)
    revoked = [250, 259, 700, 767, 768, 999, 1021, 5, 1000]  # 5 and 1000 were not delivered in this order
    world.env.registry("supplier").revoke_cards(batch_id, sorted(revoked), 1)
    counted = sum(1 for i in revoked if any(s <= i < s + n for s, n in ranges))
    assert counted == 7
    escrow = world.escrow("buyer")
    assert escrow.revoked_count(order_id) == counted
    settlement = escrow.confirm(order_id)
    supplier, fee, refund = _split(quantity - counted, counted, price=3)
    assert (settlement.revoked_cards, settlement.supplier_amount, settlement.fee, settlement.buyer_refund) == (
        counted, supplier, fee, refund)
    _assert_credits(world, "stable", supplier, fee, refund)


def test_whole_batch_revoked_refunds_everything(world: World) -> None:
    order_id, batch_id, _ = world.delivered_order(quantity=6)
    world.env.registry("supplier").revoke_batch(batch_id, 3)
    settlement = world.escrow("buyer").confirm(order_id)
    assert (settlement.revoked_cards, settlement.supplier_amount, settlement.fee) == (6, 0, 0)
    _assert_credits(world, "stable", 0, 0, 6 * PRICE)


def test_batch_revocation_does_not_refund_redeemed_cards(world: World) -> None:
    """Cards used before their batch was revoked are paid for: only the unused ones are refunded."""
    batch_id = world.anchor(count=1024)
    ranges = [(250, 10), (600, 2)]  # two bitmap words
    order_id = world.open(quantity=12)
    world.deliver(order_id, batch_id, ranges)
    registry = world.env.registry("supplier")
    registry.mark_redeemed(batch_id, [250, 255, 259, 601])
    registry.revoke_batch(batch_id, 3)
    escrow = world.escrow("buyer")
    assert escrow.revoked_count(order_id) == 8
    settlement = escrow.confirm(order_id)
    supplier, fee, refund = _split(4, 8)
    assert (settlement.revoked_cards, settlement.supplier_amount, settlement.fee, settlement.buyer_refund) == (
        8, supplier, fee, refund)
    _assert_credits(world, "stable", supplier, fee, refund)


def test_redeemed_cards_are_paid(world: World) -> None:
    order_id, batch_id, _ = world.delivered_order(quantity=4)
    world.env.registry("supplier").mark_redeemed(batch_id, [0, 1, 2, 3])
    settlement = world.escrow("buyer").confirm(order_id)
    assert settlement.revoked_cards == 0
    assert settlement.supplier_amount + settlement.fee == 4 * PRICE


def test_confirm_after_the_window_is_still_allowed(world: World) -> None:
    order_id, _, delivered_at = world.delivered_order(quantity=2)
    world.travel_to(delivered_at + WINDOW + 100)
    assert world.escrow("buyer").confirm(order_id).supplier_amount == _split(2, 0)[0]


def test_confirm_only_by_the_buyer(world: World) -> None:
    order_id, _, _ = world.delivered_order(quantity=2)
    for who in ("supplier", "stranger", "buyer2", "arbiter"):
        with pytest.raises(errors.NotOrderBuyer) as info:
            world.escrow(who).confirm(order_id)
        assert (info.value.order_id, info.value.caller) == (order_id, world.addr(who).lower())


def test_confirm_needs_a_delivered_order(world: World) -> None:
    order_id = world.open(quantity=2)
    with pytest.raises(errors.InvalidOrderStatus) as info:
        world.escrow("buyer").confirm(order_id)
    assert (info.value.status, info.value.required) == (OrderStatus.FUNDED, OrderStatus.DELIVERED)
    with pytest.raises(errors.OrderNotFound):
        world.escrow("buyer").confirm(42)


def test_settled_order_cannot_settle_again(world: World) -> None:
    order_id, _, delivered_at = world.delivered_order(quantity=2)
    world.escrow("buyer").confirm(order_id)
    world.travel_to(delivered_at + WINDOW + 10)
    for action in (lambda: world.escrow("buyer").confirm(order_id), lambda: world.escrow("stranger").release(order_id),
                   lambda: world.escrow("buyer").dispute(order_id), lambda: world.escrow("buyer").cancel(order_id)):
        with pytest.raises(errors.InvalidOrderStatus) as info:
            action()
        assert info.value.status == OrderStatus.CONFIRMED
    with pytest.raises(errors.InvalidOrderStatus):
        world.escrow("arbiter").resolve(order_id, 0, 2 * PRICE)


def test_confirm_event(world: World) -> None:
    order_id, _, _ = world.delivered_order(quantity=3)
    receipt = world.escrow("buyer").confirm(order_id).receipt
    (event,) = world.escrow().contract.events.OrderConfirmed().process_receipt(receipt, errors=DISCARD)
    supplier, fee, _ = _split(3, 0)
    assert dict(event["args"]) == {"orderId": order_id, "revokedCards": 0, "supplierAmount": supplier, "fee": fee,
                                   "buyerRefund": 0}


# --------------------------------------------------------------------------- release


def test_release_by_anyone_after_the_window(world: World) -> None:
    order_id, batch_id, delivered_at = world.delivered_order(quantity=5)
    world.env.registry("supplier").revoke_cards(batch_id, [1], 1)
    world.travel_to(delivered_at + WINDOW + 10)
    settlement = world.escrow("stranger").release(order_id)
    supplier, fee, refund = _split(4, 1)
    assert (settlement.revoked_cards, settlement.supplier_amount, settlement.fee, settlement.buyer_refund) == (
        1, supplier, fee, refund)
    _assert_credits(world, "stable", supplier, fee, refund)
    assert world.escrow().order(order_id).status is OrderStatus.RELEASED
    (event,) = world.escrow().contract.events.OrderReleased().process_receipt(settlement.receipt, errors=DISCARD)
    assert event["args"]["caller"] == world.addr("stranger")


def test_release_before_the_window_ends(world: World) -> None:
    order_id, _, delivered_at = world.delivered_order(quantity=5)
    world.travel_to(delivered_at + WINDOW - 100)
    with pytest.raises(errors.DisputeWindowOpen) as info:
        world.escrow("supplier").release(order_id)
    assert (info.value.order_id, info.value.window_end) == (order_id, delivered_at + WINDOW)


def test_release_needs_delivery(world: World) -> None:
    order_id = world.open()
    with pytest.raises(errors.InvalidOrderStatus):
        world.escrow("supplier").release(order_id)
    with pytest.raises(errors.OrderNotFound):
        world.escrow("supplier").release(7)


# --------------------------------------------------------------------------- dispute / resolve


def test_dispute_freezes_the_order(world: World) -> None:
    order_id, _, delivered_at = world.delivered_order(quantity=4)
    receipt = world.escrow("buyer").dispute(order_id)
    (event,) = world.escrow().contract.events.OrderDisputed().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["orderId"] == order_id
    assert world.escrow().order(order_id).status is OrderStatus.DISPUTED
    world.travel_to(delivered_at + WINDOW + 10)
    with pytest.raises(errors.DisputeDeadlineNotPassed):  # until the dispute's deadline (tests/escrow/test_disputes.py)
        world.escrow("stranger").release(order_id)
    with pytest.raises(errors.InvalidOrderStatus):
        world.escrow("buyer").confirm(order_id)
    with pytest.raises(errors.InvalidOrderStatus):
        world.escrow("buyer").dispute(order_id)


def test_dispute_only_within_the_window(world: World) -> None:
    order_id, _, delivered_at = world.delivered_order(quantity=4)
    world.travel_to(delivered_at + WINDOW + 10)
    with pytest.raises(errors.DisputeWindowClosed) as info:
        world.escrow("buyer").dispute(order_id)
    assert info.value.window_end == delivered_at + WINDOW


def test_dispute_only_by_the_buyer_and_after_delivery(world: World) -> None:
    order_id = world.open()
    with pytest.raises(errors.InvalidOrderStatus):
        world.escrow("buyer").dispute(order_id)
    batch_id = world.anchor(count=10)
    world.deliver(order_id, batch_id, [(0, 4)])
    for who in ("supplier", "stranger"):
        with pytest.raises(errors.NotOrderBuyer):
            world.escrow(who).dispute(order_id)


@pytest.mark.parametrize("buyer_share", [0, 1, 4 * PRICE // 2, 4 * PRICE - 1, 4 * PRICE])
def test_resolve_splits_with_fee_on_the_supplier_share_only(world: World, buyer_share: int) -> None:
    order_id, _, _ = world.delivered_order(quantity=4)
    world.escrow("buyer").dispute(order_id)
    supplier_share = 4 * PRICE - buyer_share
    receipt = world.escrow("arbiter").resolve(order_id, buyer_share, supplier_share)
    fee = supplier_share * FEE_BPS // 10_000
    _assert_credits(world, "stable", supplier_share - fee, fee, buyer_share)
    assert world.escrow().order(order_id).status is OrderStatus.RESOLVED
    (event,) = world.escrow().contract.events.OrderResolved().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"orderId": order_id, "arbiter": world.addr("arbiter"), "buyerAmount": buyer_share,
                                   "supplierAmount": supplier_share, "fee": fee}


@pytest.mark.parametrize("split", [(1, 1), (4 * PRICE, 1), (4 * PRICE + 1, 2**256 - 1), (0, 4 * PRICE - 1)])
def test_resolve_split_must_add_up(world: World, split: tuple[int, int]) -> None:
    order_id, _, _ = world.delivered_order(quantity=4)
    world.escrow("buyer").dispute(order_id)
    with pytest.raises(errors.InvalidSplit) as info:
        world.escrow("arbiter").resolve(order_id, *split)
    assert (info.value.buyer_amount, info.value.supplier_amount, info.value.total) == (*split, 4 * PRICE)


def test_resolve_only_by_an_arbiter_and_only_disputes(world: World) -> None:
    order_id, _, _ = world.delivered_order(quantity=4)
    with pytest.raises(errors.InvalidOrderStatus) as info:
        world.escrow("arbiter").resolve(order_id, 0, 4 * PRICE)
    assert info.value.required == OrderStatus.DISPUTED
    world.escrow("buyer").dispute(order_id)
    for who in ("admin", "buyer", "supplier", "stranger"):
        with pytest.raises(errors.AccessControlUnauthorizedAccount):
            world.escrow(who).resolve(order_id, 0, 4 * PRICE)
    world.escrow().grant_arbiter(world.addr("stranger"))
    world.escrow("stranger").resolve(order_id, 4 * PRICE, 0)
    assert world.credits("buyer", "stable") == 4 * PRICE


# --------------------------------------------------------------------------- cancel


def test_cancel_after_deadline_refunds_everything(world: World) -> None:
    deadline = world.env.now() + DAY
    order_id = world.open(quantity=4, deadline=deadline)
    world.travel_to(deadline + 10)
    receipt = world.escrow("buyer").cancel(order_id)
    (event,) = world.escrow().contract.events.OrderCancelled().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"orderId": order_id, "refund": 4 * PRICE}
    _assert_credits(world, "stable", 0, 0, 4 * PRICE)
    assert world.escrow().order(order_id).status is OrderStatus.CANCELLED
    with pytest.raises(errors.InvalidOrderStatus):  # and the supplier cannot deliver it any more
        world.deliver(order_id, world.anchor(count=10), [(0, 4)])


def test_cancel_before_deadline(world: World) -> None:
    deadline = world.env.now() + DAY
    order_id = world.open(quantity=4, deadline=deadline)
    world.travel_to(deadline - 100)
    with pytest.raises(errors.DeliveryDeadlineNotPassed) as info:
        world.escrow("buyer").cancel(order_id)
    assert (info.value.order_id, info.value.deadline) == (order_id, deadline)


def test_cancel_only_by_the_buyer_and_only_undelivered(world: World) -> None:
    deadline = world.env.now() + DAY
    order_id = world.open(quantity=4, deadline=deadline)
    delivered = world.open(quantity=4, deadline=deadline)
    world.deliver(delivered, world.anchor(count=10), [(0, 4)])
    world.travel_to(deadline + 10)
    for who in ("supplier", "stranger"):
        with pytest.raises(errors.NotOrderBuyer):
            world.escrow(who).cancel(order_id)
    with pytest.raises(errors.InvalidOrderStatus) as info:
        world.escrow("buyer").cancel(delivered)
    assert info.value.status == OrderStatus.DELIVERED
    with pytest.raises(errors.OrderNotFound):
        world.escrow("buyer").cancel(1000)


# --------------------------------------------------------------------------- several tokens, several orders


def test_orders_in_several_tokens_keep_separate_books(world: World) -> None:
    a, _, _ = world.delivered_order(token="stable", quantity=3)
    b, _, _ = world.delivered_order("buyer2", token="stable2", quantity=5, unit_price=7)
    c, _, _ = world.delivered_order(token="noret", quantity=2)
    world.escrow("buyer").confirm(a)
    world.escrow("buyer2").confirm(b)
    world.escrow("buyer").confirm(c)
    _assert_credits(world, "stable", *_split(3, 0)[:2], 0)
    _assert_credits(world, "stable2", *_split(5, 0, price=7)[:2], 0, buyer_name="buyer2")
    _assert_credits(world, "noret", *_split(2, 0)[:2], 0)
    for token in ("stable", "stable2", "noret"):
        assert world.balance("escrow", token) == world.credits("supplier", token) + world.credits("feeto", token)
