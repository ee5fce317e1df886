"""Gas targets (hard): openOrder <= 160k, deliver <= 2,000 per card for 256 cards, confirm/release <= 100k, and the
settlement of an expired dispute (dispute_timeout_settle) <= 100k."""

from __future__ import annotations

from scripts.gasbench.escrow import TARGETS, check, measure
from tests.chainkit import ChainEnv
from tests.escrow.world import World


def test_gas_bench_meets_the_targets(chain_env: ChainEnv) -> None:
    figures = measure(chain_env)
    assert set(figures) == {"open_order", "open_order_permit", "deliver_256_per_card", "confirm", "release",
                            "withdraw", "dispute_timeout_settle"}
    assert check(figures) == [], figures
    assert all(value > 0 for value in figures.values())


def test_worst_case_settlement_still_meets_the_target(world: World) -> None:
    """Fresh credit slots for both supplier and buyer (refund of revoked cards), three ranges over two words."""
    batch_id = world.anchor(count=1024)
    ranges = [(200, 100), (400, 50), (460, 106)]
    order_id = world.open("buyer2", quantity=256, token="stable2")
    delivered = world.deliver(order_id, batch_id, ranges)
    assert delivered["gasUsed"] <= 256 * TARGETS["deliver_256_per_card"]
    world.env.registry("supplier").revoke_cards(batch_id, [200, 299, 400, 565], 1)
    settlement = world.escrow("buyer2").confirm(order_id)
    assert settlement.revoked_cards == 4 and settlement.buyer_refund > 0
    print("worst-case confirm gas", settlement.receipt["gasUsed"])
    assert settlement.receipt["gasUsed"] <= TARGETS["confirm"], settlement.receipt["gasUsed"]


def test_unaligned_256_card_delivery(world: World) -> None:
    batch_id = world.anchor(count=1024)
    order_id = world.open(quantity=256)
    receipt = world.deliver(order_id, batch_id, [(100, 256)])  # spans two bitmap words
    print("unaligned 256 deliver gas", receipt["gasUsed"])
    assert receipt["gasUsed"] <= 256 * TARGETS["deliver_256_per_card"], receipt["gasUsed"]
