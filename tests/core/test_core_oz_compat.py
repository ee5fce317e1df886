"""Compatibility with the real @openzeppelin/merkle-tree (node) on random batches, both ways."""

from __future__ import annotations

import json
import os
import random
import subprocess

import pytest
from core_testlib import FIXTURES, KAT_SCRIPT, MAX_LEAF, REPO, kat_leaf

from issuer.core.dump import dump_json, load_dump, make_dump
from issuer.core.errors import InvalidTreeDump
from issuer.core.leaf import LEAF_VERSION, CardLeaf, leaf_hashes, sku_to_bytes32
from issuer.core.merkle import build_tree

SEED = int(os.environ.get("CARDPROOF_TEST_SEED", random.SystemRandom().randrange(2**32)))


def _random_batch(rng: random.Random, n: int) -> list[CardLeaf]:
    batch_id = rng.randbytes(20) + rng.randbytes(12)
    skus = [sku_to_bytes32(s) for s in ("GC-EUR-25", "TOPUP 10", "x" * 32, "!")]
    out = []
    for i in range(n):
        out.append(
            CardLeaf(
                version=LEAF_VERSION,
                batch_id=batch_id if rng.random() < 0.9 else rng.randbytes(32),
                index=i if rng.random() < 0.9 else rng.randrange(2**32),
                serial=rng.randrange(2**80),
                sku=rng.choice(skus),
                face_value=rng.choice([0, 1, 2500, 2**128 - 1, rng.randrange(2**128)]),
                currency=rng.choice([b"EUR", b"USD", b"JPY", b"ZZZ"]),
                expiry=rng.choice([0, 1893456000, 2**64 - 1]),
                code_form=rng.choice([0, 1]),
                code_commitment=rng.randbytes(32),
            )
        )
    if n > 3 and rng.random() < 0.3:
        out[rng.randrange(n)] = out[rng.randrange(n)]  # a duplicate leaf
    return out


@pytest.fixture(scope="module")
def batches() -> list[list[CardLeaf]]:
    rng = random.Random(SEED)
    sizes = list(range(1, 18)) + [rng.randrange(18, 300) for _ in range(6)] + [1025]
    out = [_random_batch(rng, n) for n in sizes]
    out.append([kat_leaf(i) for i in range(7)] + [MAX_LEAF])
    return out


def _proof_indices(n: int) -> list[int]:
    """Every value of small batches; of big ones a sample (OZ's getProof is slow)."""
    if n <= 64:
        return list(range(n))
    return sorted({0, 1, n - 2, n - 1, *random.Random(SEED + n).sample(range(n), 28)})


def _job(op: str, batch: list[CardLeaf], **kw) -> dict:
    return {"op": op, "proofIndices": _proof_indices(len(batch)), **kw}


@pytest.fixture(scope="module")
def oz_built(oz, batches) -> list[dict]:
    return oz.run([_job("of", b, values=[leaf.to_json() for leaf in b]) for b in batches])


def _hex(xs):
    return ["0x" + x.hex() for x in xs]


def test_roots_proofs_and_dumps_match_oz(batches, oz_built):
    for batch, ref in zip(batches, oz_built):
        ctx = f"seed={SEED} n={len(batch)}"
        assert "error" not in ref, ctx
        hs = leaf_hashes(batch)
        tree = build_tree(hs)
        assert "0x" + tree.root.hex() == ref["root"], ctx
        assert _hex(hs) == ref["leafHashes"], ctx
        assert [_hex(tree.proof_for(i)) for i in _proof_indices(len(batch))] == ref["proofs"], ctx
        assert dump_json(batch, tree) == ref["dumpText"], ctx


def test_python_loads_oz_dumps(batches, oz_built):
    for batch, ref in zip(batches, oz_built):
        loaded = load_dump(ref["dumpText"])
        assert loaded.leaves == batch, f"seed={SEED}"
        assert "0x" + loaded.tree.root.hex() == ref["root"]


def test_oz_loads_python_dumps_and_verifies_python_proofs(oz, batches):
    jobs = []
    for batch in batches:
        jobs.append(_job("load", batch, dump=make_dump(batch)))
    results = oz.run(jobs)
    verify_jobs = []
    for batch, res in zip(batches, results):
        ctx = f"seed={SEED} n={len(batch)}"
        assert "error" not in res, (ctx, res.get("error"))
        tree = build_tree(leaf_hashes(batch))
        assert res["root"] == "0x" + tree.root.hex(), ctx
        assert res["proofs"] == [_hex(tree.proof_for(i)) for i in _proof_indices(len(batch))], ctx
        i = len(batch) // 2
        proof = _hex(tree.proof_for(i))
        root = "0x" + tree.root.hex()
        verify_jobs.append({"op": "verify", "root": root, "value": batch[i].to_json(), "proof": proof})
        other = batch[i].with_index((batch[i].index + 1) % 2**32).to_json()
        verify_jobs.append({"op": "verify", "root": root, "value": other, "proof": proof})
    oks = [r["ok"] for r in oz.run(verify_jobs)]
    assert oks == [True, False] * len(batches)


def test_both_sides_reject_the_same_tampered_dumps(oz, batches):
    batch = batches[20]
    good = make_dump(batch)
    tampered = []
    d = json.loads(json.dumps(good))
    d["tree"][1] = "0x" + "00" * 32
    tampered.append(d)
    for pos in (5, 0, 8):  # faceValue, version, codeForm
        d = json.loads(json.dumps(good))
        d["values"][0]["value"][pos] = str(int(d["values"][0]["value"][pos]) ^ 1)
        tampered.append(d)
    d = json.loads(json.dumps(good))
    d["format"] = "standard-v0"
    tampered.append(d)
    results = oz.run([{"op": "load", "dump": t, "proofIndices": []} for t in tampered])
    for t, res in zip(tampered, results):
        assert "error" in res
        with pytest.raises(InvalidTreeDump):
            load_dump(t)


def test_bench_script_runs(oz):
    out = subprocess.run(
        [str(REPO / "scripts" / "bench_tree"), "--count", "300"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(last) == {"count", "python_s", "oz_js_s", "ratio", "roots_equal"}
    assert last["count"] == 300 and last["roots_equal"] is True


def test_kat_generator_reproduces_every_pinned_answer(oz):
    """tests/core/make_kats.mjs (OZ JS and node:crypto, no Python) still gives the answers pinned in the tests."""
    import test_core_commitment as c
    import test_core_dump as d
    import test_core_leaf as lf
    import test_core_merkle as m

    from tests.chain import test_registry_verify as chain

    out = subprocess.run(["node", str(KAT_SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    kats = json.loads(out.stdout)
    assert kats["leafEncoding"] == lf.ENCODING_V2
    assert kats["katLeaf0Hash"] == "0x" + lf.KAT_LEAF0_HASH
    assert kats["maxLeafHash"] == "0x" + lf.KAT_MAX_LEAF_HASH
    assert {int(k): v for k, v in kats["katRoots"].items()} == {k: "0x" + v for k, v in m.KAT_ROOTS.items()}
    assert kats["fixture"] == {"order": d.FIXTURE_ORDER, "root": "0x" + d.FIXTURE_ROOT,
                               "treeIndices": d.FIXTURE_TREE_INDICES}
    assert kats["chain"] == {"root": "0x" + chain.KAT_ROOT.hex(), "leaf0Hash": "0x" + chain.KAT_LEAF0_HASH.hex(),
                             "proof0": ["0x" + p.hex() for p in chain.KAT_PROOF0]}
    k = kats["commitment"]
    assert (k["openKey"], k["encKey"]) == ("0x" + c.KAT_OPEN_KEY, "0x" + c.KAT_ENC_KEY)
    assert {int(i): v for i, v in k["openings"].items()} == {i: "0x" + v for i, v in c.KAT_OPENINGS.items()}
    assert {int(i): v for i, v in k["formatted"].items()} == c.KAT_FORMATTED
    assert (k["formattedZero"], k["formattedMax"]) == (c.KAT_FORMATTED_ZERO, c.KAT_FORMATTED_MAX)
    assert (k["folded0"], k["exact0"], k["exactUtf8_1"]) == (
        "0x" + c.KAT_COMMITMENT_FOLDED, "0x" + c.KAT_COMMITMENT_EXACT, "0x" + c.KAT_COMMITMENT_UTF8)
    # The committed fixture is what OZ dumps for those leaves, byte for byte.
    again = oz.of([kat_leaf(i).to_json() for i in d.FIXTURE_ORDER])
    assert again["dumpText"] == (FIXTURES / "oz_standard_v1_6.json").read_text().strip()
