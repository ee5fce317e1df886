"""verify_api.verdict.decide: every branch. Never authentic unless anchored on chain with the proof's root, by an
issuer that still holds ISSUER_ROLE. The public side holds no status of its own: revocation and redemption are
the chain's bits only."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from chain.registry import OnChainBatch
from issuer.core.leaf import CODE_FORM_EXACT, LEAF_VERSION, CardLeaf
from verify_api.lookup import BatchRecord, CardRecord
from verify_api.verdict import VERDICTS, ChainFacts, decide

ISSUER = "0x17c5185167401eD00cF5F5b2fc97D9BBfDb7D025"
BID = bytes.fromhex(ISSUER[2:].lower()) + b"\x07" * 12
ROOT = b"\xaa" * 32
NOW = 1_800_000_000


def record(**kw) -> CardRecord:
    leaf = CardLeaf(LEAF_VERSION, BID, 3, 12345, b"GC".ljust(32, b"\0"), 2500, b"USD", kw.pop("expiry", 0),
                    CODE_FORM_EXACT, b"\x01" * 32)
    batch = BatchRecord("0x" + BID.hex(), ISSUER, "GC", 2500, "USD", leaf.expiry, CODE_FORM_EXACT, 10,
                        "0x" + ROOT.hex(), "0x" + "ab" * 32, 5, 1_700_000_000, 1, "0x" + "cd" * 20,
                        dt.datetime.now(dt.UTC))
    rec = CardRecord("0000-0000-0000-0C1S-?", 3, leaf, [b"\x02" * 32], batch)
    return replace(rec, **kw)


def onchain(**kw) -> OnChainBatch:
    base = dict(batch_id=BID, root=ROOT, issuer=ISSUER, card_count=10, anchored_at=1_700_000_000, revoked=False,
                revoke_reason=0)
    base.update(kw)
    return OnChainBatch(**base)


def facts(batch=..., rev=False, red=False, now=NOW) -> ChainFacts:
    return ChainFacts(onchain() if batch is ... else batch, rev, red, now)


def test_authentic_only_when_everything_agrees():
    v = decide(record(), facts(), proof_root=ROOT)
    assert (v.verdict, v.reason, v.revoked, v.redeemed, v.source) == ("authentic", "ok", False, False, "chain")


def test_no_record_is_unknown():
    assert decide(None, facts(), proof_root=ROOT).verdict == "unknown"
    assert decide(None, facts(), proof_root=ROOT).reason == "no_such_card"


def test_batch_never_read_is_not_yet_anchored():
    v = decide(record(), facts(batch=None, rev=None, red=None), proof_root=ROOT)
    assert (v.verdict, v.reason) == ("not_yet_anchored", "chain_unavailable")


def test_batch_not_anchored_on_chain():
    v = decide(record(), facts(batch=onchain(anchored_at=0, root=b"\0" * 32, card_count=0)), proof_root=ROOT)
    assert (v.verdict, v.reason) == ("not_yet_anchored", "batch_not_anchored")


def test_database_says_anchored_is_not_enough():
    # The DB record says anchored; the chain does not: never authentic.
    v = decide(record(), facts(batch=onchain(anchored_at=0)), proof_root=ROOT)
    assert v.verdict != "authentic"


def test_root_mismatch():
    v = decide(record(), facts(batch=onchain(root=b"\xbb" * 32)), proof_root=b"\xbb" * 32)
    assert (v.verdict, v.reason) == ("unknown", "root_mismatch")


@pytest.mark.parametrize("proof_root", [None, b"\xcc" * 32])
def test_proof_must_lead_to_the_anchored_root(proof_root):
    v = decide(record(), facts(), proof_root=proof_root)
    assert (v.verdict, v.reason) == ("unknown", "proof_invalid")


def test_leaf_of_another_batch():
    rec = record()
    other = CardLeaf(LEAF_VERSION, b"\x09" * 32, 3, 12345, rec.leaf.sku, 2500, b"USD", 0, CODE_FORM_EXACT,
                     b"\x01" * 32)
    v = decide(replace(rec, leaf=other), facts(), proof_root=ROOT)
    assert (v.verdict, v.reason) == ("unknown", "proof_invalid")


def test_index_out_of_range():
    v = decide(record(), facts(batch=onchain(card_count=3)), proof_root=ROOT)
    assert (v.verdict, v.reason) == ("unknown", "index_out_of_range")


def test_issuer_mismatch():
    v = decide(record(), facts(batch=onchain(issuer="0x" + "11" * 20)), proof_root=ROOT)
    assert (v.verdict, v.reason) == ("unknown", "issuer_mismatch")


def test_card_revoked_on_chain():
    v = decide(record(), facts(rev=True), proof_root=ROOT)
    assert (v.verdict, v.reason, v.source) == ("revoked", "card_revoked", "chain")


def test_batch_revoked_on_chain():
    v = decide(record(), facts(batch=onchain(revoked=True, revoke_reason=2)), proof_root=ROOT)
    assert (v.verdict, v.reason) == ("revoked", "batch_revoked")


def test_redeemed_wins_over_a_later_batch_revocation():
    """As CardRegistry.verifyCard: a card redeemed before its batch was revoked stays redeemed (it was used, and
    the escrow pays for it); only the batch-level flag can make both bits true on chain."""
    v = decide(record(), facts(batch=onchain(revoked=True, revoke_reason=2), rev=True, red=True), proof_root=ROOT)
    assert (v.verdict, v.revoked, v.redeemed) == ("redeemed", True, True)


def test_redeemed_on_chain():
    v = decide(record(), facts(red=True), proof_root=ROOT)
    assert (v.verdict, v.redeemed, v.source) == ("redeemed", True, "chain")


def test_bits_unknown_are_not_called_authentic():
    """A card whose bits could not be read may be revoked or used: not "authentic" (the public side keeps no
    status to fall back on)."""
    for rev, red in ((None, None), (False, None), (None, False)):
        v = decide(record(), facts(rev=rev, red=red), proof_root=ROOT)
        assert (v.verdict, v.reason, v.source) == ("unknown", "status_unavailable", None)
    # a batch revoked on chain is revoked even when the card's bits could not be read
    v = decide(record(), facts(batch=onchain(revoked=True, revoke_reason=2), rev=None, red=None), proof_root=ROOT)
    assert (v.verdict, v.reason) == ("revoked", "batch_revoked")


def test_issuer_without_role_vouches_for_nothing():
    v = decide(record(), facts(), proof_root=ROOT, issuer_has_role=False)
    assert (v.verdict, v.reason) == ("unknown", "issuer_not_approved")
    # even a revoked or redeemed card: the issuer's word counts for nothing
    assert decide(record(), facts(rev=True), proof_root=ROOT, issuer_has_role=False).reason == "issuer_not_approved"
    assert decide(record(), facts(), proof_root=ROOT, issuer_has_role=True).verdict == "authentic"
    assert decide(record(), facts(), proof_root=ROOT, issuer_has_role=None).verdict == "authentic"


def test_expired():
    v = decide(record(expiry=NOW - 1), facts(), proof_root=ROOT)
    assert (v.verdict, v.reason) == ("expired", "expired")
    assert decide(record(expiry=NOW + 1), facts(), proof_root=ROOT).verdict == "authentic"
    assert decide(record(expiry=NOW), facts(), proof_root=ROOT).verdict == "authentic"  # like the contract: >


def test_revoked_wins_over_expired():
    assert decide(record(expiry=NOW - 1), facts(rev=True), proof_root=ROOT).verdict == "revoked"


def test_every_verdict_is_reachable():
    seen = {
        decide(record(), facts(), proof_root=ROOT).verdict,
        decide(record(), facts(rev=True), proof_root=ROOT).verdict,
        decide(record(), facts(red=True), proof_root=ROOT).verdict,
        decide(None, facts(), proof_root=None).verdict,
        decide(record(), facts(batch=None), proof_root=ROOT).verdict,
        decide(record(expiry=1), facts(), proof_root=ROOT).verdict,
    }
    assert seen == set(VERDICTS)
