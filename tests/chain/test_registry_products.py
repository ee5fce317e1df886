"""Products of the CardRegistry: a batch's product (SKU, face value, currency) and expiry are fixed when it is
anchored; a product is registered once, under a sequential id; verifyCard accepts only the leaves of the batch's
product and expiry (a leaf of a 1.00 USD card in a batch anchored as 100.00 USD cards is not authentic)."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from chain.artifacts import load_artifact
from chain.deployments import REGISTRY
from chain.errors import InvalidProduct
from chain.registry import PLACEHOLDER_PRODUCT, CardStatus, ProductSpec
from issuer.core.leaf import leaf_hash
from issuer.core.merkle import build_tree
from tests.chain.registry_kit import MANIFEST, ROOT, bid, same_address
from tests.chain.test_registry_verify import KAT_LEAVES, KAT_PROOF0, KAT_ROOT, KAT_BATCH, random_leaves

HUNDRED_USD = ProductSpec.of("GIFT-USD", 10_000, "USD")
ONE_USD = ProductSpec.of("GIFT-USD", 100, "USD")
KAT_PRODUCT = ProductSpec(KAT_LEAVES[0].sku, KAT_LEAVES[0].face_value, KAT_LEAVES[0].currency)


def _registered(env, receipt) -> list[dict]:
    contract = env.admin.contract(env.registry_address, load_artifact(REGISTRY).abi)
    return [dict(e["args"]) for e in contract.events.ProductRegistered().process_receipt(receipt, errors=DISCARD)]


def _count(env) -> int:
    return int(env.admin.call(env.registry().fn.productCount()))


def test_anchoring_registers_a_product_once(chain_env):
    reg = chain_env.registry("issuer")
    before = _count(chain_env)
    assert reg.product_id_of(HUNDRED_USD) == 0 and reg.product(before + 1) is None
    first = reg.anchor_batch(bid(chain_env, n=1), ROOT, 10, MANIFEST, HUNDRED_USD, 0)
    (event,) = _registered(chain_env, first)
    product_id = before + 1
    assert event == {"productId": product_id, "sku": HUNDRED_USD.sku, "faceValue": 10_000, "currency": b"USD"}
    assert _count(chain_env) == product_id
    assert reg.product_id_of(HUNDRED_USD) == product_id
    assert reg.product(product_id) == HUNDRED_USD
    # The same product again, by the same or another issuer, with another expiry: same id, no new event.
    again = reg.anchor_batch(bid(chain_env, n=2), ROOT, 10, MANIFEST, HUNDRED_USD, 1_900_000_000)
    other_issuer = chain_env.registry("issuer2").anchor_batch(bid(chain_env, "issuer2"), ROOT, 1, MANIFEST,
                                                              HUNDRED_USD, 0)
    assert _registered(chain_env, again) == [] and _registered(chain_env, other_issuer) == []
    assert _count(chain_env) == product_id
    for n in (1, 2):
        assert reg.batch(bid(chain_env, n=n)).product_id == product_id
    # Any field different is another product: the face value alone, the currency alone, the SKU alone.
    variants = [ONE_USD, ProductSpec.of("GIFT-USD", 10_000, "EUR"), ProductSpec.of("GIFT-EUR", 10_000, "USD")]
    for i, variant in enumerate(variants):
        receipt = reg.anchor_batch(bid(chain_env, n=10 + i), ROOT, 1, MANIFEST, variant, 0)
        (event,) = _registered(chain_env, receipt)
        assert event["productId"] == product_id + 1 + i
        assert reg.product_id_of(variant) == product_id + 1 + i
    assert _count(chain_env) == product_id + len(variants)
    assert reg.product(0) is None and reg.product(_count(chain_env) + 1) is None


def test_batch_returns_product_id_expiry_and_issuer(chain_env):
    reg = chain_env.registry("issuer")
    batch_id = bid(chain_env, n=5)
    unanchored = reg.batch(batch_id)
    assert (unanchored.anchored, unanchored.issuer, unanchored.product_id, unanchored.expiry) == (
        False, "0x" + "00" * 20, 0, 0)
    reg.anchor_batch(batch_id, ROOT, 77, MANIFEST, ONE_USD, 2_000_000_000)
    b = reg.batch(batch_id)
    assert b.anchored and same_address(b.issuer, chain_env.address("issuer"))
    assert (b.root, b.card_count, b.revoked, b.revoke_reason) == (ROOT, 77, False, 0)
    assert (b.product_id, b.expiry) == (reg.product_id_of(ONE_USD), 2_000_000_000)
    assert reg.product(b.product_id) == ONE_USD
    # A revocation keeps the rest.
    reg.revoke_batch(batch_id, 9)
    r = reg.batch(batch_id)
    assert (r.revoked, r.revoke_reason, r.product_id, r.expiry) == (True, 9, b.product_id, 2_000_000_000)
    assert same_address(r.issuer, chain_env.address("issuer"))


@pytest.mark.parametrize("product", [
    (bytes(32), 100, b"USD"),  # no SKU
    (ONE_USD.sku, 0, b"USD"),  # no face value
    (ONE_USD.sku, 100, bytes(3)),  # no currency
])
def test_invalid_product_is_refused(chain_env, product):
    client = chain_env.client("issuer")
    batch_id = bid(chain_env, n=6)
    fn = chain_env.registry().fn.anchorBatch(batch_id, ROOT, 10, MANIFEST, product, 0)
    before = _count(chain_env)
    with pytest.raises(InvalidProduct):
        client.transact(fn, gas=300_000)
    assert not chain_env.registry().batch(batch_id).anchored
    assert _count(chain_env) == before


@pytest.mark.parametrize("product", [
    (bytes(32), 100, b"USD"),
    (ONE_USD.sku, 0, b"USD"),
    (ONE_USD.sku, 100, bytes(3)),
])
def test_product_spec_refuses_what_the_registry_refuses(product):
    with pytest.raises(ValueError):
        ProductSpec(*product)


def test_kat_leaf_anchored_with_its_product_stays_authentic(chain_env):
    reg = chain_env.registry()
    chain_env.registry("issuer").anchor_batch(KAT_BATCH, KAT_ROOT, len(KAT_LEAVES), MANIFEST, KAT_PRODUCT,
                                              KAT_LEAVES[0].expiry)
    assert reg.verify_card(KAT_LEAVES[0].as_tuple(), KAT_PROOF0) == (True, CardStatus.VALID)
    # KAT leaf 4 never expires while its batch's cards expire: it is not one of the batch's cards.
    tree = build_tree([leaf_hash(leaf) for leaf in KAT_LEAVES])
    assert KAT_LEAVES[4].expiry != KAT_LEAVES[0].expiry
    assert reg.verify_card(KAT_LEAVES[4].as_tuple(), tree.proof_for(4)) == (False, CardStatus.UNKNOWN)
    for i in range(4):
        assert reg.verify_card(KAT_LEAVES[i].as_tuple(), tree.proof_for(i)) == (True, CardStatus.VALID), i


@pytest.mark.parametrize("anchored_as", ["other face value", "other currency", "other sku", "other expiry"])
def test_verify_card_refuses_a_leaf_of_another_product_or_expiry_than_its_batch(chain_env, anchored_as):
    """The same KAT root anchored as another product or expiry: every proof still folds to the root, but the
    leaves are not the batch's cards."""
    product, expiry = {
        "other face value": (ProductSpec(KAT_PRODUCT.sku, 100, KAT_PRODUCT.currency), KAT_LEAVES[0].expiry),
        "other currency": (ProductSpec(KAT_PRODUCT.sku, KAT_PRODUCT.face_value, b"USD"), KAT_LEAVES[0].expiry),
        "other sku": (ProductSpec.of("GC-1-EUR", KAT_PRODUCT.face_value, "EUR"), KAT_LEAVES[0].expiry),
        "other expiry": (KAT_PRODUCT, 0),
    }[anchored_as]
    chain_env.registry("issuer").anchor_batch(KAT_BATCH, KAT_ROOT, len(KAT_LEAVES), MANIFEST, product, expiry)
    tree = build_tree([leaf_hash(leaf) for leaf in KAT_LEAVES])
    reg = chain_env.registry()
    for i, leaf in enumerate(KAT_LEAVES):
        if anchored_as == "other expiry" and i == 4:  # leaf 4 never expires: it is the one that fits
            assert reg.verify_card(leaf.as_tuple(), tree.proof_for(i)) == (True, CardStatus.VALID)
            continue
        assert reg.verify_card(leaf.as_tuple(), tree.proof_for(i)) == (False, CardStatus.UNKNOWN), i


def test_random_batch_anchored_as_placeholder_is_not_authentic(chain_env):
    """Tooling's placeholder product does not vouch for real leaves either."""
    leaves = random_leaves(__import__("random").Random(3), bid(chain_env, n=8), 5)
    tree = build_tree([leaf_hash(leaf) for leaf in leaves])
    chain_env.registry("issuer").anchor_batch(leaves[0].batch_id, tree.root, 5, MANIFEST, PLACEHOLDER_PRODUCT, 0)
    reg = chain_env.registry()
    assert all(reg.verify_card(leaf.as_tuple(), tree.proof_for(i)) == (False, CardStatus.UNKNOWN)
               for i, leaf in enumerate(leaves))
