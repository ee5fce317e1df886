"""Membership disputes: the buyer disputes that the delivered cards are in their batch at all, and the supplier
proves them on chain (proveDelivery: the cards' public leaf fields and an OpenZeppelin multiproof against the
anchored root, the leaves rebuilt with the batch's product and expiry) before the dispute's deadline. Proving every
card settles at once; at the deadline every unproven card is refunded.

The attacks: a supplier anchoring a junk root over "phantom" cards, proving made-up leaves, a leaf of another
product than its batch's, a card of another order, proving outside a membership dispute or too late."""

from __future__ import annotations

from typing import Any

import pytest
from web3.logs import DISCARD

from chain import errors
from chain.escrow import OrderStatus, ProvenCard
from chain.registry import CardStatus, ProductSpec
from tests.escrow.cards import RealBatch, forged, proven_card, real_leaves
from tests.escrow.world import FEE_BPS, PRICE, RESOLUTION, WINDOW, World

HUNDRED_USD = ProductSpec.of("GIFT-USD", 10_000, "USD")
ONE_USD = ProductSpec.of("GIFT-USD", 100, "USD")


def _events(world: World, receipt: Any, name: str) -> list[dict[str, Any]]:
    return [dict(e["args"]) for e in getattr(world.escrow().contract.events, name)().process_receipt(
        receipt, errors=DISCARD)]


def _paid(valid: int, price: int = PRICE) -> int:
    gross = valid * price
    return gross - gross * FEE_BPS // 10_000


def _membership_dispute(world: World, order_id: int) -> int:
    """The buyer disputes membership; returns the dispute's deadline."""
    receipt = world.escrow("buyer").dispute_membership(order_id)
    (event,) = _events(world, receipt, "OrderDisputed")
    assert (event["orderId"], event["membership"]) == (order_id, True)
    assert event["deadline"] == world.block_time(receipt) + RESOLUTION
    order = world.escrow().order(order_id)
    assert (order.status, order.membership_dispute, order.dispute_deadline) == (OrderStatus.DISPUTED, True,
                                                                               event["deadline"])
    return event["deadline"]


def _real_order(world: World, *, count: int = 64, quantity: int = 8, start: int = 16,
                product: ProductSpec = HUNDRED_USD, expiry: int = 0) -> tuple[int, RealBatch]:
    """An order for `product`, delivered with cards start .. start+quantity-1 of a real batch of it."""
    batch = world.anchor_real(count, product=product, expiry=expiry, seed=count + start)
    order_id = world.open(product_id=world.product_id(product), quantity=quantity)
    world.deliver(order_id, batch.batch_id, [(start, quantity)])
    return order_id, batch


# --------------------------------------------------------------------------- phantom cards


def test_phantom_cards_of_a_junk_root_are_refunded_in_full(world: World) -> None:
    """The supplier anchors a root of nothing claiming 100 cards and delivers 0..99: nobody can prove a card, and
    at the deadline the buyer gets all 100 back, the supplier nothing."""
    junk = world.anchor(count=100)  # root 0x4242..42: no tree has it
    order_id = world.open(quantity=100)
    world.deliver(order_id, junk, [(0, 100)])
    deadline = _membership_dispute(world, order_id)

    # Made-up leaves of the batch (right product, expiry, batch id and indices), with their own tree's multiproof.
    fake = RealBatch.make(junk, 100, world.env.registry().product(1), 0, seed=666)
    for indices in (range(100), range(10, 20), [42]):
        cards, proof, flags = fake.proven(list(indices))
        for who in ("supplier", "stranger"):
            with pytest.raises(errors.InvalidDeliveryProof) as info:
                world.escrow(who).prove_delivery(order_id, cards, proof, flags)
            assert info.value.order_id == order_id
    # A lone made-up card whose "multiproof" is nothing (its leaf would have to be the root), or the junk root
    # itself offered as the proof.
    lone = [proven_card(fake.leaves[0])]
    with pytest.raises(errors.InvalidDeliveryProof):
        world.escrow("supplier").prove_delivery(order_id, lone, [], [])
    with pytest.raises(errors.MerkleProofInvalidMultiproof):
        world.escrow("supplier").prove_delivery(order_id, lone, [b"\x42" * 32], [])
    assert world.escrow().order(order_id).proven_count == 0
    assert world.escrow().proven_word(junk, 0) == 0
    assert world.escrow().revoked_count(order_id) == 100  # every card refundable as things stand

    escrow_before = world.balance("escrow", "stable")
    world.travel_to(deadline + 10)
    settlement = world.escrow("stranger").release(order_id)
    assert settlement.dispute_expired
    assert (settlement.revoked_cards, settlement.supplier_amount, settlement.fee, settlement.buyer_refund) == (
        100, 0, 0, 100 * PRICE)
    assert world.credits("buyer", "stable") == 100 * PRICE
    assert world.credits("supplier", "stable") == 0
    assert world.escrow("buyer").withdraw(world.tokens["stable"]) == 100 * PRICE
    with pytest.raises(errors.NothingToWithdraw):
        world.escrow("supplier").withdraw(world.tokens["stable"])
    assert world.balance("escrow", "stable") == escrow_before - 100 * PRICE


# --------------------------------------------------------------------------- the honest supplier


def test_honest_supplier_proves_every_card_with_a_multiproof_and_is_paid_at_once(world: World) -> None:
    expiry = world.env.now() + 400 * 86_400
    order_id, batch = _real_order(world, quantity=8, start=16, expiry=expiry)
    _membership_dispute(world, order_id)
    cards, proof, flags = batch.proven(range(16, 24))
    assert len(cards) == 8 and len(flags) == len(cards) + len(proof) - 1 and any(flags)
    receipt = world.escrow("supplier").prove_delivery(order_id, cards, proof, flags)
    (proven,) = _events(world, receipt, "DeliveryProven")
    assert (proven["orderId"], proven["cards"], proven["provenTotal"]) == (order_id, 8, 8)
    (released,) = _events(world, receipt, "OrderReleased")
    assert (released["revokedCards"], released["supplierAmount"], released["buyerRefund"]) == (0, _paid(8), 0)
    order = world.escrow().order(order_id)
    assert (order.status, order.proven_count) == (OrderStatus.RELEASED, 8)
    assert world.escrow().proven_word(batch.batch_id, 0) == 0xFF << 16
    assert world.credits("supplier", "stable") == _paid(8)
    assert world.credits("buyer", "stable") == 0
    # Settled: nothing more to prove, and the order is not released twice.
    with pytest.raises(errors.InvalidOrderStatus):
        world.escrow("supplier").prove_delivery(order_id, cards, proof, flags)
    with pytest.raises(errors.InvalidOrderStatus):
        world.escrow("stranger").release(order_id)


def test_anyone_may_prove_and_a_single_card_takes_its_ordinary_proof(world: World) -> None:
    """With one card, a multiproof is the card's ordinary Merkle proof with every flag false (OZ semantics)."""
    order_id, batch = _real_order(world, count=37, quantity=1, start=30)
    _membership_dispute(world, order_id)
    proof = batch.tree.proof_for(30)
    receipt = world.escrow("stranger").prove_delivery(order_id, [proven_card(batch.leaves[30])], proof,
                                                      [False] * len(proof))
    assert _events(world, receipt, "OrderReleased")
    assert world.escrow().order(order_id).status is OrderStatus.RELEASED


def test_partly_proven_delivery_refunds_exactly_the_unproven_half(world: World) -> None:
    order_id, batch = _real_order(world, count=300, quantity=8, start=250)  # across two bitmap words
    deadline = _membership_dispute(world, order_id)
    half = [250, 252, 254, 256]
    world.prove(order_id, batch, half[:2])
    receipt = world.prove(order_id, batch, [*half[1:], 250])  # 252 and 250 again: proven once
    (proven,) = _events(world, receipt, "DeliveryProven")
    assert (proven["cards"], proven["provenTotal"]) == (2, 4)
    order = world.escrow().order(order_id)
    assert (order.status, order.proven_count) == (OrderStatus.DISPUTED, 4)
    assert world.escrow().revoked_count(order_id) == 4
    assert world.escrow().proven_word(batch.batch_id, 0) == (1 << 250) | (1 << 252) | (1 << 254)
    assert world.escrow().proven_word(batch.batch_id, 1) == 1
    with pytest.raises(errors.DisputeDeadlineNotPassed):
        world.escrow("stranger").release(order_id)
    world.travel_to(deadline + 10)
    settlement = world.escrow("stranger").release(order_id)
    assert settlement.dispute_expired
    assert (settlement.revoked_cards, settlement.supplier_amount, settlement.buyer_refund) == (4, _paid(4),
                                                                                              4 * PRICE)
    assert world.credits("buyer", "stable") == 4 * PRICE
    assert world.credits("supplier", "stable") == _paid(4)


def test_proven_but_revoked_cards_are_still_refunded(world: World) -> None:
    order_id, batch = _real_order(world, quantity=4, start=0)
    deadline = _membership_dispute(world, order_id)
    world.env.registry("supplier").revoke_cards(batch.batch_id, [1], 1)
    world.prove(order_id, batch, [0, 1, 2])
    world.travel_to(deadline + 10)
    settlement = world.escrow("stranger").release(order_id)
    # Card 3 unproven, card 1 revoked: two refunded.
    assert (settlement.revoked_cards, settlement.buyer_refund) == (2, 2 * PRICE)


# --------------------------------------------------------------------------- what cannot be proven


def test_leaf_of_another_product_than_its_batch_cannot_be_proven(world: World) -> None:
    """The supplier's tree holds 1.00 USD cards but the batch is anchored as 100.00 USD cards (so that it can fill
    100.00 USD orders): the escrow rebuilds the leaves with the batch's product, and the proof fails; the registry
    calls such a card not authentic either."""
    world.anchor(count=1, product=ONE_USD)  # the cheap product exists too
    batch_id = world.batch_id()
    cheap_leaves = real_leaves(batch_id, 32, ONE_USD, seed=5)
    batch = RealBatch.make(batch_id, 32, HUNDRED_USD, leaves=cheap_leaves).anchor(world.env.registry("supplier"))
    assert world.env.registry().batch(batch_id).product_id == world.product_id(HUNDRED_USD)
    assert world.env.registry().verify_card(cheap_leaves[3].as_tuple(), batch.tree.proof_for(3)) == (
        False, CardStatus.UNKNOWN)
    order_id = world.open(product_id=world.product_id(HUNDRED_USD), quantity=4)
    world.deliver(order_id, batch_id, [(0, 4)])
    _membership_dispute(world, order_id)
    for indices in ([0, 1, 2, 3], [3]):
        with pytest.raises(errors.InvalidDeliveryProof):
            world.prove(order_id, batch, indices)
    # Nor a leaf of the right product with another expiry than the batch's.
    world.anchor(count=1, product=HUNDRED_USD)
    dated_id = world.batch_id()
    dated = RealBatch.make(dated_id, 8, HUNDRED_USD, leaves=real_leaves(dated_id, 8, HUNDRED_USD, 1_900_000_000))
    world.env.registry("supplier").anchor_batch(dated_id, dated.root, 8, b"\0" * 32, HUNDRED_USD, 0)
    other = world.open(product_id=world.product_id(HUNDRED_USD), quantity=2)
    world.deliver(other, dated_id, [(0, 2)])
    _membership_dispute(world, other)
    with pytest.raises(errors.InvalidDeliveryProof):
        world.prove(other, dated, [0, 1])


def test_forged_card_fields_cannot_be_proven(world: World) -> None:
    order_id, batch = _real_order(world, quantity=4, start=8)
    _membership_dispute(world, order_id)
    for change in ({"serial": batch.leaves[9].serial ^ 1}, {"code_form": 1 - batch.leaves[9].code_form},
                   {"code_commitment": b"\x01" * 32}):
        leaves = list(batch.leaves)
        leaves[9] = forged(leaves[9], **change)
        cards, proof, flags = batch.proven([8, 9, 10, 11], leaves)
        with pytest.raises(errors.InvalidDeliveryProof):
            world.escrow("supplier").prove_delivery(order_id, cards, proof, flags)
    # The cards in another order than the multiproof's leaves do not verify either.
    cards, proof, flags = batch.proven([8, 9, 10, 11])
    with pytest.raises(errors.InvalidDeliveryProof):
        world.escrow("supplier").prove_delivery(order_id, cards[::-1], proof, flags)
    assert world.escrow().order(order_id).proven_count == 0


def test_proving_a_card_not_in_the_order_is_refused_card_not_in_order(world: World) -> None:
    order_id, batch = _real_order(world, quantity=4, start=8)
    # Another order's cards of the same batch, delivered too.
    second = world.open(product_id=world.product_id(HUNDRED_USD), quantity=2)
    world.deliver(second, batch.batch_id, [(20, 2)])
    _membership_dispute(world, order_id)
    for outside in (7, 12, 20, 63):  # before, after, another order's card, an undelivered one
        with pytest.raises(errors.CardNotInOrder) as info:
            world.prove(order_id, batch, [8, 9, outside])
        assert (info.value.order_id, info.value.index) == (order_id, outside)
    assert world.escrow().proven_word(batch.batch_id, 0) == 0


def test_proving_outside_a_membership_dispute_is_refused(world: World) -> None:
    order_id, batch = _real_order(world, quantity=4, start=0)
    cards, proof, flags = batch.proven([0, 1, 2, 3])
    supplier = world.escrow("supplier")
    with pytest.raises(errors.InvalidOrderStatus):  # delivered, not disputed
        supplier.prove_delivery(order_id, cards, proof, flags)
    world.escrow("buyer").dispute(order_id)  # an ordinary dispute: there is nothing to prove
    with pytest.raises(errors.NotMembershipDispute) as info:
        supplier.prove_delivery(order_id, cards, proof, flags)
    assert info.value.order_id == order_id
    assert not world.escrow().order(order_id).membership_dispute
    with pytest.raises(errors.OrderNotFound):
        supplier.prove_delivery(999, cards, proof, flags)


def test_proving_after_the_dispute_deadline_is_refused(world: World) -> None:
    order_id, batch = _real_order(world, quantity=4, start=0)
    deadline = _membership_dispute(world, order_id)
    world.travel_to(deadline + 1)
    with pytest.raises(errors.DisputeDeadlinePassed) as info:
        world.prove(order_id, batch, [0, 1, 2, 3])
    assert (info.value.order_id, info.value.deadline) == (order_id, deadline)
    settlement = world.escrow("stranger").release(order_id)
    assert (settlement.revoked_cards, settlement.supplier_amount) == (4, 0)


def test_arbiter_still_rules_on_a_membership_dispute(world: World) -> None:
    order_id, batch = _real_order(world, quantity=4, start=0)
    _membership_dispute(world, order_id)
    world.prove(order_id, batch, [0])
    world.escrow("arbiter").resolve(order_id, PRICE, 3 * PRICE)
    assert world.escrow().order(order_id).status is OrderStatus.RESOLVED
    with pytest.raises(errors.InvalidOrderStatus):
        world.prove(order_id, batch, [1, 2, 3])


# --------------------------------------------------------------------------- withdrawing the claim


def test_withdrawing_a_membership_dispute_late_settles_without_refunding_unproven_cards(world: World) -> None:
    order_id, batch = _real_order(world, quantity=8, start=0)
    _membership_dispute(world, order_id)
    world.prove(order_id, batch, [0, 1])
    world.travel_to(world.escrow().order(order_id).dispute_window_end + 10)  # the window has closed
    withdrawal = world.escrow("buyer").withdraw_dispute(order_id)
    assert withdrawal.settled
    s = withdrawal.settlement
    assert (s.revoked_cards, s.supplier_amount, s.buyer_refund) == (0, _paid(8), 0)
    order = world.escrow().order(order_id)
    assert (order.status, order.membership_dispute) == (OrderStatus.RELEASED, False)


def test_withdrawn_membership_dispute_is_an_ordinary_delivery_again(world: World) -> None:
    """Withdrawn in time: Delivered again without the membership claim (a release after the window refunds no
    unproven card); the proven cards stay proven, and a second membership dispute only needs the rest."""
    order_id, batch = _real_order(world, quantity=4, start=0, count=16)
    _membership_dispute(world, order_id)
    world.prove(order_id, batch, [0, 1])
    withdrawal = world.escrow("buyer").withdraw_dispute(order_id)
    assert not withdrawal.settled
    order = world.escrow().order(order_id)
    assert (order.status, order.membership_dispute, order.proven_count) == (OrderStatus.DELIVERED, False, 2)
    assert world.escrow().revoked_count(order_id) == 0
    _membership_dispute(world, order_id)
    assert world.escrow().order(order_id).proven_count == 2
    receipt = world.prove(order_id, batch, [2, 3])
    (proven,) = _events(world, receipt, "DeliveryProven")
    assert (proven["cards"], proven["provenTotal"]) == (2, 4)
    assert world.escrow().order(order_id).status is OrderStatus.RELEASED
    assert world.credits("supplier", "stable") == _paid(4)


def test_withdrawn_membership_dispute_then_release_after_the_window_pays_the_supplier(world: World) -> None:
    order_id, _ = _real_order(world, quantity=4, start=0, count=16)
    _membership_dispute(world, order_id)
    world.escrow("buyer").withdraw_dispute(order_id)
    world.travel_to(world.escrow().order(order_id).dispute_window_end + 10)
    settlement = world.escrow("stranger").release(order_id)
    assert (settlement.revoked_cards, settlement.supplier_amount) == (0, _paid(4))


def test_proven_card_struct_round_trips() -> None:
    card = ProvenCard(5, 2**80 - 1, 1, b"\xab" * 32)
    assert card.as_tuple() == (5, 2**80 - 1, 1, b"\xab" * 32)
    assert WINDOW < RESOLUTION  # the late-withdrawal test closes the window well before the deadline
