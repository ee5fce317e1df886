"""Gas bench of the CardRegistry: ``measure(env)`` returns gasUsed per operation.

``env`` is a :class:`tests.chainkit.ChainEnv` (normally a fresh eth-tester chain from
``tests.chainkit.eth_tester_env()``, with funded role accounts). The bench deploys its own CardRegistry
(without touching ``deployments.json``) so that every figure starts from empty contract storage, then
measures, each on a batch nobody touched before (fresh storage slots: the worst case):

* ``deploy_registry``: the deployment transaction;
* ``grant_issuer``, ``set_redeemer``: the admin grants ISSUER_ROLE, the issuer appoints a redeemer;
* ``grant_issuer_named``: the admin grants ISSUER_ROLE with ``grantIssuer`` to an account that holds no role
  yet, under a name of the longest allowed size (64 bytes: the string's length slot and two data slots);
* ``anchor_batch_new_product``: the first batch of a product, which registers it (report only);
* ``anchor_batch`` (1,000 cards) and ``anchor_batch_1m`` (1,000,000 cards), of a product registered already
  (the common case: the target applies to it): the cost must not depend on the size; ``anchor_batch_exec``/``anchor_batch_1m_exec`` are the same less the intrinsic gas (21,000 plus
  calldata), which must be equal;
* ``mark_redeemed_1``: one card, by an appointed redeemer (one more cold read than by the issuer, which is
  ``mark_redeemed_1_by_issuer``);
* ``mark_redeemed_256_per_card``: cards 0..255 (one bitmap word) in one call by the redeemer, gas / 256
  (``mark_redeemed_256_total`` is the whole transaction);
* ``mark_redeemed_8_words``: 8 cards in 8 different bitmap words, unordered, in one call;
* ``revoke_cards_1``, ``revoke_batch``: the issuer revokes one card, then a whole batch;
* ``verify_card_call``: gasUsed of a ``verifyCard`` call with a 20-level proof (a real proof: the root is
  folded from the leaf and 20 random siblings), sent as a transaction so that the figure is exact (an
  ``eth_estimateGas`` answer is an upper bound that differs between nodes); ``verify_card_call_exec`` is the
  same less the intrinsic gas, about what a contract calling ``verifyCard`` pays for the call's execution.

``TARGETS`` holds the hard limits; ``check(figures)`` lists the ones exceeded.
"""

from __future__ import annotations

import random
from typing import Any

from eth_utils import keccak

from chain.artifacts import load_artifact
from chain.client import ChainClient
from chain.deployments import REGISTRY
from chain.registry import PLACEHOLDER_PRODUCT, CardStatus, ProductSpec, Registry
from issuer.core.leaf import CODE_FORM_FOLDED, LEAF_VERSION, CardLeaf, leaf_hash

TARGETS = {
    "anchor_batch": 80_000,
    "anchor_batch_1m": 80_000,
    "mark_redeemed_1": 60_000,
    "mark_redeemed_1_by_issuer": 60_000,
    "mark_redeemed_256_per_card": 1_000,
}

MANIFEST = b"\x22" * 32
PROOF_DEPTH = 20
#: The longest issuer name grantIssuer takes (64 bytes of UTF-8).
LONGEST_NAME = "Acme Digital Gift Cards & Game Top-Ups International Trading Ltd"
assert len(LONGEST_NAME.encode()) == 64


def intrinsic_gas(data: bytes) -> int:
    """21,000 plus calldata gas (4 a zero byte, 16 another), as charged before execution starts."""
    zeros = data.count(0)
    return 21_000 + 4 * zeros + 16 * (len(data) - zeros)


def _gas(receipt: Any) -> int:
    return int(receipt["gasUsed"])


def _exec_gas(client: ChainClient, receipt: Any) -> int:
    tx = client.w3.eth.get_transaction(receipt["transactionHash"])
    return _gas(receipt) - intrinsic_gas(bytes(tx["input"]))


def _fold(node: bytes, proof: list[bytes]) -> bytes:
    """OpenZeppelin MerkleProof.processProof: sorted-pair keccak up the proof."""
    for sib in proof:
        node = keccak(node + sib if node < sib else sib + node)
    return node


def measure(env: Any) -> dict[str, int]:
    """Run the scenario in the module docstring on `env` and return {"anchor_batch": gas, ...}."""
    admin = env.admin
    admin._next_nonce = None
    art = load_artifact(REGISTRY)
    sent = admin.send_deploy(art.abi, art.bytecode, admin.address, gas=3_000_000)
    deployed = admin.wait(sent.tx_hash)
    figures: dict[str, int] = {"deploy_registry": _gas(deployed)}
    address = deployed["contractAddress"]

    as_admin = Registry(admin, address)
    issuer_client = env.client("issuer")
    issuer = Registry(issuer_client, address)
    redeemer = Registry(env.client("redeemer"), address)
    owner = bytes.fromhex(env.address("issuer")[2:])
    serial = iter(range(1, 1_000))

    def new_batch(count: int, product: ProductSpec = PLACEHOLDER_PRODUCT) -> tuple[bytes, Any]:
        batch_id = owner + next(serial).to_bytes(12, "big")
        return batch_id, issuer.anchor_batch(batch_id, keccak(batch_id), count, MANIFEST, product)

    figures["grant_issuer"] = _gas(as_admin.grant_issuer(env.address("issuer")))
    figures["grant_issuer_named"] = _gas(as_admin.grant_issuer(env.address("issuer2"), LONGEST_NAME))
    if as_admin.issuer_name(env.address("issuer2")) != LONGEST_NAME:
        raise RuntimeError("grantIssuer did not record the name")
    figures["set_redeemer"] = _gas(issuer.set_redeemer(env.address("redeemer"), True))

    # The first batch of a product registers it (ProductRegistered, three fresh slots); later ones only read its id.
    _, receipt = new_batch(1_000, ProductSpec.of("GC-50-USD", 5_000, "USD"))
    figures["anchor_batch_new_product"] = _gas(receipt)
    issuer.anchor_batch(owner + b"\xff" * 12, b"\x01" * 32, 1, MANIFEST)  # registers the placeholder product
    small, receipt = new_batch(1_000)
    figures["anchor_batch"] = _gas(receipt)
    figures["anchor_batch_exec"] = _exec_gas(issuer_client, receipt)
    big, receipt = new_batch(1_000_000)
    figures["anchor_batch_1m"] = _gas(receipt)
    figures["anchor_batch_1m_exec"] = _exec_gas(issuer_client, receipt)

    figures["mark_redeemed_1"] = _gas(redeemer.mark_redeemed(small, [0]))
    batch, _ = new_batch(1_000)
    figures["mark_redeemed_1_by_issuer"] = _gas(issuer.mark_redeemed(batch, [0]))

    batch, _ = new_batch(1_000)
    total = _gas(redeemer.mark_redeemed(batch, list(range(256))))
    figures["mark_redeemed_256_total"] = total
    figures["mark_redeemed_256_per_card"] = total // 256

    figures["mark_redeemed_8_words"] = _gas(redeemer.mark_redeemed(big, [w * 256 + w for w in (5, 0, 7, 2, 1, 6, 3, 4)]))

    batch, _ = new_batch(1_000)
    figures["revoke_cards_1"] = _gas(issuer.revoke_cards(batch, [0], 1))
    figures["revoke_batch"] = _gas(issuer.revoke_batch(batch, 1))

    # verifyCard with a 20-level proof: anchor the root that the leaf and 20 random siblings fold to.
    rng = random.Random(20)
    batch_id = owner + next(serial).to_bytes(12, "big")
    leaf = CardLeaf(LEAF_VERSION, batch_id, 123_456, rng.getrandbits(80), b"GC-100-EUR".ljust(32, b"\x00"), 10_000,
                    b"EUR", 0, CODE_FORM_FOLDED, rng.randbytes(32))
    proof = [rng.randbytes(32) for _ in range(PROOF_DEPTH)]
    issuer.anchor_batch(batch_id, _fold(leaf_hash(leaf), proof), 1 << PROOF_DEPTH, MANIFEST,
                        ProductSpec(leaf.sku, leaf.face_value, leaf.currency), leaf.expiry)
    call = issuer.fn.verifyCard(leaf.as_tuple(), proof)
    verdict = issuer.verify_card(leaf.as_tuple(), proof)
    if verdict != (True, CardStatus.VALID):
        raise RuntimeError(f"the 20-level proof does not verify: {verdict}")
    # Sent as a transaction: gasUsed is exact and the same on every backend, unlike eth_estimateGas's answer.
    receipt = issuer_client.transact(call, gas=300_000)
    figures["verify_card_call"] = _gas(receipt)
    figures["verify_card_call_exec"] = _exec_gas(issuer_client, receipt)
    return figures


def check(figures: dict[str, int]) -> list[str]:
    """The targets `figures` misses, as readable lines (empty when all are met)."""
    misses = [f"{key}: {figures[key]:,} > {limit:,}" for key, limit in TARGETS.items()
              if key in figures and figures[key] > limit]
    misses += [f"{key}: missing" for key in TARGETS if key not in figures]
    if figures.get("anchor_batch_exec") != figures.get("anchor_batch_1m_exec"):
        misses.append("anchor_batch_1m: execution gas depends on the batch size "
                      f"({figures.get('anchor_batch_1m_exec')} vs {figures.get('anchor_batch_exec')})")
    return misses


if __name__ == "__main__":  # pragma: no cover - manual run: python -m scripts.gasbench.registry
    from tests.chainkit import eth_tester_env

    result = measure(next(eth_tester_env()))
    for key, value in result.items():
        print(f"{key:28} {value:>10,}")
    print("\n".join(check(result)) or "all targets met")
