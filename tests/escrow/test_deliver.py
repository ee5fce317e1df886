"""deliver: exact quantity from the supplier's own batches, unavailable cards refused, a card sold once."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from chain import errors
from chain.escrow import CardRange, OrderStatus
from tests.escrow.world import DAY, World


def _bits(*indices: int) -> int:
    return sum(1 << i for i in indices)


def test_deliver_one_range(world: World) -> None:
    order_id = world.open(quantity=10)
    batch_id = world.anchor(count=100)
    receipt = world.deliver(order_id, batch_id, [(20, 10)])
    escrow = world.escrow()
    order = escrow.order(order_id)
    assert order.status is OrderStatus.DELIVERED
    assert order.batch_id == batch_id
    assert order.delivered_at == world.block_time(receipt)
    assert order.range_count == 1
    assert escrow.delivery(order_id) == (batch_id, [CardRange(20, 10)])
    assert escrow.delivered_word(batch_id, 0) == ((1 << 10) - 1) << 20
    (event,) = escrow.contract.events.OrderDelivered().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["orderId"] == order_id
    assert event["args"]["batchId"] == batch_id
    assert [(r["start"], r["length"]) for r in event["args"]["ranges"]] == [(20, 10)]


def test_deliver_many_ranges_across_words_and_extra_storage(world: World) -> None:
    ranges = [(0, 3), (250, 10), (300, 1), (511, 2), (600, 256), (1000, 4)]  # 6 ranges: 3 inline + 3 extra
    quantity = sum(n for _, n in ranges)
    order_id = world.open(quantity=quantity)
    batch_id = world.anchor(count=1100)
    world.deliver(order_id, batch_id, ranges)
    escrow = world.escrow()
    assert escrow.delivery(order_id) == (batch_id, [CardRange(s, n) for s, n in ranges])
    assert escrow.order(order_id).range_count == 6
    expected: dict[int, int] = {}
    for start, length in ranges:
        for card in range(start, start + length):
            expected[card >> 8] = expected.get(card >> 8, 0) | (1 << (card & 0xFF))
    assert sorted(expected) == [0, 1, 2, 3]
    for word, bits in expected.items():
        assert escrow.delivered_word(batch_id, word) == bits
    assert escrow.delivered_word(batch_id, 4) == 0


def test_deliver_maximum_ranges(world: World) -> None:
    ranges = [(2 * i, 1) for i in range(64)]
    order_id = world.open(quantity=64)
    batch_id = world.anchor(count=200)
    world.deliver(order_id, batch_id, ranges)
    assert world.escrow().delivery(order_id)[1] == [CardRange(s, n) for s, n in ranges]


def test_a_card_is_sold_once(world: World) -> None:
    batch_id = world.anchor(count=100)
    first = world.open(quantity=5)
    world.deliver(first, batch_id, [(0, 5)])
    second = world.open("buyer2", quantity=5)
    with pytest.raises(errors.CardAlreadyDelivered) as info:
        world.deliver(second, batch_id, [(3, 5)])
    assert (info.value.batch_id, info.value.index) == (batch_id, 3)
    world.deliver(second, batch_id, [(5, 5)])


def test_overlapping_ranges_in_one_delivery_are_refused(world: World) -> None:
    batch_id = world.anchor(count=100)
    order_id = world.open(quantity=6)
    with pytest.raises(errors.CardAlreadyDelivered) as info:
        world.deliver(order_id, batch_id, [(10, 3), (11, 3)])
    assert info.value.index == 11


def test_revoked_card_refused(world: World) -> None:
    batch_id = world.anchor(count=600)
    world.env.registry("supplier").revoke_cards(batch_id, [300, 301], 1)
    order_id = world.open(quantity=10)
    with pytest.raises(errors.CardRevoked) as info:
        world.deliver(order_id, batch_id, [(295, 10)])
    assert (info.value.batch_id, info.value.index) == (batch_id, 300)
    world.deliver(order_id, batch_id, [(290, 10)])


def test_redeemed_card_refused(world: World) -> None:
    batch_id = world.anchor(count=600)
    world.env.registry("supplier").mark_redeemed(batch_id, [7])
    order_id = world.open(quantity=4)
    with pytest.raises(errors.CardAlreadyRedeemed) as info:
        world.deliver(order_id, batch_id, [(5, 4)])
    assert info.value.index == 7


def test_revoked_batch_refused(world: World) -> None:
    batch_id = world.anchor(count=50)
    world.env.registry("supplier").revoke_batch(batch_id, 2)
    order_id = world.open(quantity=4)
    with pytest.raises(errors.CardRevoked) as info:
        world.deliver(order_id, batch_id, [(10, 4)])
    assert info.value.index == 10


def test_deliver_only_by_the_supplier(world: World) -> None:
    order_id = world.open(quantity=4)
    batch_id = world.anchor("issuer2", count=10)
    for who in ("issuer2", "buyer", "stranger"):
        with pytest.raises(errors.NotOrderSupplier) as info:
            world.deliver(order_id, batch_id, [(0, 4)], who=who)
        assert info.value.caller == world.addr(who).lower()


def test_deliver_only_from_own_anchored_batches(world: World) -> None:
    order_id = world.open(quantity=4)
    others = world.anchor("issuer2", count=10)
    with pytest.raises(errors.BatchNotOwnedBySupplier) as info:
        world.deliver(order_id, others, [(0, 4)])
    assert (info.value.batch_id, info.value.supplier) == (others, world.addr("supplier").lower())
    unanchored = world.batch_id("supplier")
    with pytest.raises(errors.BatchNotOwnedBySupplier):
        world.deliver(order_id, unanchored, [(0, 4)])


def test_deliver_exact_quantity(world: World) -> None:
    order_id = world.open(quantity=4)
    batch_id = world.anchor(count=10)
    for ranges, delivered in (([(0, 3)], 3), ([(0, 3), (5, 2)], 5)):
        with pytest.raises(errors.QuantityMismatch) as info:
            world.deliver(order_id, batch_id, ranges)
        assert (info.value.order_id, info.value.quantity, info.value.delivered) == (order_id, 4, delivered)


@pytest.mark.parametrize("rng", [(0, 0), (8, 4), (2**32 - 1, 4)])
def test_deliver_invalid_range(world: World, rng: tuple[int, int]) -> None:
    order_id = world.open(quantity=4)
    batch_id = world.anchor(count=10)
    with pytest.raises(errors.InvalidCardRange) as info:
        world.deliver(order_id, batch_id, [rng, (0, 4)])
    assert (info.value.start, info.value.length, info.value.card_count) == (*rng, 10)


@pytest.mark.parametrize("count", [0, 65])
def test_deliver_range_count(world: World, count: int) -> None:
    order_id = world.open(quantity=max(count, 1))
    batch_id = world.anchor(count=200)
    with pytest.raises(errors.InvalidRangeCount) as info:
        world.deliver(order_id, batch_id, [(2 * i, 1) for i in range(count)])
    assert (info.value.count, info.value.max_ranges) == (count, 64)


def test_deliver_after_deadline(world: World) -> None:
    deadline = world.env.now() + 2 * 3_600
    order_id = world.open(deadline=deadline, quantity=2)
    batch_id = world.anchor(count=10)
    world.travel_to(deadline + 10)
    with pytest.raises(errors.DeliveryDeadlinePassed) as info:
        world.deliver(order_id, batch_id, [(0, 2)])
    assert (info.value.order_id, info.value.deadline) == (order_id, deadline)


def test_deliver_just_before_deadline(world: World) -> None:
    deadline = world.env.now() + DAY
    order_id = world.open(deadline=deadline, quantity=2)
    batch_id = world.anchor(count=10)
    world.travel_to(deadline - 100)
    world.deliver(order_id, batch_id, [(0, 2)])


def test_deliver_twice_or_unknown_order(world: World) -> None:
    order_id, batch_id, _ = world.delivered_order(quantity=2)
    with pytest.raises(errors.InvalidOrderStatus) as info:
        world.deliver(order_id, batch_id, [(5, 2)])
    assert (info.value.status, info.value.required) == (OrderStatus.DELIVERED, OrderStatus.FUNDED)
    with pytest.raises(errors.OrderNotFound) as info2:
        world.deliver(99, batch_id, [(5, 2)])
    assert info2.value.order_id == 99


def test_supplier_struck_off_cannot_deliver(world: World) -> None:
    order_id = world.open(quantity=2)
    batch_id = world.anchor(count=10)
    world.env.registry().revoke_issuer(world.addr("supplier"))
    with pytest.raises(errors.SupplierNotIssuer):
        world.deliver(order_id, batch_id, [(0, 2)])
    assert not world.env.registry().is_issuer(world.addr("supplier"))
