"""OpenZeppelin multiproofs: known answers from the real @openzeppelin/merkle-tree, round trips, tampering."""

from __future__ import annotations

import json
import random
import subprocess
import time

import pytest
from core_testlib import HERE, REPO, kat_leaf
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.core.errors import InvalidProof, InvalidTree
from issuer.core.leaf import LEAF_ENCODING, CardLeaf, leaf_hashes
from issuer.core.merkle import build_tree, hash_pair
from issuer.core.multiproof import MultiProof, multiproof, process_multiproof, verify_multiproof

OZ_MULTI = HERE / "oz_multiproof.mjs"
SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 31, 33, 100, 257, 1025)


def _oz(jobs: list[dict]) -> list[dict]:
    payload = json.dumps({"leafEncoding": LEAF_ENCODING, "jobs": jobs})
    proc = subprocess.run(["node", str(OZ_MULTI)], input=payload, capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"oz_multiproof.mjs failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)["results"]


def _batch(n: int, seed: int) -> list[CardLeaf]:
    rng = random.Random(seed)
    base = kat_leaf(0).as_tuple()
    out = [CardLeaf(*base[:2], i, rng.randrange(2**80), *base[4:9], rng.randbytes(32)) for i in range(n)]
    if n > 4:
        out[n - 1] = out[1]  # a duplicate leaf: equal hashes, distinct positions
    return out


def _index_sets(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    sets = [[0], [n - 1], [n // 2], list(range(n)), list(reversed(range(n))), []]
    if n > 2:
        lo = rng.randrange(n - 1)
        sets.append(list(range(lo, min(n, lo + 1 + rng.randrange(1, 9)))))  # contiguous range
        sets.append(rng.sample(range(n), max(2, n // 5)))  # scattered, unsorted
        sets.append(rng.sample(range(n), 2))
    return sets


def _hex(xs) -> list[str]:
    return ["0x" + x.hex() for x in xs]


@pytest.fixture(scope="module")
def cases(oz) -> list[tuple[list[CardLeaf], list[list[int]], dict]]:
    batches = [_batch(n, 1000 + n) for n in SIZES]
    sets = [_index_sets(n, 2000 + n) for n in SIZES]
    refs = _oz([{"op": "multi", "values": [lf.to_json() for lf in b], "indexSets": s} for b, s in zip(batches, sets)])
    return list(zip(batches, sets, refs))


def test_multiproofs_match_oz_get_multi_proof(cases):
    checked = 0
    for batch, index_sets, ref in cases:
        assert "error" not in ref, ref
        tree = build_tree(leaf_hashes(batch))
        assert "0x" + tree.root.hex() == ref["root"]
        for indices, want in zip(index_sets, ref["multiproofs"]):
            ctx = f"n={len(batch)} indices={indices}"
            assert "error" not in want, (ctx, want)
            mp = multiproof(tree, indices)
            assert _hex(mp.leaves) == want["leafHashes"], ctx
            assert _hex(mp.proof) == want["proof"], ctx
            assert list(mp.flags) == want["proofFlags"], ctx
            assert [batch[i].to_json() for i in mp.value_indices] == want["leaves"], ctx
            assert sorted(mp.value_indices) == sorted(indices) and want["verified"] is True
            assert process_multiproof(mp.leaves, mp.proof, mp.flags) == tree.root, ctx
            verify_multiproof(mp.leaves, mp.proof, mp.flags, tree.root)
            checked += 1
    assert checked >= 5 * len(SIZES)


def test_duplicate_index_is_refused_like_oz(oz):
    batch = _batch(9, 7)
    ref = _oz([{"op": "multi", "values": [lf.to_json() for lf in batch], "indexSets": [[3, 1, 3]]}])[0]
    assert "error" in ref["multiproofs"][0]
    with pytest.raises(InvalidProof):
        multiproof(build_tree(leaf_hashes(batch)), [3, 1, 3])


def test_index_outside_the_tree_is_refused():
    tree = build_tree(leaf_hashes(_batch(5, 1)))
    for bad in ([5], [-1], [0, 7], [True]):
        with pytest.raises(InvalidTree):
            multiproof(tree, bad)


def test_no_index_proves_nothing_but_the_root():
    tree = build_tree(leaf_hashes(_batch(6, 2)))
    mp = multiproof(tree, [])
    assert mp == MultiProof(leaves=(), value_indices=(), proof=(tree.root,), flags=())
    verify_multiproof((), mp.proof, (), tree.root)  # OpenZeppelin's documented caution


def test_single_leaf_tree():
    tree = build_tree(leaf_hashes([kat_leaf(0)]))
    mp = multiproof(tree, [0])
    assert mp.leaves == (tree.root,) and mp.proof == () and mp.flags == ()
    assert process_multiproof(mp.leaves, (), ()) == tree.root


def _tampered(mp: MultiProof) -> dict[str, tuple]:
    leaves, proof, flags = list(mp.leaves), list(mp.proof), list(mp.flags)
    out = {}
    i = flags.index(True) if True in flags else 0
    out["flipped flag"] = (leaves, proof, flags[:i] + [not flags[i]] + flags[i + 1:])
    out["wrong leaf"] = ([hash_pair(leaves[0], leaves[0])] + leaves[1:], proof, flags)
    if len(set(leaves)) > 1:
        out["reordered leaves"] = (leaves[1:] + leaves[:1], proof, flags)
    if proof:
        out["wrong proof node"] = (leaves, [bytes(32)] + proof[1:], flags)
        out["missing proof node"] = (leaves, proof[:-1], flags)
        out["reordered proof"] = (leaves, proof[::-1], flags) if len(set(proof)) > 1 else out["wrong proof node"]
    out["extra flag"] = (leaves, proof + [bytes(32)], flags + [False])
    out["dropped leaf"] = (leaves[1:], proof, flags)
    return out


def test_tampered_multiproofs_fail_here_and_in_oz(oz):
    jobs, expect = [], []
    for n, indices in ((9, [0, 4, 8]), (17, [1, 2, 3, 4]), (33, [5, 30, 2, 17, 11]), (100, list(range(0, 100, 3)))):
        batch = _batch(n, 50 + n)
        tree = build_tree(leaf_hashes(batch))
        mp = multiproof(tree, indices)
        for name, (lv, pf, fl) in _tampered(mp).items():
            with pytest.raises(InvalidProof):
                verify_multiproof(lv, pf, fl, tree.root)
            try:
                mine = "0x" + process_multiproof(lv, pf, fl).hex()
            except InvalidProof:
                mine = None
            jobs.append({"op": "process", "leaves": _hex(lv), "proof": _hex(pf), "proofFlags": fl})
            expect.append((f"n={n} {name}", mine))
    for (ctx, mine), ref in zip(expect, _oz(jobs), strict=True):
        # Same accept set and same root as the library's processMultiProof.
        assert (ref.get("root") if "error" not in ref else None) == mine, ctx


def test_validity_checks_of_solidity():
    a, b, c = (bytes([i]) * 32 for i in (1, 2, 3))
    ab = hash_pair(a, b)
    assert process_multiproof([a, b], [], [True]) == ab
    assert process_multiproof([a], [b], [False]) == ab
    assert process_multiproof([], [c], []) == c
    assert process_multiproof([a], [], []) == a
    for leaves, proof, flags in (
        ([a, b], [c], [True]),  # counts: 3 != 2
        ([a], [], [False]),  # counts: 1 != 2
        ([], [], []),  # counts: 0 != 1
        ([a, b, c], [], [False, True]),  # counts add up, but reads past the end of proof
        ([], [a, b], [False]),  # counts add up, proof not consumed
        ([a], [b, c], [False, True]),  # counts add up, proof not consumed
    ):
        with pytest.raises(InvalidProof):
            process_multiproof(leaves, proof, flags)
    for leaves, proof, flags in (([a[:31]], [], []), ([a], [b + b"\0"], [False]), ([a, b], [], [1])):
        with pytest.raises(InvalidProof):
            process_multiproof(leaves, proof, flags)
    with pytest.raises(InvalidProof):
        verify_multiproof([a, b], [], [True], c)
    with pytest.raises(InvalidProof):
        verify_multiproof([a, b], [], [True], ab[:31])


hashes32 = st.binary(min_size=32, max_size=32)


@settings(max_examples=150, deadline=None)
@given(st.lists(hashes32, min_size=1, max_size=80, unique=True), st.data())
def test_round_trip(hs, data):
    tree = build_tree(hs)
    indices = data.draw(st.lists(st.integers(0, len(hs) - 1), unique=True, max_size=len(hs)))
    mp = multiproof(tree, indices)
    assert sorted(mp.value_indices) == sorted(indices)
    assert list(mp.leaves) == [hs[i] for i in mp.value_indices]
    assert len(mp.leaves) + len(mp.proof) == len(mp.flags) + 1
    verify_multiproof(mp.leaves, mp.proof, mp.flags, tree.root)
    # Never more nodes than the single proofs together.
    assert len(mp.proof) <= max(1, sum(len(tree.proof_for(i)) for i in indices))
    if len(mp.leaves) >= 2:
        swapped = (mp.leaves[1], mp.leaves[0]) + mp.leaves[2:]
        if mp.flags[0]:
            # The first two are siblings, merged first: hash_pair is commutative, so OZ cannot tell.
            verify_multiproof(swapped, mp.proof, mp.flags, tree.root)
        else:
            with pytest.raises(InvalidProof):
                verify_multiproof(swapped, mp.proof, mp.flags, tree.root)
    if mp.flags:
        i = data.draw(st.integers(0, len(mp.flags) - 1))
        flipped = mp.flags[:i] + (not mp.flags[i],) + mp.flags[i + 1:]
        with pytest.raises(InvalidProof):
            verify_multiproof(mp.leaves, mp.proof, flipped, tree.root)


def test_all_of_65535_leaves_quickly():
    rng = random.Random(65535)
    hs = [rng.randbytes(32) for _ in range(65535)]
    tree = build_tree(hs)
    t0 = time.perf_counter()
    mp = multiproof(tree, range(65535))
    assert mp.proof == () and len(mp.flags) == 65534 and all(mp.flags)
    verify_multiproof(mp.leaves, mp.proof, mp.flags, tree.root)
    some = multiproof(tree, rng.sample(range(65535), 5000))
    verify_multiproof(some.leaves, some.proof, some.flags, tree.root)
    assert time.perf_counter() - t0 < 5
