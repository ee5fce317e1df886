"""standard-v1 dumps: the committed OZ fixture, byte-identical output, and every check of load_dump."""

from __future__ import annotations

import json

import pytest
from core_testlib import FIXTURES, kat_leaf

from issuer.core.dump import dump_json, load_dump, make_dump
from issuer.core.errors import InvalidTreeDump
from issuer.core.leaf import LEAF_ENCODING, leaf_hash, leaf_hashes
from issuer.core.merkle import _build_nodes, build_tree, verify_proof

FIXTURE = FIXTURES / "oz_standard_v1_6.json"
# Made by @openzeppelin/merkle-tree 1.0.8 (tests/core/make_kats.mjs --write-fixture): StandardMerkleTree.of(values,
# LEAF_ENCODING) over kat_leaf(3), kat_leaf(0), kat_leaf(4), kat_leaf(1), kat_leaf(2), kat_leaf(1) (a duplicate),
# leaf version 2, then JSON.stringify(tree.dump()).
FIXTURE_ORDER = [3, 0, 4, 1, 2, 1]
FIXTURE_ROOT = "524b3594c179c01e03ee9a4927cf15dab08c67602d4defd7b91412fc93a284ec"
FIXTURE_TREE_INDICES = [5, 8, 7, 10, 6, 9]

def _fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def test_load_committed_oz_fixture():
    loaded = load_dump(FIXTURE.read_text())
    assert loaded.leaves == [kat_leaf(i) for i in FIXTURE_ORDER]
    assert loaded.tree.root.hex() == FIXTURE_ROOT
    assert list(loaded.tree.tree_indices) == FIXTURE_TREE_INDICES
    for i, leaf in enumerate(loaded.leaves):
        verify_proof(leaf_hash(leaf), loaded.tree.proof_for(i), loaded.tree.root)
    assert load_dump(FIXTURE.read_bytes()).tree.nodes == loaded.tree.nodes
    assert load_dump(_fixture()).tree.nodes == loaded.tree.nodes


def test_python_dump_is_byte_identical_to_oz():
    batch = [kat_leaf(i) for i in FIXTURE_ORDER]
    assert dump_json(batch) == FIXTURE.read_text().strip()
    tree = build_tree(leaf_hashes(batch))
    assert make_dump(batch, tree) == _fixture()
    assert json.loads(dump_json(batch, tree, indent=2)) == _fixture()


def test_make_dump_refuses_a_tree_of_other_leaves():
    batch = [kat_leaf(i) for i in range(4)]
    other = build_tree(leaf_hashes([kat_leaf(i) for i in range(1, 5)]))
    with pytest.raises(InvalidTreeDump):
        make_dump(batch, other)
    with pytest.raises(InvalidTreeDump):
        make_dump(batch[:3], other)
    with pytest.raises(InvalidTreeDump):
        make_dump([])


def _mutations():
    def m(fn):
        d = _fixture()
        fn(d)
        return d

    def flip(code_form: str) -> str:
        return "1" if code_form == "0" else "0"

    def v1_shape(value: list) -> list:
        return value[1:8] + value[9:]  # no version, no codeForm

    def swap_leaf_nodes(d):
        # Swap two leaves and their treeIndex: every value still hashes to its node, the rest fails.
        t, v = d["tree"], d["values"]
        t[5], t[10] = t[10], t[5]
        for e in v:
            e["treeIndex"] = {5: 10, 10: 5}.get(e["treeIndex"], e["treeIndex"])

    return {
        "format": m(lambda d: d.update(format="standard-v2")),
        "no format": m(lambda d: d.pop("format")),
        "encoding": m(lambda d: d.update(leafEncoding=LEAF_ENCODING[:-1])),
        "encoding order": m(lambda d: d.update(leafEncoding=LEAF_ENCODING[::-1])),
        "tree not a list": m(lambda d: d.update(tree="0x")),
        "node upper case": m(lambda d: d["tree"].__setitem__(0, d["tree"][0].upper().replace("0X", "0x"))),
        "node short": m(lambda d: d["tree"].__setitem__(1, d["tree"][1][:-2])),
        "node tampered": m(lambda d: d["tree"].__setitem__(1, "0x" + "00" * 32)),
        "root tampered": m(lambda d: d["tree"].__setitem__(0, "0x" + "11" * 32)),
        "node missing": m(lambda d: d["tree"].pop()),
        "value missing": m(lambda d: d["values"].pop()),
        "no values": m(lambda d: d.update(values=[], tree=[])),
        "value field": m(lambda d: d["values"][0]["value"].__setitem__(5, "2501")),
        "value bad": m(lambda d: d["values"][0]["value"].__setitem__(6, "0x657572")),
        "value version 1": m(lambda d: d["values"][0]["value"].__setitem__(0, "1")),
        "value codeForm 2": m(lambda d: d["values"][0]["value"].__setitem__(8, "2")),
        "value codeForm flipped": m(lambda d: d["values"][0]["value"].__setitem__(8, flip(d["values"][0]["value"][8]))),
        "value v1 shape": m(lambda d: d["values"][0].update(value=v1_shape(d["values"][0]["value"]))),
        "encoding v1": m(lambda d: d.update(leafEncoding=LEAF_ENCODING[1:8] + LEAF_ENCODING[9:])),
        "value short": m(lambda d: d["values"][0]["value"].pop()),
        "treeIndex moved": m(lambda d: d["values"][0].update(treeIndex=d["values"][1]["treeIndex"])),
        "treeIndex internal": m(lambda d: d["values"][0].update(treeIndex=0)),
        "treeIndex out": m(lambda d: d["values"][0].update(treeIndex=11)),
        "treeIndex str": m(lambda d: d["values"][0].update(treeIndex="9")),
        "treeIndex bool": m(lambda d: d["values"][0].update(treeIndex=True)),
        "extra key": m(lambda d: d["values"][0].update(extra=1)),
        "duplicate treeIndex": m(lambda d: d["values"][5].update(treeIndex=d["values"][3]["treeIndex"])),
        "unsorted leaves": m(swap_leaf_nodes),
    }


@pytest.mark.parametrize("name", sorted(_mutations()))
def test_load_rejects(name):
    bad = _mutations()[name]
    with pytest.raises(InvalidTreeDump):
        load_dump(bad)
    with pytest.raises(InvalidTreeDump):
        load_dump(json.dumps(bad))


@pytest.mark.parametrize("bad", ["", "{", "[]", "null", b"\xff", 5])
def test_load_rejects_non_objects(bad):
    with pytest.raises(InvalidTreeDump):
        load_dump(bad)


def test_unsorted_but_valid_tree_needs_require_sorted_false():
    # A tree built with OZ's sortLeaves=false is a valid tree, just not the one `of` makes by default.
    leaves = [kat_leaf(i) for i in range(3)]
    hs = leaf_hashes(leaves)
    nodes = _build_nodes(b"".join(hs), 3)  # leaves in input order at positions 2..4
    d = {
        "format": "standard-v1",
        "leafEncoding": LEAF_ENCODING,
        "tree": ["0x" + nodes[j : j + 32].hex() for j in range(0, len(nodes), 32)],
        "values": [{"value": leaf.to_json(), "treeIndex": 2 + i} for i, leaf in enumerate(leaves)],
    }
    if sorted(hs, reverse=True) != hs:
        with pytest.raises(InvalidTreeDump):
            load_dump(d)
    assert load_dump(d, require_sorted=False).tree.nodes == nodes
