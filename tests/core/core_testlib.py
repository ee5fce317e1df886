"""Helpers of the core tests: known-answer leaves, leaf strategies, the OpenZeppelin reference (node).

Imported by the test modules as ``core_testlib`` (tests/core/conftest.py puts this folder on sys.path).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from hypothesis import strategies as st

from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED, LEAF_ENCODING, LEAF_VERSION, CardLeaf, sku_to_bytes32

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
OZ_SCRIPT = HERE / "oz_tree.mjs"
KAT_SCRIPT = HERE / "make_kats.mjs"
FIXTURES = HERE / "fixtures"

KAT_BATCH_ID = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678") + (1).to_bytes(12, "big")


def kat_leaf(i: int) -> CardLeaf:
    """The i-th known-answer leaf (the KAT roots in the tests are over kat_leaf(0..k-1)).

    Written out again, in dump JSON form, in tests/core/make_kats.mjs, which made the pinned answers."""
    return CardLeaf(
        version=LEAF_VERSION,
        batch_id=KAT_BATCH_ID,
        index=i,
        serial=0x0123456789ABCDEF0123 + i,
        sku=sku_to_bytes32("GC-EUR-25"),
        face_value=2500,
        currency=b"EUR",
        expiry=1893456000,
        code_form=(CODE_FORM_EXACT, CODE_FORM_FOLDED)[i % 2],
        code_commitment=hashlib.sha256(b"cardproof-kat-%d" % i).digest(),
    )


MAX_LEAF = CardLeaf(
    version=LEAF_VERSION,
    batch_id=b"\xff" * 32,
    index=2**32 - 1,
    serial=2**80 - 1,
    sku=sku_to_bytes32("Z" * 32),
    face_value=2**128 - 1,
    currency=b"ZZZ",
    expiry=2**64 - 1,
    code_form=CODE_FORM_FOLDED,
    code_commitment=b"\xff" * 32,
)


def oz_unavailable_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (REPO / "node_modules" / "@openzeppelin" / "merkle-tree" / "package.json").exists():
        return "node_modules/@openzeppelin/merkle-tree is missing (run npm ci)"
    return None


class OZ:
    """Runs jobs through tests/core/oz_tree.mjs (the real @openzeppelin/merkle-tree)."""

    def run(self, jobs: list[dict]) -> list[dict]:
        payload = json.dumps({"leafEncoding": LEAF_ENCODING, "jobs": jobs})
        proc = subprocess.run(
            ["node", str(OZ_SCRIPT)], input=payload, capture_output=True, text=True, cwd=REPO, timeout=120
        )
        if proc.returncode != 0:
            raise RuntimeError(f"oz_tree.mjs failed: {proc.stderr[-2000:]}")
        return json.loads(proc.stdout)["results"]

    def of(self, values: list[list]) -> dict:
        return self.run([{"op": "of", "values": values}])[0]


_ascii_sku = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=32)


@st.composite
def leaves(draw, batch_id: bytes | None = None):
    """Any valid CardLeaf (or, with ``batch_id``, any of that batch)."""
    return CardLeaf(
        version=LEAF_VERSION,
        batch_id=batch_id if batch_id is not None else draw(st.binary(min_size=32, max_size=32)),
        index=draw(st.integers(0, 2**32 - 1)),
        serial=draw(st.integers(0, 2**80 - 1)),
        sku=sku_to_bytes32(draw(_ascii_sku)),
        face_value=draw(st.integers(0, 2**128 - 1)),
        currency=draw(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)).encode(),
        expiry=draw(st.integers(0, 2**64 - 1)),
        code_form=draw(st.sampled_from([CODE_FORM_EXACT, CODE_FORM_FOLDED])),
        code_commitment=draw(st.binary(min_size=32, max_size=32)),
    )
