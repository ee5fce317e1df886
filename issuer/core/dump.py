"""OpenZeppelin ``StandardMerkleTree`` ``standard-v1`` dumps of card batches.

``make_dump`` returns what ``StandardMerkleTree.of(values, LEAF_ENCODING).dump()`` returns for
the same leaves (``dump_json`` is byte for byte ``JSON.stringify`` of it), so the JS library can
``StandardMerkleTree.load`` it, and ``load_dump`` reads dumps made by either side, checking them
completely: every value's leaf hash is at its ``treeIndex``, every internal node recomputes,
tree indices are distinct leaf positions, and (by default) the leaves are sorted as ``of`` sorts
them.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, NamedTuple, Sequence

from .errors import CoreError, InvalidTreeDump
from .leaf import LEAF_ENCODING, CardLeaf, leaf_hashes
from .merkle import MerkleTree, build_tree

__all__ = ["FORMAT", "LoadedDump", "dump_json", "load_dump", "make_dump"]

FORMAT = "standard-v1"
_NODE_RE = re.compile(r"0x[0-9a-f]{64}")


class LoadedDump(NamedTuple):
    leaves: list[CardLeaf]
    """The values, in dump order (OZ's value index)."""
    tree: MerkleTree


def make_dump(leaves: Sequence[CardLeaf], tree: MerkleTree | None = None, *, workers: int = 1) -> dict[str, Any]:
    """The ``standard-v1`` dump of ``leaves`` (built if ``tree`` is None, else ``tree`` must be
    ``build_tree(leaf_hashes(leaves))``; its leaves are checked against ``leaves``)."""
    if not leaves:
        raise InvalidTreeDump("a dump needs at least one leaf")
    hashes = None
    if tree is None:
        hashes = leaf_hashes(leaves, workers=workers)
        tree = build_tree(hashes, workers=workers)
    elif len(tree) != len(leaves):
        raise InvalidTreeDump(f"tree has {len(tree)} leaves, {len(leaves)} values given")
    ti = tree.tree_indices
    if hashes is None:
        nodes = tree.nodes
        hashes = leaf_hashes(leaves, workers=workers)
        if any(nodes[32 * p : 32 * p + 32] != h for p, h in zip(ti, hashes)):
            raise InvalidTreeDump("tree does not hold these leaves")
    h = tree.nodes.hex()
    return {
        "format": FORMAT,
        "leafEncoding": list(LEAF_ENCODING),
        "tree": ["0x" + h[j : j + 64] for j in range(0, len(h), 64)],
        "values": [{"value": leaf.to_json(), "treeIndex": p} for leaf, p in zip(leaves, ti)],
    }


def dump_json(leaves: Sequence[CardLeaf], tree: MerkleTree | None = None, *, indent: int | None = None) -> str:
    """``make_dump`` as JSON text; with ``indent=None`` identical to JS ``JSON.stringify(tree.dump())``."""
    dump = make_dump(leaves, tree)
    if indent is None:
        return json.dumps(dump, separators=(",", ":"))
    return json.dumps(dump, indent=indent)


def load_dump(data: Mapping[str, Any] | str | bytes, *, require_sorted: bool = True, workers: int = 1) -> LoadedDump:
    """Parse and fully check a ``standard-v1`` dump of card leaves; raise InvalidTreeDump."""
    if isinstance(data, (str, bytes, bytearray)):
        try:
            data = json.loads(data)
        except ValueError:
            raise InvalidTreeDump("dump is not valid JSON") from None
    if not isinstance(data, Mapping):
        raise InvalidTreeDump("dump must be a JSON object")
    if data.get("format") != FORMAT:
        raise InvalidTreeDump(f"unknown dump format, expected {FORMAT!r}")
    if data.get("leafEncoding") != LEAF_ENCODING:
        raise InvalidTreeDump(f"leafEncoding must be {LEAF_ENCODING}")
    tree, values = data.get("tree"), data.get("values")
    if not isinstance(tree, list) or not isinstance(values, list):
        raise InvalidTreeDump("dump needs a 'tree' array and a 'values' array")
    n = len(values)
    if n == 0:
        raise InvalidTreeDump("dump has no values")
    if len(tree) != 2 * n - 1:
        raise InvalidTreeDump(f"{n} values need {2 * n - 1} tree nodes, got {len(tree)}")
    for i, node in enumerate(tree):
        if not isinstance(node, str) or _NODE_RE.fullmatch(node) is None:
            raise InvalidTreeDump(f"tree node {i} is not 0x + 64 lower-case hex digits")
    nodes = bytes.fromhex("".join(node[2:] for node in tree))

    leaves: list[CardLeaf] = []
    positions: list[int] = []
    for i, entry in enumerate(values):
        if not isinstance(entry, Mapping) or set(entry) != {"value", "treeIndex"}:
            raise InvalidTreeDump(f"values[{i}] must be an object with 'value' and 'treeIndex' only")
        p = entry["treeIndex"]
        if type(p) is not int or not n - 1 <= p <= 2 * n - 2:
            raise InvalidTreeDump(f"values[{i}].treeIndex is not a leaf position")
        try:
            leaves.append(CardLeaf.from_json(entry["value"]))
        except CoreError as e:
            raise InvalidTreeDump(f"values[{i}].value: {e}") from None
        positions.append(p)
    if len(set(positions)) != n:
        raise InvalidTreeDump("two values share a treeIndex")
    for i, (p, h) in enumerate(zip(positions, leaf_hashes(leaves, workers=workers))):
        if nodes[32 * p : 32 * p + 32] != h:
            raise InvalidTreeDump(f"values[{i}] does not hash to tree[{p}]")
    if require_sorted:
        lb = nodes[32 * (n - 1) :]
        if any(lb[j : j + 32] < lb[j + 32 : j + 64] for j in range(0, len(lb) - 32, 32)):
            raise InvalidTreeDump("leaves are not sorted as StandardMerkleTree.of sorts them")
    try:
        mt = MerkleTree.from_nodes(nodes, positions, workers=workers)
    except CoreError as e:
        raise InvalidTreeDump(f"tree is invalid: {e}") from None
    return LoadedDump(leaves, mt)
