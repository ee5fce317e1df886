"""openOrder / openOrderWithPermit: funding, rules and every revert (typed errors)."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from chain import errors
from chain.escrow import OrderStatus, Permit, account_seal_key
from tests.escrow.world import DAY, FEE_BPS, MINT, PRICE, WINDOW, World


def test_open_funds_the_order_and_records_it(world: World) -> None:
    env = world.env
    before_buyer, before_escrow = world.balance("buyer", "stable"), world.balance("escrow", "stable")
    deadline = env.now() + DAY
    escrow = world.escrow("buyer")
    order_id = escrow.open_order(world.addr("supplier"), 1, 3, world.tokens["stable"], PRICE, deadline,
                                   WINDOW)
    assert order_id == 1
    assert world.balance("buyer", "stable") == before_buyer - 3 * PRICE
    assert world.balance("escrow", "stable") == before_escrow + 3 * PRICE
    order = escrow.order(1)
    assert order.status is OrderStatus.FUNDED
    assert (order.buyer, order.supplier, order.token) == (world.addr("buyer"), world.addr("supplier"),
                                                         world.tokens["stable"])
    assert (order.quantity, order.unit_price, order.amount) == (3, PRICE, 3 * PRICE)
    assert (order.fee_bps, order.delivery_deadline, order.dispute_window) == (FEE_BPS, deadline, WINDOW)
    assert (order.delivered_at, order.batch_id, order.range_count) == (0, b"\0" * 32, 0)
    assert escrow.order_count() == 1


def test_open_emits_order_opened_and_ids_are_sequential(world: World) -> None:
    escrow = world.escrow("buyer")
    deadline = world.env.now() + DAY
    seal_key = account_seal_key(escrow.client)
    assert len(seal_key) == 33 and seal_key[0] in (2, 3)
    terms = (world.addr("supplier"), 1, 1_900_000_000, 2, world.tokens["stable2"], 7, deadline, WINDOW)
    fn = escrow.fn.openOrder(terms, seal_key)
    receipt = escrow.client.transact(fn, gas=300_000)
    (event,) = escrow.contract.events.OrderOpened().process_receipt(receipt, errors=DISCARD)
    args = event["args"]
    assert args["orderId"] == 1
    assert (args["buyer"], args["supplier"], args["token"]) == (world.addr("buyer"), world.addr("supplier"),
                                                               world.tokens["stable2"])
    assert (args["productId"], args["minExpiry"], args["sealKey"]) == (1, 1_900_000_000, seal_key)
    assert escrow.opened_event(1) == args
    order = escrow.order(1)
    assert (order.product_id, order.min_expiry, order.sealed_hash) == (1, 1_900_000_000, b"")
    assert (args["quantity"], args["unitPrice"], args["amount"], args["feeBps"]) == (2, 7, 14, FEE_BPS)
    assert (args["deliveryDeadline"], args["disputeWindow"]) == (deadline, WINDOW)
    assert world.open("buyer2", token="stable") == 2
    assert world.open("buyer", token="noret") == 3


@pytest.mark.parametrize("token", ["stable", "stable2", "noret", "reent", "block"])
def test_open_with_each_accepted_token(world: World, token: str) -> None:
    order_id = world.open(token=token, quantity=5)
    assert world.escrow().order(order_id).token == world.tokens[token]
    assert world.balance("escrow", token) == 5 * PRICE
    assert world.balance("buyer", token) == MINT - 5 * PRICE


def test_fee_on_transfer_token_is_rejected_not_underfunded(world: World) -> None:
    with pytest.raises(errors.UnderFunded) as info:
        world.open(token="fot", quantity=4)
    assert info.value.expected == 4 * PRICE
    assert info.value.received == 4 * PRICE - 4 * PRICE // 100
    assert info.value.token == world.tokens["fot"].lower()
    assert world.balance("escrow", "fot") == 0
    assert world.escrow().order_count() == 0
    # The same token without its fee is fine: the check is on what arrived.
    world.token_tx("fot", "stranger", "setFeeBps", 0)
    assert world.open(token="fot", quantity=4) == 1


def test_open_token_not_allowed(world: World) -> None:
    with pytest.raises(errors.TokenNotAllowed) as info:
        world.escrow("buyer").open_order(world.addr("supplier"), 1, 1, world.addr("stranger"), PRICE,
                                         world.env.now() + DAY, WINDOW, preflight=False)
    assert info.value.token == world.addr("stranger").lower()
    world.escrow().set_tokens_allowed([world.tokens["stable2"]], False)
    with pytest.raises(errors.TokenNotAllowed):
        world.open(token="stable2", preflight=False)
    with pytest.raises(errors.TokenNotAllowed):  # the Python preflight raises the same type
        world.open(token="stable2")


@pytest.mark.parametrize("quantity", [0, 65_536])
def test_open_invalid_quantity(world: World, quantity: int) -> None:
    for preflight in (False, True):
        with pytest.raises(errors.InvalidQuantity) as info:
            world.open(quantity=quantity, preflight=preflight)
        assert (info.value.quantity, info.value.max_quantity) == (quantity, 65_535)


@pytest.mark.parametrize("price", [0, 2**96])
def test_open_invalid_unit_price(world: World, price: int) -> None:
    for preflight in (False, True):
        with pytest.raises(errors.InvalidUnitPrice) as info:
            world.open(unit_price=price, quantity=1, preflight=preflight)
        assert info.value.unit_price == price


def test_open_invalid_delivery_deadline(world: World) -> None:
    now = world.env.now()
    with pytest.raises(errors.InvalidDeliveryDeadline) as info:
        world.open(deadline=now - 10)
    assert info.value.deadline == now - 10
    rules = world.escrow().rules()
    with pytest.raises(errors.InvalidDeliveryDeadline) as info:
        world.open(deadline=now + rules.max_delivery_period + 3_600)
    assert info.value.latest - info.value.now == rules.max_delivery_period


@pytest.mark.parametrize("window", [60, 31 * DAY])
def test_open_invalid_dispute_window(world: World, window: int) -> None:
    with pytest.raises(errors.InvalidDisputeWindow) as info:
        world.open(window=window)
    assert (info.value.dispute_window, info.value.min_window, info.value.max_window) == (window, 3_600, 30 * DAY)


@pytest.mark.parametrize("supplier", ["stranger", "buyer2"])
def test_open_supplier_must_be_an_issuer(world: World, supplier: str) -> None:
    for preflight in (False, True):
        with pytest.raises(errors.SupplierNotIssuer) as info:
            world.open(supplier=supplier, preflight=preflight)
        assert info.value.supplier == world.addr(supplier).lower()


def test_open_needs_allowance_and_balance(world: World) -> None:
    world.token("stable", "buyer").approve(world.escrow_address, 3 * PRICE)
    with pytest.raises(errors.ERC20InsufficientAllowance) as info:  # preflight, nothing sent
        world.open(quantity=4)
    assert (info.value.allowance, info.value.needed) == (3 * PRICE, 4 * PRICE)
    with pytest.raises(errors.ERC20InsufficientAllowance):  # the chain says the same
        world.open(quantity=4, preflight=False)
    with pytest.raises(errors.ERC20InsufficientBalance) as info2:
        world.open(quantity=2, unit_price=MINT)
    assert (info2.value.balance, info2.value.needed) == (MINT, 2 * MINT)
    assert world.open(quantity=3) == 1


def test_open_no_return_token_without_allowance_reverts(world: World) -> None:
    world.token("noret", "buyer").approve(world.escrow_address, 0)
    with pytest.raises(errors.RevertReason) as info:
        world.open(token="noret", preflight=False)
    assert "allowance" in info.value.reason


def test_fee_in_force_is_copied_into_the_order(world: World) -> None:
    first = world.open()
    world.escrow().set_fee(25)
    second = world.open()
    escrow = world.escrow()
    assert escrow.order(first).fee_bps == FEE_BPS
    assert escrow.order(second).fee_bps == 25


# --------------------------------------------------------------------------- permit


def _revoke_allowance(world: World, who: str = "buyer", token: str = "stable") -> None:
    world.token(token, who).approve(world.escrow_address, 0)


def test_open_with_permit_without_prior_allowance(world: World) -> None:
    _revoke_allowance(world)
    escrow = world.escrow("buyer")
    deadline = world.env.now() + DAY
    order_id = escrow.open_order_with_permit(world.addr("supplier"), 1, 4, world.tokens["stable"], PRICE,
                                             deadline, WINDOW)
    assert escrow.order(order_id).status is OrderStatus.FUNDED
    assert world.balance("escrow", "stable") == 4 * PRICE
    assert world.token("stable").allowance(world.addr("buyer"), world.escrow_address) == 0
    assert world.token("stable").nonce(world.addr("buyer")) == 1


def test_front_run_permit_does_not_block_the_order(world: World) -> None:
    _revoke_allowance(world)
    escrow = world.escrow("buyer")
    deadline = world.env.now() + DAY
    permit = escrow.sign_permit(world.tokens["stable"], 4 * PRICE, deadline)
    # A front-runner submits the buyer's permit first: the escrow's own permit call now fails.
    world.token("stable", "stranger").submit_permit(world.addr("buyer"), world.escrow_address, permit)
    assert world.token("stable").allowance(world.addr("buyer"), world.escrow_address) == 4 * PRICE
    order_id = escrow.open_order_with_permit(world.addr("supplier"), 1, 4, world.tokens["stable"], PRICE,
                                             deadline, WINDOW, permit=permit)
    assert escrow.order(order_id).amount == 4 * PRICE
    assert world.balance("escrow", "stable") == 4 * PRICE


def test_invalid_permit_without_allowance_fails_on_the_transfer(world: World) -> None:
    _revoke_allowance(world)
    escrow = world.escrow("buyer")
    deadline = world.env.now() + DAY
    wrong = world.escrow("buyer2").sign_permit(world.tokens["stable"], 4 * PRICE, deadline)  # signed by buyer2
    with pytest.raises(errors.ERC20InsufficientAllowance):
        escrow.open_order_with_permit(world.addr("supplier"), 1, 4, world.tokens["stable"], PRICE,
                                      deadline, WINDOW, permit=wrong)
    expired = escrow.sign_permit(world.tokens["stable"], 4 * PRICE, world.env.now() - 1)
    with pytest.raises(errors.ERC20InsufficientAllowance):
        escrow.open_order_with_permit(world.addr("supplier"), 1, 4, world.tokens["stable"], PRICE,
                                      deadline, WINDOW, permit=expired)


def test_permit_path_with_a_token_without_permit_uses_the_allowance(world: World) -> None:
    escrow = world.escrow("buyer")  # noret has no permit(); buyer approved the escrow already
    deadline = world.env.now() + DAY
    order_id = escrow.open_order_with_permit(world.addr("supplier"), 1, 2, world.tokens["noret"], PRICE,
                                             deadline, WINDOW, permit=Permit(2 * PRICE, deadline, 27, b"\1" * 32,
                                                                              b"\2" * 32))
    assert escrow.order(order_id).token == world.tokens["noret"]


def test_open_with_permit_checks_the_allowlist_first(world: World) -> None:
    world.escrow().set_tokens_allowed([world.tokens["stable"]], False)
    escrow = world.escrow("buyer")
    with pytest.raises(errors.TokenNotAllowed):
        escrow.open_order_with_permit(world.addr("supplier"), 1, 4, world.tokens["stable"], PRICE,
                                      world.env.now() + DAY, WINDOW, preflight=False)
