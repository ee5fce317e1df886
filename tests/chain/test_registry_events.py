"""Events of the CardRegistry, read back through chain/events.py as the indexer reads them."""

from __future__ import annotations

from chain.artifacts import load_artifact
from chain.deployments import REGISTRY
from chain.events import read_events
from chain.registry import ProductSpec
from tests.chain.registry_kit import MANIFEST, ROOT, anchor, bid


def anchored(env, count: int = 1000, n: int = 1, who: str = "issuer") -> bytes:
    return anchor(env, who, n, count)


def events_of(env, receipt, names=None):
    """The registry's events in the block of `receipt`, all from that transaction."""
    contracts = [(env.registry_address, load_artifact(REGISTRY).abi)]
    block = receipt["blockNumber"]
    out = read_events(env.admin, contracts, block, block, names)
    tx = receipt["transactionHash"].to_0x_hex()
    assert all(e.tx_hash == tx for e in out)
    return out


def masks(events) -> list[tuple[int, int]]:
    return [(e.args["wordIndex"], e.args["mask"]) for e in events]


def test_batch_anchored(chain_env):
    batch_id = bid(chain_env)
    product = ProductSpec.of("EVT-5", 500, "EUR")
    reg = chain_env.registry("issuer")
    receipt = reg.anchor_batch(batch_id, ROOT, 123_456, MANIFEST, product, 1_900_000_000)
    registered, ev = events_of(chain_env, receipt)
    product_id = reg.product_id_of(product)
    assert product_id >= 1
    assert registered.name == "ProductRegistered"
    assert registered.args == {"productId": product_id, "sku": product.sku, "faceValue": 500, "currency": b"EUR"}
    assert ev.name == "BatchAnchored"
    assert ev.args == {
        "batchId": batch_id,
        "issuer": chain_env.address("issuer"),
        "root": ROOT,
        "cardCount": 123_456,
        "manifestHash": MANIFEST,
        "productId": product_id,
        "expiry": 1_900_000_000,
    }
    assert ev.address == chain_env.registry_address
    assert ev.block_number == receipt["blockNumber"]
    # A second batch of the same product registers nothing: BatchAnchored only, with the same product id.
    receipt = reg.anchor_batch(bid(chain_env, n=2), ROOT, 1, MANIFEST, product, 0)
    (again,) = events_of(chain_env, receipt)
    assert again.name == "BatchAnchored"
    assert (again.args["productId"], again.args["expiry"]) == (product_id, 0)


def test_cards_redeemed_one_event_per_word(chain_env):
    batch_id = anchored(chain_env)
    receipt = chain_env.registry("issuer").mark_redeemed(batch_id, [1, 300, 2])
    evs = events_of(chain_env, receipt)
    assert [e.name for e in evs] == ["CardsRedeemed", "CardsRedeemed"]
    assert masks(evs) == [(0, (1 << 1) | (1 << 2)), (1, 1 << (300 - 256))]
    for e in evs:
        assert e.args["batchId"] == batch_id
        assert e.args["by"] == chain_env.address("issuer")


def test_cards_redeemed_words_in_first_touch_order(chain_env):
    batch_id = anchored(chain_env)
    reg = chain_env.registry("issuer")
    cases = [
        ([0, 1, 255], [(0, 1 | 2 | 1 << 255)]),
        ([256, 512, 513, 768], [(1, 1), (2, 1 | 2), (3, 1)]),
        ([999, 600, 300, 3], [(3, 1 << (999 - 768)), (2, 1 << (600 - 512)), (1, 1 << 44), (0, 1 << 3)]),
        ([4, 301, 5, 302, 6, 700], [(0, 16 | 32 | 64), (1, 1 << 45 | 1 << 46), (2, 1 << (700 - 512))]),
    ]
    for indices, expected in cases:
        assert masks(events_of(chain_env, reg.mark_redeemed(batch_id, indices))) == expected
    # Masks decompose back to exactly the redeemed cards.
    redeemed = {w * 256 + b for _, exp in cases for w, m in exp for b in range(256) if m >> b & 1}
    assert redeemed == {i for indices, _ in cases for i in indices}


def test_indices_hopping_between_words_still_give_one_event_per_word(chain_env):
    batch_id = anchored(chain_env)
    indices = [(k % 3) * 256 + k // 3 for k in range(150)]  # word 0, 1, 2, 0, 1, 2, ...
    receipt = chain_env.registry("issuer").mark_redeemed(batch_id, indices)
    full = (1 << 50) - 1
    assert masks(events_of(chain_env, receipt)) == [(0, full), (1, full), (2, full)]
    receipt = chain_env.registry("issuer").revoke_cards(batch_id, [900, 60, 600, 61, 901], 5)
    assert masks(events_of(chain_env, receipt)) == [(3, 3 << (900 - 768)), (0, 3 << 60), (2, 1 << (600 - 512))]


def test_cards_redeemed_by_redeemer(chain_env):
    batch_id = anchored(chain_env)
    chain_env.registry("issuer").set_redeemer(chain_env.address("redeemer"), True)
    receipt = chain_env.registry("redeemer").mark_redeemed(batch_id, [42])
    (ev,) = events_of(chain_env, receipt)
    assert ev.args["by"] == chain_env.address("redeemer")
    assert masks([ev]) == [(0, 1 << 42)]


def test_cards_revoked(chain_env):
    batch_id = anchored(chain_env)
    receipt = chain_env.registry("issuer").revoke_cards(batch_id, [1, 300, 2], 3)
    evs = events_of(chain_env, receipt)
    assert [e.name for e in evs] == ["CardsRevoked", "CardsRevoked"]
    assert masks(evs) == [(0, 0b110), (1, 1 << 44)]
    assert all(e.args["reason"] == 3 and e.args["batchId"] == batch_id for e in evs)


def test_batch_revoked(chain_env):
    batch_id = anchored(chain_env)
    receipt = chain_env.registry("issuer").revoke_batch(batch_id, 65535)
    (ev,) = events_of(chain_env, receipt)
    assert ev.name == "BatchRevoked"
    assert ev.args == {"batchId": batch_id, "reason": 65535}


def test_redeemer_set(chain_env):
    reg = chain_env.registry("issuer")
    redeemer = chain_env.address("redeemer")
    r1 = reg.set_redeemer(redeemer, True)
    r2 = reg.set_redeemer(redeemer, False)
    (e1,) = events_of(chain_env, r1)
    (e2,) = events_of(chain_env, r2)
    assert e1.name == e2.name == "RedeemerSet"
    assert e1.args == {"issuer": chain_env.address("issuer"), "redeemer": redeemer, "allowed": True}
    assert e2.args == {"issuer": chain_env.address("issuer"), "redeemer": redeemer, "allowed": False}


def test_read_events_over_a_range_filters_by_name(chain_env):
    start = chain_env.admin.block_number() + 1
    batch_id = anchored(chain_env)
    reg = chain_env.registry("issuer")
    reg.mark_redeemed(batch_id, [0])
    reg.revoke_cards(batch_id, [1], 1)
    reg.mark_redeemed(batch_id, [256])
    end = chain_env.admin.block_number()
    contracts = [(chain_env.registry_address, load_artifact(REGISTRY).abi)]
    every = [e for e in read_events(chain_env.admin, contracts, start, end) if e.name != "ProductRegistered"]
    assert [e.name for e in every] == ["BatchAnchored", "CardsRedeemed", "CardsRevoked", "CardsRedeemed"]
    assert [e.block_number for e in every] == sorted(e.block_number for e in every)
    redeemed = read_events(chain_env.admin, contracts, start, end, names=["CardsRedeemed"], chunk=1)
    assert masks(redeemed) == [(0, 1), (1, 1)]
    assert len({e.key for e in every}) == 4
