"""Gas bench of the CardEscrow: `measure(env)` returns gasUsed per transaction.

`env` is a :class:`tests.chainkit.ChainEnv` (normally a fresh eth-tester chain from
``tests.chainkit.eth_tester_env()``, with the registry deployed and the role accounts funded). The bench
deploys its own TestStablecoin and CardEscrow (without touching ``deployments.json``), then runs:

1. ``open_order``: the buyer's first order (256 cards) -- the escrow's first deposit of the token, so
   the escrow's token balance goes from zero to non-zero (worst case for opening);
2. ``deliver_sealed_256_per_card``: the supplier delivers cards 0..255 (one bitmap word) of its batch, with the
   sealed delivery's hash; gas / 256;
3. ``confirm``: the buyer confirms -- first credit of the supplier (fresh storage slot), 1% fee accrued;
4. ``withdraw``: the supplier withdraws its credit;
5. ``open_order_permit``: buyer2 opens a second order with an EIP-2612 permit (no prior allowance);
6. ``release``: after delivery of cards 256..511 and the dispute window, a stranger releases it (the
   supplier's credit slot is fresh again since it withdrew everything);
7. ``dispute_timeout_settle``: the buyer opens a third order, cards 512..767 are delivered, the buyer disputes,
   no arbiter rules, and after the dispute's deadline a stranger settles it with the default outcome (release
   of a disputed order: DisputeExpired + OrderReleased);
8. ``prove_delivery_256_per_card`` (report only): a real batch of PROVE_TREE_LEAVES CardLeaf values (of the
   order's product) is anchored; a fourth order of 256 cards is delivered from it (cards 512..767), the buyer
   disputes membership, and the supplier proves all 256 cards with one OpenZeppelin multiproof, which settles
   the order at once; gas / 256 (``prove_delivery_256_total`` is the whole transaction, not in the snapshot).

TARGETS holds the hard limits; ``check(figures)`` lists the ones exceeded.
"""

from __future__ import annotations

from typing import Any

from chain.artifacts import load_artifact
from chain.escrow import ESCROW, STABLECOIN, Escrow, Token, account_seal_key
from chain.registry import PLACEHOLDER_PRODUCT
from tests.escrow.cards import RealBatch

TARGETS = {
    "open_order": 160_000,
    "deliver_sealed_256_per_card": 2_000,
    "confirm": 100_000,
    "release": 100_000,
    "dispute_timeout_settle": 100_000,
}

UNIT_PRICE = 5_000_000  # 5.00 in a 6-decimal stablecoin
QUANTITY = 256
DISPUTE_WINDOW = 3_600
#: Leaves of the real batch whose multiproof prove_delivery_256_per_card verifies (a 2**16-card batch).
PROVE_TREE_LEAVES = 1 << 16
SEALED = b"\x5e" * 32
#: A fixed permit deadline, so that the permit's signature (and the calldata's count of zero bytes) is the same on
#: every run: a deadline taken from the clock changes the signature and open_order_permit by a few gas.
PERMIT_DEADLINE = 4_000_000_000
FIGURES = ("open_order", "open_order_permit", "deliver_sealed_256_per_card", "confirm", "release", "withdraw",
           "dispute_timeout_settle", "prove_delivery_256_per_card")


def _deploy(client: Any, name: str, *args: Any) -> str:
    art = load_artifact(name)
    sent = client.send_deploy(art.abi, art.bytecode, *args, gas=8_000_000)
    return client.wait(sent.tx_hash)["contractAddress"]


def measure(env: Any) -> dict[str, int]:
    """Run the scenario above on `env` and return {"open_order": gas, ...}."""
    admin = env.admin
    admin._next_nonce = None
    token_addr = _deploy(admin, STABLECOIN, "Bench USD", "bUSD", admin.address)
    escrow_addr = _deploy(admin, ESCROW, env.registry_address, admin.address, env.address("feeto"),
                          env.address("arbiter"))
    escrow = Escrow(admin, escrow_addr)
    escrow.set_tokens_allowed([token_addr])
    escrow.set_fee(100)
    stable = admin.contract(token_addr, load_artifact(STABLECOIN).abi)
    amount = QUANTITY * UNIT_PRICE
    for who in ("buyer", "buyer2"):
        admin.transact(stable.functions.mint(env.address(who), 10 * amount), gas=150_000)

    supplier = env.client("supplier")
    batch_id = bytes.fromhex(env.address("supplier")[2:]) + bytes.fromhex(escrow_addr[2:26])
    registry = env.registry("supplier")
    registry.anchor_batch(batch_id, b"\x11" * 32, 3 * QUANTITY, b"\0" * 32, PLACEHOLDER_PRODUCT)
    product_id = registry.product_id_of(PLACEHOLDER_PRODUCT)

    buyer = env.client("buyer")
    as_buyer = escrow.as_account(buyer)
    Token(buyer, token_addr).approve(escrow_addr, 2**256 - 1)
    figures: dict[str, int] = {}

    now = env.now()
    deadline = now + 86_400
    seal_key = account_seal_key(buyer)

    def terms(delivery_deadline: int) -> tuple[Any, ...]:
        return (env.address("supplier"), product_id, 0, QUANTITY, token_addr, UNIT_PRICE, delivery_deadline,
                DISPUTE_WINDOW)

    fn = as_buyer.fn.openOrder(terms(deadline), seal_key)
    receipt = buyer.transact(fn, gas=300_000)
    figures["open_order"] = int(receipt["gasUsed"])
    order1 = as_buyer._opened_id(receipt)

    as_supplier = escrow.as_account(supplier)
    receipt = as_supplier.deliver(order1, batch_id, [(0, QUANTITY)], sealed_hash=SEALED)
    figures["deliver_sealed_256_per_card"] = int(receipt["gasUsed"]) // QUANTITY
    figures["deliver_sealed_256_total"] = int(receipt["gasUsed"])

    figures["confirm"] = int(as_buyer.confirm(order1).receipt["gasUsed"])

    receipt = supplier.transact(as_supplier.fn.withdraw(token_addr), gas=200_000)
    figures["withdraw"] = int(receipt["gasUsed"])

    buyer2 = env.client("buyer2")
    as_buyer2 = escrow.as_account(buyer2)
    permit = as_buyer2.sign_permit(token_addr, amount, PERMIT_DEADLINE)
    fn = as_buyer2.fn.openOrderWithPermit(terms(deadline), account_seal_key(buyer2), permit.deadline, permit.v,
                                          permit.r, permit.s)
    receipt = buyer2.transact(fn, gas=400_000)
    figures["open_order_permit"] = int(receipt["gasUsed"])
    order2 = as_buyer2._opened_id(receipt)

    delivered = as_supplier.deliver(order2, batch_id, [(QUANTITY, QUANTITY)], sealed_hash=SEALED)
    delivered_at = int(admin.w3.eth.get_block(delivered["blockNumber"])["timestamp"])
    env.set_next_timestamp(delivered_at + DISPUTE_WINDOW + 10)
    figures["release"] = int(escrow.as_account(env.client("stranger")).release(order2).receipt["gasUsed"])

    now = env.now()
    fn = as_buyer.fn.openOrder(terms(now + 86_400), seal_key)
    order3 = as_buyer._opened_id(buyer.transact(fn, gas=300_000))
    as_supplier.deliver(order3, batch_id, [(2 * QUANTITY, QUANTITY)], sealed_hash=SEALED)
    disputed = as_buyer.dispute(order3)
    deadline = int(admin.w3.eth.get_block(disputed["blockNumber"])["timestamp"]) + escrow.rules().dispute_resolution_period
    env.set_next_timestamp(deadline + 10)
    settled = escrow.as_account(env.client("stranger")).release(order3)
    assert settled.dispute_expired
    figures["dispute_timeout_settle"] = int(settled.receipt["gasUsed"])

    # A membership dispute over a real batch, settled by one multiproof of all 256 cards.
    real_id = bytes.fromhex(env.address("supplier")[2:]) + bytes.fromhex(escrow_addr[26:42]) + b"\x00" * 4
    real = RealBatch.make(real_id, PROVE_TREE_LEAVES, PLACEHOLDER_PRODUCT, seed=16).anchor(registry)
    fn = as_buyer.fn.openOrder(terms(env.now() + 86_400), seal_key)
    order4 = as_buyer._opened_id(buyer.transact(fn, gas=300_000))
    first = 2 * QUANTITY
    as_supplier.deliver(order4, real_id, [(first, QUANTITY)], sealed_hash=SEALED)
    as_buyer.dispute_membership(order4)
    cards, proof, flags = real.proven(range(first, first + QUANTITY))
    receipt = as_supplier.prove_delivery(order4, cards, proof, flags)
    if escrow.order(order4).status.name != "RELEASED":
        raise RuntimeError("proving every card did not settle the order")
    figures["prove_delivery_256_per_card"] = int(receipt["gasUsed"]) // QUANTITY
    figures["prove_delivery_256_total"] = int(receipt["gasUsed"])
    return {k: figures[k] for k in FIGURES}


def check(figures: dict[str, int]) -> list[str]:
    """The targets `figures` exceeds, as readable lines (empty when all are met)."""
    return [f"{key}: {figures[key]} > {limit}" for key, limit in TARGETS.items() if figures.get(key, 0) > limit]


if __name__ == "__main__":  # pragma: no cover - manual run: python -m scripts.gasbench.escrow
    from tests.chainkit import eth_tester_env

    env_iter = eth_tester_env()
    bench_env = next(env_iter)
    result = measure(bench_env)
    for key, value in result.items():
        print(f"{key:24} {value:>9,}")
    print("\n".join(check(result)) or "all targets met")
