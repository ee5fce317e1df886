"""Shared pieces of the registry tests: batch ids owned by a role account, anchoring, address equality."""

from __future__ import annotations

from web3 import Web3

ROOT = b"\x11" * 32
MANIFEST = b"\x22" * 32


def bid(env, who: str = "issuer", n: int = 1) -> bytes:
    """A batch id owned by `who`: its address, then a 12-byte number."""
    return bytes.fromhex(env.address(who)[2:]) + n.to_bytes(12, "big")


def anchor(env, who: str, n: int, count: int) -> bytes:
    """Anchor batch `bid(env, who, n)` of `count` cards with ROOT; returns its id."""
    batch_id = bid(env, who, n)
    env.registry(who).anchor_batch(batch_id, ROOT, count, MANIFEST)
    return batch_id


def same_address(a: str, b: str) -> bool:
    return Web3.to_checksum_address(a) == Web3.to_checksum_address(b)
