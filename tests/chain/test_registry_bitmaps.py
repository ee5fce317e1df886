"""The revocation and redemption bitmaps: word boundaries, batch sizes, atomicity, and a property test."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.errors import CardAlreadyRedeemed, CardIndexOutOfRange, CardRevoked
from tests.chain.registry_kit import ROOT, anchor, bid

ALL_ONES = 2**256 - 1


def anchored(env, count: int, n: int = 1, who: str = "issuer") -> bytes:
    return anchor(env, who, n, count)


def words_of(indices) -> dict[int, int]:
    """The bitmap words (word index -> value) that have exactly `indices` set."""
    out: dict[int, int] = {}
    for i in indices:
        out[i >> 8] = out.get(i >> 8, 0) | (1 << (i & 0xFF))
    return out


def test_batch_record(chain_env):
    batch_id = anchored(chain_env, 1_000_000)
    b = chain_env.registry().batch(batch_id)
    assert b.anchored and b.root == ROOT and b.card_count == 1_000_000
    assert b.issuer == chain_env.address("issuer")
    assert b.anchored_at == chain_env.now()
    assert not b.revoked and b.revoke_reason == 0
    missing = chain_env.registry().batch(bid(chain_env, n=2))
    assert not missing.anchored and missing.card_count == 0 and missing.root == b"\x00" * 32


def test_batch_of_one(chain_env):
    batch_id = anchored(chain_env, 1)
    reg = chain_env.registry("issuer")
    with pytest.raises(CardIndexOutOfRange) as e:
        reg.mark_redeemed(batch_id, [1])
    assert (e.value.index, e.value.card_count) == (1, 1)
    reg.mark_redeemed(batch_id, [0])
    assert reg.redeemed_word(batch_id, 0) == 1
    assert reg.is_redeemed(batch_id, 0)


def test_batch_of_256(chain_env):
    batch_id = anchored(chain_env, 256)
    reg = chain_env.registry("issuer")
    with pytest.raises(CardIndexOutOfRange):
        reg.mark_redeemed(batch_id, [256])
    with pytest.raises(CardIndexOutOfRange):
        reg.revoke_cards(batch_id, [256], 1)
    reg.mark_redeemed(batch_id, [255])
    assert reg.redeemed_word(batch_id, 0) == 1 << 255
    reg.mark_redeemed(batch_id, range(255))  # the rest, in one call
    assert reg.redeemed_word(batch_id, 0) == ALL_ONES
    assert reg.redeemed_word(batch_id, 1) == 0


def test_batch_of_257(chain_env):
    batch_id = anchored(chain_env, 257)
    reg = chain_env.registry("issuer")
    with pytest.raises(CardIndexOutOfRange) as e:
        reg.mark_redeemed(batch_id, [257])
    assert e.value.card_count == 257
    reg.mark_redeemed(batch_id, [256, 0])
    assert reg.redeemed_word(batch_id, 0) == 1
    assert reg.redeemed_word(batch_id, 1) == 1
    reg.revoke_cards(batch_id, [255], 4)
    assert reg.revoked_word(batch_id, 0) == 1 << 255
    assert reg.revoked_word(batch_id, 1) == 0


def test_boundary_indices(chain_env):
    count = 1000
    batch_id = anchored(chain_env, count)
    reg = chain_env.registry("issuer")
    edges = [0, 255, 256, count - 1]
    reg.mark_redeemed(batch_id, edges)
    for i in edges:
        assert reg.is_redeemed(batch_id, i)
    for i in (1, 254, 257, count - 2):
        assert not reg.is_redeemed(batch_id, i)
    assert reg.redeemed_word(batch_id, 0) == (1 | 1 << 255)
    assert reg.redeemed_word(batch_id, 1) == 1
    assert reg.redeemed_word(batch_id, 3) == 1 << ((count - 1) & 0xFF)
    for bad in (count, count + 255, 2**255, 2**256 - 1):
        with pytest.raises(CardIndexOutOfRange) as e:
            reg.mark_redeemed(batch_id, [bad])
        assert e.value.index == bad
    # Views take any index: out of range is simply not set.
    assert not reg.is_redeemed(batch_id, 2**256 - 1)
    assert reg.redeemed_word(batch_id, 2**248 - 1) == 0


def test_unordered_indices_across_words_in_one_call(chain_env):
    batch_id = anchored(chain_env, 1000)
    reg = chain_env.registry("issuer")
    indices = [700, 3, 256, 255, 512, 1, 999, 257]
    reg.mark_redeemed(batch_id, indices)
    expected = words_of(indices)
    for w in range(4):
        assert reg.redeemed_word(batch_id, w) == expected.get(w, 0)
    reg.revoke_cards(batch_id, [998, 2, 600, 4], 7)
    revoked = words_of([998, 2, 600, 4])
    for w in range(4):
        assert reg.revoked_word(batch_id, w) == revoked.get(w, 0)
        assert reg.redeemed_word(batch_id, w) == expected.get(w, 0)  # untouched by revocation


def test_many_words_in_one_call(chain_env):
    """One card in each of 40 words, shuffled: the client's gas limit covers one storage word per card."""
    batch_id = anchored(chain_env, 40 * 256)
    reg = chain_env.registry("issuer")
    indices = [((w * 17) % 40) * 256 + w for w in range(40)]
    receipt = reg.mark_redeemed(batch_id, indices)
    assert receipt["status"] == 1
    expected = words_of(indices)
    for w in (0, 1, 17, 39):
        assert reg.redeemed_word(batch_id, w) == expected[w]


def test_revoked_word_and_whole_batch(chain_env):
    batch_id = anchored(chain_env, 300)
    reg = chain_env.registry("issuer")
    reg.revoke_cards(batch_id, [0, 299], 1)
    assert reg.revoked_word(batch_id, 0) == 1
    assert reg.revoked_word(batch_id, 1) == 1 << (299 - 256)
    reg.mark_redeemed(batch_id, [5])
    assert reg.is_revoked(batch_id, 0) and not reg.is_revoked(batch_id, 1)
    reg.revoke_batch(batch_id, 6)
    b = reg.batch(batch_id)
    assert b.revoked and b.revoke_reason == 6
    for w in (0, 1, 2, 10**6):
        assert reg.revoked_word(batch_id, w) == ALL_ONES  # documented: all ones once the batch is revoked
    assert reg.is_revoked(batch_id, 1) and reg.is_revoked(batch_id, 299)
    # Redemptions made before the batch revocation stay recorded.
    assert reg.redeemed_word(batch_id, 0) == 1 << 5
    assert reg.is_redeemed(batch_id, 5)
    with pytest.raises(CardRevoked):
        reg.mark_redeemed(batch_id, [6])


def test_no_partial_state_when_last_index_is_bad(chain_env):
    count = 600
    batch_id = anchored(chain_env, count)
    reg = chain_env.registry("issuer")
    reg.mark_redeemed(batch_id, [10])
    reg.revoke_cards(batch_id, [20], 1)
    bad_calls = [
        ([0, 1, 300, count], CardIndexOutOfRange),
        ([2, 3, 301, 10], CardAlreadyRedeemed),
        ([4, 302, 5, 20], CardRevoked),
        ([6, 303, 7, 303], CardAlreadyRedeemed),
    ]
    for indices, error in bad_calls:
        with pytest.raises(error) as e:
            reg.mark_redeemed(batch_id, indices)
        assert e.value.index == indices[-1]
    assert reg.redeemed_word(batch_id, 0) == 1 << 10
    assert reg.redeemed_word(batch_id, 1) == 0
    for indices, error in ([[30, 400, count + 5], CardIndexOutOfRange], [[31, 401, 10], CardAlreadyRedeemed]):
        with pytest.raises(error):
            reg.revoke_cards(batch_id, indices, 1)
    assert reg.revoked_word(batch_id, 0) == 1 << 20
    assert reg.revoked_word(batch_id, 1) == 0
    # Nothing was written, yet the same cards are still redeemable.
    reg.mark_redeemed(batch_id, [0, 1, 300])
    assert reg.redeemed_word(batch_id, 1) == 1 << (300 - 256)


# ---------------------------------------------------------------- property test

_batch_numbers = itertools.count(1000)


@st.composite
def redemption_plans(draw):
    count = draw(st.sampled_from([1, 255, 256, 257, 700]))
    chosen = draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=40, unique=True))
    order = draw(st.permutations(chosen))
    n_chunks = draw(st.integers(1, min(4, len(order))))
    cuts = sorted(draw(st.lists(st.integers(1, len(order) - 1), min_size=n_chunks - 1, max_size=n_chunks - 1,
                                unique=True))) if len(order) > 1 and n_chunks > 1 else []
    chunks = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)])]
    # A second call that re-redeems some card among fresh ones.
    fresh = [i for i in range(count) if i not in set(chosen)]
    again = draw(st.lists(st.sampled_from(chosen), min_size=1, max_size=3))
    extra = draw(st.lists(st.sampled_from(fresh), max_size=3, unique=True)) if fresh else []
    retry = draw(st.permutations(extra + again))
    return count, chunks, retry


@settings(max_examples=15, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=redemption_plans())
def test_redeemed_set_matches_isredeemed(chain_env, plan):
    count, chunks, retry = plan
    batch_id = anchored(chain_env, count, n=next(_batch_numbers))
    reg = chain_env.registry("issuer")
    for chunk in chunks:
        reg.mark_redeemed(batch_id, chunk)
    redeemed = {i for chunk in chunks for i in chunk}

    expected = words_of(redeemed)
    for w in range((count + 255) // 256):
        assert reg.redeemed_word(batch_id, w) == expected.get(w, 0)
    probes = redeemed | {i + d for i in redeemed for d in (-1, 1) if 0 <= i + d < count} | {0, count - 1}
    assert {i for i in probes if reg.is_redeemed(batch_id, i)} == redeemed

    first_bad = next(i for i in retry if i in redeemed)
    with pytest.raises(CardAlreadyRedeemed) as e:
        reg.mark_redeemed(batch_id, retry)
    assert e.value.index == first_bad
    for w in range((count + 255) // 256):
        assert reg.redeemed_word(batch_id, w) == expected.get(w, 0)
