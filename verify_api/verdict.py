"""The verdict on a card: a pure function of the database record and what the chain says.

Never ``authentic`` unless the card's batch was seen anchored on chain with the root that the card's
proof leads to. Revocation and redemption come from the chain's bitmaps; the database can only make
a verdict more cautious (a redemption recorded before its transaction is mined), never less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chain.registry import OnChainBatch

__all__ = ["VERDICTS", "ChainFacts", "Verdict", "decide"]

VERDICTS = ("authentic", "revoked", "redeemed", "unknown", "not_yet_anchored", "expired")


@dataclass(frozen=True)
class ChainFacts:
    """What the chain said (possibly from cache). ``batch`` None: never read."""

    batch: OnChainBatch | None
    #: Bits of the card; None when unknown (never read and the chain does not answer).
    revoked_bit: bool | None
    redeemed_bit: bool | None
    #: Unix time used for expiry.
    now: int


@dataclass(frozen=True)
class Verdict:
    verdict: str
    #: Machine-readable why: ok, no_such_card, chain_unavailable, batch_not_anchored, root_mismatch,
    #: proof_invalid, index_out_of_range, issuer_mismatch, issuer_not_approved, status_unavailable,
    #: batch_revoked, card_revoked, redeemed, expired.
    reason: str
    revoked: bool | None = None
    redeemed: bool | None = None
    #: Where the status came from: "chain" (the registry's bitmaps), or None (no status known).
    source: str | None = None


def decide(
    record: Any | None,
    facts: ChainFacts,
    *,
    proof_root: bytes | None,
    issuer_has_role: bool | None = None,
) -> Verdict:
    """The verdict on ``record`` (an ``issuer.lookup.CardRecord`` or None for no such card).

    ``proof_root`` is the root the card's leaf and proof fold to (computed by the caller, e.g. with
    ``issuer.core.merkle.process_proof``), or None if the proof is malformed. ``issuer_has_role``: whether
    the batch's issuer holds ISSUER_ROLE now (None: unknown); an issuer the platform struck off vouches for
    nothing, so its cards are ``unknown`` (reason ``issuer_not_approved``).
    """
    if record is None:
        return Verdict("unknown", "no_such_card")
    b = facts.batch
    if b is None:
        return Verdict("not_yet_anchored", "chain_unavailable")
    if not b.anchored:
        return Verdict("not_yet_anchored", "batch_not_anchored")
    db_root = hex_bytes(record.batch.root)
    if b.root != db_root:
        return Verdict("unknown", "root_mismatch")
    if proof_root is None or proof_root != b.root:
        return Verdict("unknown", "proof_invalid")
    if bytes(record.leaf.batch_id) != bytes(b.batch_id):
        return Verdict("unknown", "proof_invalid")
    if not 0 <= record.index < b.card_count or record.leaf.index != record.index:
        return Verdict("unknown", "index_out_of_range")
    if b.issuer.lower() != str(record.batch.issuer_address).lower():
        return Verdict("unknown", "issuer_mismatch")
    if issuer_has_role is False:
        return Verdict("unknown", "issuer_not_approved")

    if facts.revoked_bit is None or facts.redeemed_bit is None:
        # The card's bits could not be read (the chain does not answer and they were never cached): genuine, but
        # revoked or used, nobody here can say; the public side keeps no status of its own to fall back on.
        if b.revoked:
            return Verdict("revoked", "batch_revoked", True, None, "chain")
        return Verdict("unknown", "status_unavailable")
    revoked = b.revoked or facts.revoked_bit
    redeemed = facts.redeemed_bit
    source = "chain"

    # Redeemed first, as CardRegistry.verifyCard: a card used before its batch was revoked stays redeemed (and is
    # paid for); a card revoked on its own can never be redeemed.
    if redeemed:
        return Verdict("redeemed", "redeemed", revoked, True, source)
    if revoked:
        return Verdict("revoked", "batch_revoked" if b.revoked else "card_revoked", True, False, source)
    expiry = int(record.leaf.expiry)
    if expiry and facts.now > expiry:
        return Verdict("expired", "expired", False, False, source)
    return Verdict("authentic", "ok", False, False, source)


def hex_bytes(value: Any) -> bytes:
    """Bytes from bytes or a hex string (with or without 0x); b"" for anything that is not hex."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    text = str(value or "")
    text = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""
