"""Admin rules: allowlist, fee (hard cap 1%), fee recipient, windows (with their floors); all readable on chain;
access control, with errors that name the role and who holds it."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from chain import errors
from chain.artifacts import load_artifact
from chain.client import guard
from chain.escrow import ARBITER_ROLE, Escrow, Rules
from tests.escrow.world import DAY, FEE_BPS, PRICE, RESOLUTION, World

ZERO = "0x" + "00" * 20


def test_rules_are_readable(world: World) -> None:
    escrow = world.escrow("stranger")
    assert escrow.rules() == Rules(fee_bps=FEE_BPS, max_fee_bps=100, fee_recipient=world.addr("feeto"),
                                   max_delivery_period=90 * DAY, min_dispute_window=3_600,
                                   max_dispute_window=30 * DAY, max_quantity=65_535, max_ranges=64,
                                   dispute_resolution_period=RESOLUTION, window_floor=3_600,
                                   max_dispute_resolution_period=90 * DAY)
    assert escrow.client.call(escrow.fn.MIN_WINDOW()) == 3_600
    assert escrow.client.call(escrow.fn.MAX_DISPUTE_RESOLUTION_PERIOD()) == 90 * DAY
    assert escrow.registry_address == world.env.registry_address
    assert escrow.client.call(escrow.fn.MAX_FEE_BPS()) == 100
    assert bytes(escrow.client.call(escrow.fn.ARBITER_ROLE())) == bytes(ARBITER_ROLE)
    assert escrow.is_arbiter(world.addr("arbiter"))
    assert escrow.arbiters() == [world.addr("arbiter")]  # granted at deploy, by the constructor
    assert escrow.admins() == [world.env.admin.address]
    assert set(escrow.token_list()) == set(world.tokens.values())
    for address in world.tokens.values():
        assert escrow.is_token_allowed(address)
    assert not escrow.is_token_allowed(world.addr("stranger"))


def test_allow_several_tokens_at_once(world: World) -> None:
    escrow = world.escrow()
    new = [world.addr("stranger"), world.addr("issuer")]  # any address can be listed; only ERC-20s make sense
    receipt = escrow.set_tokens_allowed(new, True)
    events = escrow.contract.events.TokenAllowed().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["token"], e["args"]["allowed"]) for e in events] == [(a, True) for a in new]
    assert all(escrow.is_token_allowed(a) for a in new)
    escrow.set_tokens_allowed(new, False)
    assert not any(escrow.is_token_allowed(a) for a in new)
    assert escrow.token_list()[-2:] == new  # listed once, even when toggled
    escrow.set_tokens_allowed(new, True)
    assert len(escrow.token_list()) == len(world.tokens) + 2
    with pytest.raises(errors.ZeroAddress):
        escrow.set_tokens_allowed([ZERO], True)


def test_delisting_a_token_does_not_trap_open_orders(world: World) -> None:
    order_id, _, _ = world.delivered_order(token="stable2", quantity=3)
    world.escrow().set_tokens_allowed([world.tokens["stable2"]], False)
    world.escrow("buyer").confirm(order_id)
    assert world.escrow("supplier").withdraw(world.tokens["stable2"]) > 0
    assert world.escrow("feeto").withdraw(world.tokens["stable2"]) > 0


@pytest.mark.parametrize("fee", [0, 1, 50, 100])
def test_set_fee(world: World, fee: int) -> None:
    escrow = world.escrow()
    receipt = escrow.set_fee(fee)
    (event,) = escrow.contract.events.FeeSet().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["feeBps"] == fee
    assert escrow.rules().fee_bps == fee
    order_id, _, _ = world.delivered_order(quantity=10, unit_price=10_000)
    settlement = world.escrow("buyer").confirm(order_id)
    assert settlement.fee == 100_000 * fee // 10_000


@pytest.mark.parametrize("fee", [101, 1_000, 65_535])
def test_fee_hard_cap(world: World, fee: int) -> None:
    with pytest.raises(errors.FeeTooHigh) as info:
        world.escrow().set_fee(fee)
    assert (info.value.fee_bps, info.value.max_fee_bps) == (fee, 100)


def test_fee_change_does_not_touch_open_orders(world: World) -> None:
    order_id = world.open(quantity=10)
    world.escrow().set_fee(0)
    world.deliver(order_id, world.anchor(count=10), [(0, 10)])
    assert world.escrow("buyer").confirm(order_id).fee == 10 * PRICE * FEE_BPS // 10_000
    # ... nor disputed ones
    disputed, _, _ = world.delivered_order(quantity=10)
    world.escrow().set_fee(100)
    world.escrow("buyer").dispute(disputed)
    world.escrow("arbiter").resolve(disputed, 0, 10 * PRICE)
    assert world.escrow().order(disputed).fee_bps == 0
    assert world.credits("supplier", "stable") == 10 * PRICE - 10 * PRICE * FEE_BPS // 10_000 + 10 * PRICE


def test_set_window_rules(world: World) -> None:
    escrow = world.escrow()
    receipt = escrow.set_window_rules(7 * DAY, 2 * 3_600, 2 * DAY, 3 * DAY)
    (event,) = escrow.contract.events.WindowRulesSet().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"maxDeliveryPeriod": 7 * DAY, "minDisputeWindow": 2 * 3_600,
                                   "maxDisputeWindow": 2 * DAY, "disputeResolutionPeriod": 3 * DAY}
    rules = escrow.rules()
    assert (rules.max_delivery_period, rules.min_dispute_window, rules.max_dispute_window,
            rules.dispute_resolution_period) == (7 * DAY, 2 * 3_600, 2 * DAY, 3 * DAY)
    assert world.open(window=2 * 3_600, deadline=world.env.now() + 6 * DAY) == 1
    with pytest.raises(errors.InvalidDisputeWindow):
        world.open(window=3 * DAY)
    with pytest.raises(errors.InvalidDisputeWindow):
        world.open(window=3_600)
    with pytest.raises(errors.InvalidDeliveryDeadline):
        world.open(deadline=world.env.now() + 8 * DAY)
    escrow.set_window_rules(3_600, 3_600, 3_600, 3_600)  # every window at its floor is allowed
    escrow.set_window_rules(DAY, DAY, DAY)  # the resolution period stays as it is unless given
    assert escrow.rules().dispute_resolution_period == 3_600


@pytest.mark.parametrize("rules", [(DAY, 3_601, 3_600, DAY), (DAY, 2 * DAY, DAY, DAY)])
def test_invalid_window_rules(world: World, rules: tuple[int, int, int, int]) -> None:
    with pytest.raises(errors.InvalidWindowRules) as info:
        world.escrow().set_window_rules(*rules)
    assert (info.value.max_delivery_period, info.value.min_dispute_window, info.value.max_dispute_window) == rules[:3]


UINT32_MAX = 2**32 - 1


@pytest.mark.parametrize(("rules", "name", "value", "ceiling"), [
    ((0, 3_600, DAY, DAY), "maxDeliveryPeriod", 0, UINT32_MAX),
    ((3_599, 3_600, DAY, DAY), "maxDeliveryPeriod", 3_599, UINT32_MAX),
    ((DAY, 0, 0, DAY), "minDisputeWindow", 0, UINT32_MAX),  # the 0-second dispute window of issue 10
    ((DAY, 3_599, DAY, DAY), "minDisputeWindow", 3_599, UINT32_MAX),
    ((DAY, 3_600, DAY, 0), "disputeResolutionPeriod", 0, 90 * DAY),
    ((DAY, 3_600, DAY, 3_599), "disputeResolutionPeriod", 3_599, 90 * DAY),
    ((DAY, 3_600, DAY, 90 * DAY + 1), "disputeResolutionPeriod", 90 * DAY + 1, 90 * DAY),
    ((DAY, 3_600, DAY, UINT32_MAX), "disputeResolutionPeriod", UINT32_MAX, 90 * DAY),
])
def test_windows_have_floors(world: World, rules: tuple[int, int, int, int], name: str, value: int,
                             ceiling: int) -> None:
    """No window below one hour (and no dispute resolution period above 90 days), whatever the admin sends."""
    escrow = world.escrow()
    before = escrow.rules()
    with pytest.raises(errors.WindowOutOfBounds) as info:
        escrow.set_window_rules(*rules)
    assert (info.value.rule, info.value.window, info.value.floor, info.value.ceiling) == (name, value, 3_600, ceiling)
    assert "below its floor" in str(info.value) and name in str(info.value)
    assert escrow.rules() == before


def test_every_order_gets_at_least_an_hour_to_dispute(world: World) -> None:
    with pytest.raises(errors.InvalidDisputeWindow) as info:
        world.open(window=0)
    assert (info.value.min_window, info.value.max_window) == (3_600, 30 * DAY)
    order_id, _, delivered_at = world.delivered_order(window=3_600)
    world.travel_to(delivered_at + 3_500)
    world.escrow("buyer").dispute(order_id)


def test_admin_functions_need_the_admin_role(world: World) -> None:
    for who in ("stranger", "arbiter", "feeto", "buyer"):
        escrow = world.escrow(who)
        calls = [
            lambda: escrow.set_tokens_allowed([world.addr("stranger")], True),
            lambda: escrow.set_fee(1),
            lambda: escrow.set_fee_recipient(world.addr(who)),
            lambda: escrow.set_window_rules(DAY, 3_600, DAY, DAY),
            lambda: escrow.grant_arbiter(world.addr(who)),
            lambda: escrow.revoke_arbiter(world.addr("arbiter")),
        ]
        for call in calls:
            with pytest.raises(errors.AccessControlUnauthorizedAccount) as info:
                call()
            assert info.value.account == world.addr(who).lower()
            # The error names the role and who holds it, never a role hash.
            assert isinstance(info.value, errors.RoleRequired)
            assert (info.value.role, info.value.holders) == ("admin", [world.env.admin.address])
            assert bytes(info.value.needed_role) == b"\0" * 32
            assert str(info.value) == (f"{world.addr(who)} is not the admin of the escrow {escrow.address}: "
                                       f"run this as the admin {world.env.admin.address}")
            assert "0x" + "00" * 32 not in str(info.value)


def test_arbiter_errors_name_the_arbiters(world: World) -> None:
    order_id, _, _ = world.delivered_order(quantity=2)
    world.escrow("buyer").dispute(order_id)
    with pytest.raises(errors.RoleRequired) as info:
        world.escrow("buyer").resolve(order_id, 2 * PRICE, 0)
    assert info.value.role == "arbiter" and info.value.needed_role == bytes(ARBITER_ROLE)
    assert str(info.value).endswith(f"run this as the arbiter {world.addr('arbiter')}")
    assert ARBITER_ROLE.hex() not in str(info.value)
    world.escrow().grant_arbiter(world.addr("stranger"))
    with pytest.raises(errors.RoleRequired) as info:
        world.escrow("buyer").resolve(order_id, 2 * PRICE, 0)
    assert str(info.value).endswith(f"run this as one of the arbiters {world.addr('arbiter')}, "
                                    f"{world.addr('stranger')}")
    for who in ("arbiter", "stranger"):
        world.escrow().revoke_arbiter(world.addr(who))
    with pytest.raises(errors.RoleRequired) as info:
        world.escrow("buyer").resolve(order_id, 2 * PRICE, 0)
    assert "no account is an arbiter" in str(info.value) and info.value.holders == []


def test_admin_can_appoint_and_dismiss_arbiters(world: World) -> None:
    escrow = world.escrow()
    receipt = escrow.revoke_arbiter(world.addr("arbiter"))
    (event,) = escrow.contract.events.RoleRevoked().process_receipt(receipt, errors=DISCARD)
    assert (bytes(event["args"]["role"]), event["args"]["account"]) == (bytes(ARBITER_ROLE), world.addr("arbiter"))
    assert not escrow.is_arbiter(world.addr("arbiter"))
    assert escrow.arbiters() == []
    order_id, _, _ = world.delivered_order(quantity=2)
    world.escrow("buyer").dispute(order_id)
    with pytest.raises(errors.AccessControlUnauthorizedAccount):
        world.escrow("arbiter").resolve(order_id, 2 * PRICE, 0)
    escrow.grant_arbiter(world.addr("stranger"))
    escrow.grant_arbiter(world.addr("stranger"))  # again: no change, no revert
    assert escrow.arbiters() == [world.addr("stranger")]
    world.escrow("stranger").resolve(order_id, 2 * PRICE, 0)


@pytest.mark.parametrize("position", range(4))
def test_constructor_rejects_zero_addresses(world: World, position: int) -> None:
    args = [world.env.registry_address, world.env.admin.address, world.addr("feeto"), world.addr("arbiter")]
    args[position] = ZERO
    art = load_artifact("CardEscrow")
    factory = world.env.admin.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    ctor = factory.constructor(*args)
    with pytest.raises(errors.ZeroAddress):
        guard(lambda: ctor.estimate_gas({"from": world.env.admin.address}))


def test_constructor_defaults(world: World) -> None:
    art = load_artifact("CardEscrow")
    admin = world.env.admin
    sent = admin.send_deploy(art.abi, art.bytecode, world.env.registry_address, world.addr("arbiter"),
                             world.addr("feeto"), world.addr("stranger"), gas=8_000_000)
    receipt = admin.wait(sent.tx_hash)
    address = receipt["contractAddress"]
    fresh = Escrow(admin, address)
    assert fresh.rules() == Rules(0, 100, world.addr("feeto"), 90 * DAY, 3_600, 30 * DAY, 65_535, 64, 7 * DAY,
                                  3_600, 90 * DAY)
    (event,) = fresh.contract.events.WindowRulesSet().process_receipt(receipt, errors=DISCARD)
    assert tuple(event["args"].values()) == (90 * DAY, 3_600, 30 * DAY, 7 * DAY)
    assert fresh.order_count() == 0
    assert fresh.token_list() == []
    assert fresh.arbiters() == [world.addr("stranger")]  # an escrow always starts with an arbiter
    assert fresh.admins() == [world.addr("arbiter")]
    with pytest.raises(errors.AccessControlUnauthorizedAccount):  # admin is the given account, not the deployer
        fresh.set_fee(1)
