"""Orders name what they buy (a registry product and a minimum expiry) and carry a seal key; deliveries carry the
hash of the sealed codes. A supplier cannot fill an order for 100.00 USD cards with 1.00 USD cards, or with cards
expiring before the buyer's minimum, and every such refusal is a typed error."""

from __future__ import annotations

from typing import Any

import pytest
from web3 import Web3
from web3.logs import DISCARD

from chain import errors
from chain.escrow import OrderStatus, account_seal_key
from chain.registry import ProductSpec
from tests.escrow.world import DAY, PRICE, WINDOW, World

#: Same SKU, same currency, a hundred times the face value: the substitution a dishonest supplier profits from.
HUNDRED_USD = ProductSpec.of("GIFT-USD", 10_000, "USD")
ONE_USD = ProductSpec.of("GIFT-USD", 100, "USD")


def _events(world: World, receipt: Any, name: str) -> list[dict[str, Any]]:
    return [dict(e["args"]) for e in getattr(world.escrow().contract.events, name)().process_receipt(
        receipt, errors=DISCARD)]


def test_order_for_100_usd_cards_cannot_be_delivered_from_a_1_usd_batch(world: World) -> None:
    expensive = world.anchor(count=64, product=HUNDRED_USD)
    cheap = world.anchor(count=64, product=ONE_USD)
    a, b = world.product_id(HUNDRED_USD), world.product_id(ONE_USD)
    assert a and b and a != b
    order_id = world.open(product_id=a, quantity=4)
    with pytest.raises(errors.ProductMismatch) as info:
        world.deliver(order_id, cheap, [(0, 4)])
    assert (info.value.order_id, info.value.batch_id) == (order_id, cheap)
    assert (info.value.order_product_id, info.value.batch_product_id) == (a, b)
    assert world.escrow().order(order_id).status is OrderStatus.FUNDED
    assert world.escrow().delivered_word(cheap, 0) == 0
    # The other way round as well, and the placeholder product of World.anchor is a product like any other.
    cheap_order = world.open(product_id=b, quantity=4)
    with pytest.raises(errors.ProductMismatch):
        world.deliver(cheap_order, expensive, [(0, 4)])
    with pytest.raises(errors.ProductMismatch):
        world.deliver(order_id, world.anchor(count=64), [(0, 4)])
    # The right batch delivers, and the order then reads the batch's product.
    world.deliver(order_id, expensive, [(0, 4)])
    assert world.escrow().order(order_id).product_id == a
    world.deliver(cheap_order, cheap, [(0, 4)])
    assert world.escrow().order(cheap_order).product_id == b


def test_batch_expiring_before_the_minimum_expiry_is_refused_expiry_too_soon(world: World) -> None:
    product = world.product_id()
    minimum = world.env.now() + 365 * DAY
    too_soon = world.anchor(count=16, expiry=minimum - 1)
    just_in_time = world.anchor(count=16, expiry=minimum)
    never = world.anchor(count=16, expiry=0)
    order_id = world.open(product_id=product, min_expiry=minimum)
    assert world.escrow().order(order_id).min_expiry == minimum
    with pytest.raises(errors.ExpiryTooSoon) as info:
        world.deliver(order_id, too_soon, [(0, 4)])
    assert (info.value.order_id, info.value.batch_id) == (order_id, too_soon)
    assert (info.value.expiry, info.value.min_expiry) == (minimum - 1, minimum)
    world.deliver(order_id, just_in_time, [(0, 4)])
    delivered = world.escrow().order(order_id)
    assert delivered.status is OrderStatus.DELIVERED
    assert delivered.min_expiry == 0  # not stored after delivery; the OrderOpened event keeps it
    assert world.escrow().opened_event(order_id)["minExpiry"] == minimum
    # A never-expiring batch passes any minimum expiry.
    forever = world.open(product_id=product, min_expiry=2**64 - 1)
    world.deliver(forever, never, [(0, 4)])
    assert world.escrow().order(forever).status is OrderStatus.DELIVERED
    # Without a minimum (0) any expiry goes, even one in the past.
    stale = world.anchor(count=16, expiry=world.env.now() - DAY)
    world.deliver(world.open(product_id=product), stale, [(0, 4)])


@pytest.mark.parametrize("preflight", [False, True])
def test_order_for_an_unknown_product_id_is_refused(world: World, preflight: bool) -> None:
    count = int(world.env.admin.call(world.env.registry().fn.productCount()))
    assert count >= 1
    for product_id in (0, count + 1, 2**32 - 1):
        with pytest.raises(errors.UnknownProduct) as info:
            world.open(product_id=product_id, preflight=preflight)
        assert info.value.product_id == product_id
    assert world.escrow().order_count() == 0
    # Once a batch of a product is anchored, the product can be ordered.
    world.anchor(count=4, product=HUNDRED_USD)
    assert world.product_id(HUNDRED_USD) == count + 1
    assert world.open(product_id=count + 1) == 1


@pytest.mark.parametrize("length", [0, 32, 34, 65])
def test_seal_key_of_the_wrong_length_is_refused_invalid_seal_key(world: World, length: int) -> None:
    escrow = world.escrow("buyer")
    with pytest.raises(errors.InvalidSealKey) as info:
        escrow.open_order(world.addr("supplier"), 1, 2, world.tokens["stable"], PRICE, world.env.now() + DAY,
                          WINDOW, seal_key=b"\x02" * length)
    assert info.value.length == length
    with pytest.raises(errors.InvalidSealKey):
        escrow.open_order_with_permit(world.addr("supplier"), 1, 2, world.tokens["stable"], PRICE,
                                      world.env.now() + DAY, WINDOW, seal_key=b"\x03" * length)
    assert escrow.order_count() == 0


def test_seal_key_is_emitted_in_order_opened(world: World) -> None:
    escrow = world.escrow("buyer")
    other_key = b"\x03" + b"\x77" * 32
    order_id = escrow.open_order(world.addr("supplier"), 1, 2, world.tokens["stable"], PRICE,
                                 world.env.now() + DAY, WINDOW, seal_key=other_key, min_expiry=12_345)
    event = escrow.opened_event(order_id)
    assert (event["productId"], event["minExpiry"], event["sealKey"]) == (1, 12_345, other_key)
    default = world.open("buyer2")
    assert world.escrow().opened_event(default)["sealKey"] == account_seal_key(world.env.client("buyer2"))


def test_delivery_without_a_sealed_hash_is_refused_missing_sealed_hash(world: World) -> None:
    batch_id = world.anchor(count=16)
    order_id = world.open()
    with pytest.raises(errors.MissingSealedHash) as info:
        world.deliver(order_id, batch_id, [(0, 4)], sealed_hash=b"\0" * 32)
    assert info.value.order_id == order_id
    assert world.escrow().order(order_id).status is OrderStatus.FUNDED


def test_sealed_hash_is_readable_in_order_and_in_order_delivered(world: World) -> None:
    batch_id = world.anchor(count=16)
    order_id = world.open()
    assert world.escrow().order(order_id).sealed_hash == b""
    sealed = Web3.keccak(text="the sealed codes of order 1")
    receipt = world.deliver(order_id, batch_id, [(2, 3), (8, 1)], sealed_hash=sealed)
    (event,) = _events(world, receipt, "OrderDelivered")
    assert (event["orderId"], event["batchId"], event["sealedHash"]) == (order_id, batch_id, sealed)
    assert [(r["start"], r["length"]) for r in event["ranges"]] == [(2, 3), (8, 1)]
    order = world.escrow().order(order_id)
    assert order.sealed_hash == sealed
    assert (order.product_id, order.batch_id) == (world.product_id(), batch_id)
    # It stays after settlement: the record of the delivery that was made.
    world.escrow("buyer").confirm(order_id)
    assert world.escrow().order(order_id).sealed_hash == sealed
