"""Fulfilment that the contract can see: codes delivered to the buyer sealed to its key, the sealed delivery's
hash recorded on chain, the blob kept by a public service that cannot read it and cannot lie about it, checked
card by card by the buyer (``order receive``) and by an arbiter (``order evidence`` / ``review``), and membership
disputes settled by the contract alone.

Every test runs on both chains (eth-tester and anvil, the package's ``world``); the supplier's database and the
public service's are SQLite. The public FastAPI app runs on a loopback port (tests/netkit.LiveServer).

That the supplier's minting refuses a code twice (within a file, across batches, a generated code imported
again) is tested in tests/issuer/test_issuer_csv_import.py (test_duplicate_*, test_generated_codes_cannot_be_*)."""

from __future__ import annotations

import csv
import json
import os
import time

import pytest
from eth_account import Account
from web3 import Web3

from chain.errors import DisputeDeadlineNotPassed, InvalidDeliveryProof
from chain.escrow import OrderStatus, ProvenCard, account_seal_key
from chain.registry import ProductSpec
from issuer.core.multiproof import multiproof
from issuer.core.sealed import sealed_hash
from issuer.delivery_proof import NothingToProve, prove_order
from issuer.errors import BatchNotFound
from tests.escrow.world import DAY, FEE_BPS, PRICE
from tests.netkit import LiveServer
from tests.orders.conftest import WORLD_KEY
from tests.orders.sealedkit import (
    Console,
    get_blob,
    hand_card,
    hand_payload,
    hand_tree,
    lying_service,
    make_sealed_world,
    other_key,
    post_blob,
    public_app,
    seal_to_buyer,
)
from verify_api.delivery_check import CHECKS
from verify_api.order_receive import ReceiveError, evidence_key_of, fetch_sealed, receive, review


@pytest.fixture
def sw(world, tmp_path, sqlite_sessions, sqlite_template):
    s = make_sealed_world(world, tmp_path, sqlite_sessions, tmp_path / "index-sqlite.db", sqlite_template)
    with LiveServer(public_app(s)) as server:
        s.server = server
        yield s


def fee_of(amount: int) -> int:
    return amount * FEE_BPS // 10_000


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def proven_of(card) -> ProvenCard:
    return ProvenCard(card.leaf.index, card.leaf.serial, card.leaf.code_form, card.leaf.code_commitment)


# ---------------------------------------------------------------------------------------------- 1. happy path


def test_happy_path_mint_anchor_order_deliver_sealed_receive_confirm(sw, tmp_path):
    minted = sw.mint(8)
    assert minted.product_id != 0
    oid = sw.open(minted.product_id, 5)
    supplier_before = sw.world.credits("supplier", "stable")

    delivered = sw.deliver_sealed(oid, minted, [(2, 5)])
    assert delivered.uploaded and delivered.upload_error is None and delivered.cards == 5
    order = sw.escrow().order(oid)
    assert order.status == OrderStatus.DELIVERED and order.sealed_hash == delivered.sealed_hash

    # The public service keeps the blob and serves it with the chain's hash.
    got = get_blob(sw.url, oid)
    assert got.status_code == 200, got.text
    assert got.headers["x-sealed-hash"] == "0x" + order.sealed_hash.hex()
    assert Web3.keccak(got.content) == order.sealed_hash
    assert not any(code.encode() in got.content for code in minted.codes)  # ciphertext only

    out = tmp_path / "cards.csv"
    received = receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url, out=out)
    report = received.report
    assert report.ok, report.to_json()
    assert len(report.cards) == 5 and report.missing == [] and report.problems == []
    assert all(c.results == dict.fromkeys(CHECKS, True) for c in report.cards)
    assert received.sealed_hash == "0x" + order.sealed_hash.hex()
    assert os.stat(out).st_mode & 0o777 == 0o600
    rows = read_csv(out)
    assert [(int(r["index"]), r["code"]) for r in rows] == [(i, minted.codes[i]) for i in range(2, 7)]
    assert {r["ok"] for r in rows} == {"yes"} and {r["sku"] for r in rows} == {"GC-SEALED"}

    settlement = sw.escrow("buyer").confirm(oid)
    amount = 5 * PRICE
    assert settlement.supplier_amount == amount - fee_of(amount) and settlement.buyer_refund == 0
    assert sw.escrow().order(oid).status == OrderStatus.CONFIRMED
    assert sw.world.credits("supplier", "stable") - supplier_before == amount - fee_of(amount)


# ---------------------------------------------------------------------------------------------- 2. a lying service


def test_service_refuses_a_blob_whose_keccak_is_not_the_chains_and_stores_nothing(sw):
    minted = sw.mint(4)
    oid = sw.open(minted.product_id, 2)
    delivered = sw.deliver_sealed(oid, minted, [(0, 2)], upload=False)  # on chain, not uploaded
    assert not delivered.uploaded
    with sw.sessions() as s:
        from issuer.delivery_seal import stored_delivery

        blob = bytes(stored_delivery(s, sw.env.admin.chain_id, sw.world.escrow_address, oid).blob)
    assert sealed_hash(blob) == delivered.sealed_hash

    forged = bytearray(blob)
    forged[-1] ^= 1  # one flipped bit of ciphertext
    r = post_blob(sw.url, oid, bytes(forged))
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "sealed_hash_mismatch"
    assert "0x" + delivered.sealed_hash.hex() in err["message"]
    assert "0x" + sealed_hash(bytes(forged)).hex() in err["message"]
    missing = get_blob(sw.url, oid)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "sealed_delivery_not_found"

    # The true blob is taken (201), and again (200, not new); the forged one still is not.
    first = post_blob(sw.url, oid, blob)
    assert first.status_code == 201 and first.json()["sealed_hash"] == "0x" + delivered.sealed_hash.hex()
    again = post_blob(sw.url, oid, blob)
    assert again.status_code == 200 and again.json()["new"] is False
    assert post_blob(sw.url, oid, bytes(forged)).status_code == 409
    assert get_blob(sw.url, oid).content == blob


def test_service_refuses_a_delivery_for_an_undelivered_or_unknown_order(sw):
    minted = sw.mint(3)
    funded = sw.open(minted.product_id, 1)
    other = sw.open(minted.product_id, 1)
    sw.deliver_sealed(other, minted, [(0, 1)], upload=False)
    with sw.sessions() as s:
        from issuer.delivery_seal import stored_delivery

        blob = bytes(stored_delivery(s, sw.env.admin.chain_id, sw.world.escrow_address, other).blob)
    r = post_blob(sw.url, funded, blob)  # a real sealed delivery, posted for an order that has none on chain
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_delivered", r.text
    r = post_blob(sw.url, 10**9, blob)
    assert r.status_code == 404 and r.json()["error"]["code"] == "order_not_found", r.text
    assert get_blob(sw.url, funded).status_code == 404
    short = post_blob(sw.url, other, blob[:40])  # not even an ECIES header
    assert short.status_code == 422 and short.json()["error"]["code"] == "invalid_sealed_delivery", short.text
    assert post_blob(sw.url, "not-a-number", blob).status_code == 422  # type: ignore[arg-type]
    assert get_blob(sw.url, other).status_code == 404  # still nothing stored for the delivered order either


def test_a_swapped_file_or_a_lying_api_cannot_pass_fetch_sealed(sw, tmp_path):
    minted = sw.mint(6)
    a = sw.open(minted.product_id, 2)
    b = sw.open(minted.product_id, 2)
    sw.deliver_sealed(a, minted, [(0, 2)])
    sw.deliver_sealed(b, minted, [(2, 2)])
    blob_a, blob_b = get_blob(sw.url, a).content, get_blob(sw.url, b).content
    escrow = sw.escrow("buyer")

    # From a file: the right bytes pass, changed bytes do not.
    good = tmp_path / "a.sealed"
    good.write_bytes(blob_a)
    assert fetch_sealed(escrow, a, path=good)[1] == blob_a
    bad = tmp_path / "a-changed.sealed"
    bad.write_bytes(blob_a[:-1] + bytes([blob_a[-1] ^ 0x80]))
    with pytest.raises(ReceiveError) as exc:
        fetch_sealed(escrow, a, path=bad)
    msg = str(exc.value)
    assert "\n" not in msg and str(bad) in msg and "escrow recorded" in msg
    assert "0x" + escrow.order(a).sealed_hash.hex() in msg
    # A file holding another order's (genuine) delivery.
    swapped = tmp_path / "b.sealed"
    swapped.write_bytes(blob_b)
    with pytest.raises(ReceiveError, match="not the delivery of order"):
        receive(escrow, sw.registry("buyer"), a, sw.key("buyer"), path=swapped)

    # A lying public service serving order B's blob as A's, and a forged one for B.
    with lying_service({a: blob_b, b: blob_b[::-1]}) as liar:
        for oid in (a, b):
            with pytest.raises(ReceiveError, match="escrow recorded"):
                receive(escrow, sw.registry("buyer"), oid, sw.key("buyer"), public_url=liar.url)
            with pytest.raises(ReceiveError, match="escrow recorded"):
                evidence_key_of(escrow, oid, sw.key("buyer"), public_url=liar.url)


def test_the_public_database_holds_no_plaintext_code(sw, tmp_path):
    minted = sw.mint(6)
    oid = sw.open(minted.product_id, 6)
    sw.deliver_sealed(oid, minted, [(0, 6)])
    received = receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url)
    assert received.report.ok and {c.code for c in received.payload.cards} == set(minted.codes)
    sw.public_sessions.kw["bind"].dispose()  # flush SQLite's WAL into the file
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("index-sqlite.db*"))
    assert len(raw) > 0 and Web3.keccak(get_blob(sw.url, oid).content) == sw.escrow().order(oid).sealed_hash
    for code in minted.codes:
        assert code.encode() not in raw and code.replace("-", "").encode() not in raw
    # (and the blob is there, as ciphertext)
    assert get_blob(sw.url, oid).content[:64] in raw


# ---------------------------------------------------------------------------------------------- 3. wrong key


def test_receive_with_another_key_fails_with_one_line_receive_error(sw, tmp_path):
    minted = sw.mint(3)
    oid = sw.open(minted.product_id, 2)
    sw.deliver_sealed(oid, minted, [(0, 2)])
    for key in (sw.key("buyer2"), other_key(), sw.key("supplier")):
        with pytest.raises(ReceiveError) as exc:
            receive(sw.escrow("buyer"), sw.registry("buyer"), oid, key, public_url=sw.url, out=tmp_path / "x.csv")
        assert "does not open with this key" in str(exc.value) and "\n" not in str(exc.value)
        assert exc.value.code == "receive_failed"
        with pytest.raises(ReceiveError):
            evidence_key_of(sw.escrow("buyer"), oid, key, public_url=sw.url)
    assert not (tmp_path / "x.csv").exists()


def test_cli_receive_with_another_key_is_one_line_never_a_traceback(sw, tmp_path, monkeypatch, capsys):
    minted = sw.mint(3)
    oid = sw.open(minted.product_id, 2)
    sw.deliver_sealed(oid, minted, [(0, 2)])
    cli = Console(sw, monkeypatch, capsys, tmp_path / "cli-home", WORLD_KEY)
    out = tmp_path / "cards.csv"
    # Acting as another account (its key is the default seal key) ...
    cli.act_as(sw.key("buyer2"))
    r = cli.fails("order", "receive", oid, "--out", out, match="does not open with this key")
    assert not out.exists()
    # ... or naming another key in --seal-key-file, or a malformed one.
    cli.act_as(sw.key("buyer"))
    key_file = tmp_path / "seal.key"
    key_file.write_text("0x" + other_key().hex())
    cli.fails("order", "receive", oid, "--out", out, "--seal-key-file", key_file, match="does not open with this key")
    key_file.write_text("not a key")
    cli.fails("order", "receive", oid, "--out", out, "--seal-key-file", key_file, match="--seal-key-file")
    cli.fails("order", "evidence", oid, "--seal-key-file", key_file, match="--seal-key-file")
    assert not out.exists()
    # The buyer's own key opens it (the same console, so the failures above were the key's).
    r = cli("order", "receive", oid, "--out", out, "--json")
    assert r.rc == 0, r
    assert json.loads(r.out)["ok"] is True and os.stat(out).st_mode & 0o777 == 0o600
    assert sw.escrow().order(oid).status == OrderStatus.DELIVERED  # no --confirm: not confirmed


# ---------------------------------------------------------------------------------------------- 4. evidence


def test_evidence_key_opens_its_own_delivery_only_and_is_not_the_buyers_key(sw):
    minted = sw.mint(6)
    a = sw.open(minted.product_id, 3)
    b = sw.open(minted.product_id, 2)
    sw.deliver_sealed(a, minted, [(0, 3)])
    sw.deliver_sealed(b, minted, [(3, 2)])
    buyer_key = sw.key("buyer")
    key_a = evidence_key_of(sw.escrow("buyer"), a, buyer_key, public_url=sw.url)
    key_b = evidence_key_of(sw.escrow("buyer"), b, buyer_key, public_url=sw.url)
    assert len(key_a) == 32 and key_a != buyer_key and key_a != key_b
    # Stable: it is the blob's key, not a fresh one.
    assert evidence_key_of(sw.escrow("buyer"), a, buyer_key, public_url=sw.url) == key_a

    arbiter = sw.escrow("arbiter")
    reviewed = review(arbiter, sw.registry("arbiter"), a, key_a, public_url=sw.url)
    assert reviewed.report.ok and len(reviewed.report.cards) == 3 and reviewed.cards_csv is None
    assert [c.code for c in sorted(reviewed.payload.cards, key=lambda c: c.index)] == minted.codes[:3]
    with pytest.raises(ReceiveError, match="evidence key does not open"):
        review(arbiter, sw.registry("arbiter"), b, key_a, public_url=sw.url)
    assert review(arbiter, sw.registry("arbiter"), b, key_b, public_url=sw.url).report.ok
    # The evidence key is no private key that opens the delivery the ECIES way.
    with pytest.raises(ReceiveError):
        receive(arbiter, sw.registry("arbiter"), a, key_a, public_url=sw.url)


# ---------------------------------------------------------------------------------------------- 5. phantom cards

PHANTOM = ProductSpec.of("GC-PHANTOM", 2500, "USD")


def test_phantom_cards_junk_root_fail_in_root_membership_dispute_refunds_everything(sw):
    world = sw.world
    n = 4
    # A malicious supplier anchors a junk root claiming 64 cards of a product ...
    batch_id = world.batch_id("supplier")
    sw.registry("supplier").anchor_batch(batch_id, b"\x42" * 32, 64, b"\0" * 32, PHANTOM)
    pid = sw.registry().batch(batch_id).product_id
    oid = sw.open(pid, n)
    amount = n * PRICE
    buyer_credit, supplier_credit = world.credits("buyer", "stable"), world.credits("supplier", "stable")
    # ... and delivers made-up cards, each opening its own made-up commitment, sealed to the buyer.
    cards = [hand_card(batch_id, i, f"PHANTOM-{i:04d}-XYZ", product=PHANTOM) for i in range(n)]
    payload = hand_payload(sw.escrow(), oid, batch_id, cards, list(range(n)))
    assert payload.root != b"\x42" * 32
    blob = seal_to_buyer(sw, payload)
    sw.escrow("supplier").deliver(oid, batch_id, [(0, n)], sealed_hash=Web3.keccak(blob))
    r = post_blob(sw.url, oid, blob)
    assert r.status_code == 201, r.text  # the hash is the chain's: the service takes it (it cannot read it)

    received = receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url)
    report = received.report
    assert not report.ok and len(report.cards) == n and report.missing == []
    assert all(c.failed == ["in_root"] for c in report.cards), [c.failed for c in report.cards]
    assert any("does not reach the root" in p for p in report.problems)

    sw.escrow("buyer").dispute_membership(oid)
    order = sw.escrow().order(oid)
    assert order.status == OrderStatus.DISPUTED and order.membership_dispute and order.dispute_deadline > 0
    # Nobody can prove the made-up cards: not with the delivery's own multiproof (it reaches the made-up root, not
    # the anchored one), not card by card, and the supplier's tooling has no such batch to prove from.
    proven = [ProvenCard(c.leaf.index, c.leaf.serial, c.leaf.code_form, c.leaf.code_commitment)
              for c in payload.cards]
    for who in ("supplier", "stranger"):
        with pytest.raises(InvalidDeliveryProof):
            sw.escrow(who).prove_delivery(oid, proven, payload.proof, payload.flags)
    tree = hand_tree(cards)
    for i in range(n):
        one = multiproof(tree, [i])
        with pytest.raises(InvalidDeliveryProof):
            sw.escrow("supplier").prove_delivery(oid, [proven_of(cards[i])], one.proof, one.flags)
    with pytest.raises(BatchNotFound):
        prove_order(sw.sessions, sw.escrow("supplier"), oid)
    assert sw.escrow().order(oid).proven_count == 0
    # Before the deadline nobody can release; after it, anyone does and the buyer gets everything back.
    with pytest.raises(DisputeDeadlineNotPassed):
        sw.escrow("stranger").release(oid)
    world.travel_to(order.dispute_deadline + 1)
    settlement = sw.escrow("stranger").release(oid)
    assert settlement.dispute_expired
    assert settlement.buyer_refund == amount and settlement.supplier_amount == 0 and settlement.fee == 0
    assert sw.escrow().order(oid).status == OrderStatus.RELEASED
    assert world.credits("buyer", "stable") - buyer_credit == amount
    assert world.credits("supplier", "stable") == supplier_credit


# ---------------------------------------------------------------------------------------------- 6. honest answer


def test_honest_supplier_proves_a_membership_dispute_and_is_paid_at_once(sw):
    minted = sw.mint(10)
    oid = sw.open(minted.product_id, 6)
    sw.deliver_sealed(oid, minted, [(1, 6)])
    assert receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url).report.ok
    supplier_credit = sw.world.credits("supplier", "stable")
    sw.escrow("buyer").dispute_membership(oid)
    assert sw.escrow().order(oid).status == OrderStatus.DISPUTED

    result = prove_order(sw.sessions, sw.escrow("supplier"), oid, chunk=4)  # two transactions
    assert result.settled and result.proven_now == 6 and result.proven_total == 6 and len(result.txs) == 2
    order = sw.escrow().order(oid)
    assert order.status == OrderStatus.RELEASED and order.proven_count == 6
    amount = 6 * PRICE
    assert sw.world.credits("supplier", "stable") - supplier_credit == amount - fee_of(amount)
    with pytest.raises(NothingToProve):
        prove_order(sw.sessions, sw.escrow("supplier"), oid)


# ---------------------------------------------------------------------------------------------- 7. bad cards


def test_same_code_twice_and_a_leaf_of_another_product_fail_their_checks_and_cli_refuses_to_confirm(
        sw, tmp_path, monkeypatch, capsys):
    world = sw.world
    product = ProductSpec.of("GC-DUPE", 2500, "USD")
    other = ProductSpec.of("GC-OTHER", 500, "USD")
    batch_id = world.batch_id("supplier")
    cards = [hand_card(batch_id, 0, "SAME-CODE-0001", product=product),
             hand_card(batch_id, 1, "SAME-CODE-0001", product=product),  # the same code, sold twice
             hand_card(batch_id, 2, "CHEAP-CARD-0002", product=other),  # a leaf of another product
             hand_card(batch_id, 3, "FINE-CARD-0003", product=product)]
    tree = hand_tree(cards)
    # Anchored for real (the tree's root, the first leaf's product): every leaf is in the anchored root.
    sw.registry("supplier").anchor_batch(batch_id, tree.root, len(cards), b"\0" * 32, product)
    pid = sw.registry().batch(batch_id).product_id
    oid = sw.open(pid, 4)
    payload = hand_payload(sw.escrow(), oid, batch_id, cards, [0, 1, 2, 3])
    blob = seal_to_buyer(sw, payload)
    sw.escrow("supplier").deliver(oid, batch_id, [(0, 4)], sealed_hash=Web3.keccak(blob))
    assert post_blob(sw.url, oid, blob).status_code == 201

    report = receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url).report
    failed = {c.index: c.failed for c in report.cards}
    assert failed == {0: ["unique_code"], 1: ["unique_code"], 2: ["product"], 3: []}, failed
    assert not report.ok and report.problems == [] and report.missing == []

    cli = Console(sw, monkeypatch, capsys, tmp_path / "cli-home", WORLD_KEY)
    cli.act_as(sw.key("buyer"))
    out = tmp_path / "cards.csv"
    r = cli.fails("order", "receive", oid, "--confirm", "--out", out, match="3 cards failed their checks",
                  report=True)
    assert "not confirmed" in r.err and "1 of 4 cards pass every check" in r.out
    assert "card 2 (" in r.out and "failed product" in r.out
    assert sw.escrow().order(oid).status == OrderStatus.DELIVERED
    rows = {int(x["index"]): x for x in read_csv(out)}  # the cards are still written, with what failed
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert [(rows[i]["ok"], rows[i]["failed"]) for i in range(4)] == [
        ("no", "unique_code"), ("no", "unique_code"), ("no", "product"), ("yes", "")]
    r = cli.fails("order", "receive", oid, "--confirm", "--out", out, "--force", "--json", report=True)
    body = json.loads(r.out)
    assert body["ok"] is False and body["passed"] == 1 and body["confirmed_tx"] is None
    assert sw.escrow().order(oid).status == OrderStatus.DELIVERED


# ---------------------------------------------------------------------------------------------- 9. many cards


def test_a_delivery_of_1024_cards_end_to_end(sw, tmp_path):
    n = 1024
    t0 = time.perf_counter()
    minted = sw.mint(n)
    t_mint = time.perf_counter() - t0
    oid = sw.open(minted.product_id, n)
    t1 = time.perf_counter()
    delivered = sw.deliver_sealed(oid, minted, [(0, n)])
    t_deliver = time.perf_counter() - t1
    assert delivered.uploaded and delivered.cards == n
    gas = sw.gas_used(delivered.act.tx_hash)
    blob = get_blob(sw.url, oid).content
    t2 = time.perf_counter()
    out = tmp_path / "cards.csv"
    received = receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url, out=out)
    t_receive = time.perf_counter() - t2
    assert received.report.ok and len(received.report.cards) == n
    rows = read_csv(out)
    assert [r["code"] for r in rows] == minted.codes
    sw.escrow("buyer").confirm(oid)
    total = time.perf_counter() - t0
    print(f"\n[{sw.env.backend}] 1024 cards: mint+anchor {t_mint:.2f}s, deliver_sealed+upload {t_deliver:.2f}s, "
          f"receive {t_receive:.2f}s, total {total:.2f}s; sealed blob {len(blob)} bytes; deliver gasUsed {gas}")
    assert total < 30


# ---------------------------------------------------------------------------------------------- more of the same


def test_membership_dispute_refunds_exactly_the_card_of_another_product(sw):
    """In the anchored root but not of the batch's product: the escrow rebuilds every proven leaf with the batch's
    product, so that card cannot be proven and is refunded at the deadline; the others are paid for."""
    world = sw.world
    product = ProductSpec.of("GC-MIXED", 2500, "USD")
    batch_id = world.batch_id("supplier")
    cards = [hand_card(batch_id, i, f"MIXED-CODE-{i:04d}", product=product if i != 2 else
                       ProductSpec.of("GC-MIXED", 500, "USD")) for i in range(4)]
    tree = hand_tree(cards)
    sw.registry("supplier").anchor_batch(batch_id, tree.root, 4, b"\0" * 32, product)
    oid = sw.open(sw.registry().batch(batch_id).product_id, 4)
    blob = seal_to_buyer(sw, hand_payload(sw.escrow(), oid, batch_id, cards, [0, 1, 2, 3]))
    sw.escrow("supplier").deliver(oid, batch_id, [(0, 4)], sealed_hash=Web3.keccak(blob))
    assert post_blob(sw.url, oid, blob).status_code == 201
    report = receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url).report
    assert {c.index: c.failed for c in report.cards} == {0: [], 1: [], 2: ["product"], 3: []}

    sw.escrow("buyer").dispute_membership(oid)
    mp = multiproof(tree, [0, 1, 3])
    sw.escrow("supplier").prove_delivery(oid, [proven_of(cards[i]) for i in mp.value_indices], mp.proof, mp.flags)
    one = multiproof(tree, [2])
    with pytest.raises(InvalidDeliveryProof):
        sw.escrow("supplier").prove_delivery(oid, [proven_of(cards[2])], one.proof, one.flags)
    order = sw.escrow().order(oid)
    assert order.status == OrderStatus.DISPUTED and order.proven_count == 3
    buyer_credit = world.credits("buyer", "stable")
    world.travel_to(order.dispute_deadline + 1)
    settlement = sw.escrow("stranger").release(oid)
    assert settlement.dispute_expired and settlement.buyer_refund == PRICE
    assert settlement.supplier_amount + settlement.fee == 3 * PRICE and settlement.fee == fee_of(3 * PRICE)
    assert world.credits("buyer", "stable") - buyer_credit == PRICE


def test_codes_are_sealed_to_the_seal_key_named_at_opening_not_the_account_key(sw, tmp_path, monkeypatch, capsys):
    minted = sw.mint(4)
    seal_secret = bytes(Account.create().key)
    from issuer.core.sealed import public_key_of

    oid = sw.escrow("buyer").open_order(sw.world.addr("supplier"), minted.product_id, 2, sw.world.tokens["stable"],
                                        PRICE, sw.env.now() + DAY, 3_600, seal_key=public_key_of(seal_secret))
    assert bytes(sw.escrow().opened_event(oid)["sealKey"]) != account_seal_key(sw.env.client("buyer"))
    sw.deliver_sealed(oid, minted, [(0, 2)])
    with pytest.raises(ReceiveError, match="does not open with this key"):
        receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url)
    assert receive(sw.escrow("buyer"), sw.registry("buyer"), oid, seal_secret, public_url=sw.url).report.ok

    cli = Console(sw, monkeypatch, capsys, tmp_path / "cli-home", WORLD_KEY)
    cli.act_as(sw.key("buyer"))
    out = tmp_path / "cards.csv"
    cli.fails("order", "receive", oid, "--out", out, match="does not open with this key")
    key_file = tmp_path / "seal.key"
    key_file.write_text(seal_secret.hex() + "\n")
    r = cli("order", "receive", oid, "--out", out, "--seal-key-file", key_file, "--confirm", "--json")
    assert r.rc == 0 and r.err == "", r
    body = json.loads(r.out)
    assert body["ok"] is True and body["confirmed_tx"] and body["cards"] == 2
    assert [x["code"] for x in read_csv(out)] == minted.codes[:2]
    assert sw.escrow().order(oid).status == OrderStatus.CONFIRMED


def test_a_delivery_that_leaves_out_a_delivered_card_is_not_ok(sw):
    world = sw.world
    product = ProductSpec.of("GC-SHORT", 2500, "USD")
    batch_id = world.batch_id("supplier")
    cards = [hand_card(batch_id, i, f"SHORT-CODE-{i:04d}", product=product) for i in range(4)]
    tree = hand_tree(cards)
    sw.registry("supplier").anchor_batch(batch_id, tree.root, 4, b"\0" * 32, product)
    oid = sw.open(sw.registry().batch(batch_id).product_id, 4)
    blob = seal_to_buyer(sw, hand_payload(sw.escrow(), oid, batch_id, cards, [0, 1, 3]))  # card 2 held back
    sw.escrow("supplier").deliver(oid, batch_id, [(0, 4)], sealed_hash=Web3.keccak(blob))
    assert post_blob(sw.url, oid, blob).status_code == 201
    report = receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url).report
    assert all(c.ok for c in report.cards) and len(report.cards) == 3
    assert report.missing == [2] and not report.ok


def test_a_sealed_delivery_replayed_from_another_order_is_caught(sw):
    """The supplier records order A's (genuine) sealed hash with the delivery of order B: the service takes the
    blob for B (the chain vouches for it), but it opens to A's delivery and B's cards are not in it."""
    minted = sw.mint(6)
    a = sw.open(minted.product_id, 2)
    b = sw.open(minted.product_id, 2)
    sw.deliver_sealed(a, minted, [(0, 2)])
    blob_a = get_blob(sw.url, a).content
    sw.escrow("supplier").deliver(b, minted.batch_id, [(2, 2)], sealed_hash=Web3.keccak(blob_a))
    assert post_blob(sw.url, b, blob_a).status_code == 201
    report = receive(sw.escrow("buyer"), sw.registry("buyer"), b, sw.key("buyer"), public_url=sw.url).report
    assert not report.ok and report.missing == [2, 3]
    assert any(f"addressed to order {a} " in p for p in report.problems), report.problems
    assert all(c.failed == ["in_order"] for c in report.cards), [c.failed for c in report.cards]


def test_a_delivery_that_opens_to_garbage_is_not_blamed_on_the_key(sw):
    """Sealed correctly to the buyer's key, but not a delivery payload (the supplier's fault): receive and review
    refuse it in one line naming the payload's fault, and must not say that the buyer's key (or the buyer's
    evidence key, which exists: the tag verifies) is what failed -- else the buyer and the arbiter blame the key."""
    from ecies import encrypt

    from issuer.core.sealed import _CONFIG

    minted = sw.mint(3)
    oid = sw.open(minted.product_id, 1)
    opened = sw.escrow().opened_event(oid)
    blob = encrypt(bytes(opened["sealKey"]), b"CPSD\x01 these are not your codes", _CONFIG)
    sw.escrow("supplier").deliver(oid, minted.batch_id, [(0, 1)], sealed_hash=Web3.keccak(blob))
    assert post_blob(sw.url, oid, blob).status_code == 201
    with pytest.raises(ReceiveError) as exc:
        receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url)
    assert "zlib" in str(exc.value) and "\n" not in str(exc.value)
    key = evidence_key_of(sw.escrow("buyer"), oid, sw.key("buyer"), public_url=sw.url)
    with pytest.raises(ReceiveError) as exc2:
        review(sw.escrow("arbiter"), sw.registry("arbiter"), oid, key, public_url=sw.url)
    assert "zlib" in str(exc2.value)
    # The key opened the blob: the messages must not say it did not.
    assert "does not open with this key" not in str(exc.value), str(exc.value)
    assert "evidence key does not open" not in str(exc2.value), str(exc2.value)


def test_a_code_that_does_not_open_its_commitment_fails_opens(sw):
    world = sw.world
    product = ProductSpec.of("GC-OPENS", 2500, "USD")
    batch_id = world.batch_id("supplier")
    cards = [hand_card(batch_id, i, f"OPENS-CODE-{i:04d}", product=product) for i in range(3)]
    sw.registry("supplier").anchor_batch(batch_id, hand_tree(cards).root, 3, b"\0" * 32, product)
    oid = sw.open(sw.registry().batch(batch_id).product_id, 3)
    payload = hand_payload(sw.escrow(), oid, batch_id, cards, [0, 1, 2])
    from dataclasses import replace

    # Card 1 is delivered with another code than the one its leaf commits to.
    payload = replace(payload, cards=tuple(replace(c, code="NOT-THE-CODE") if c.index == 1 else c
                                           for c in payload.cards))
    blob = seal_to_buyer(sw, payload)
    sw.escrow("supplier").deliver(oid, batch_id, [(0, 3)], sealed_hash=Web3.keccak(blob))
    assert post_blob(sw.url, oid, blob).status_code == 201
    report = receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url).report
    assert {c.index: c.failed for c in report.cards} == {0: [], 1: ["opens"], 2: []}


def test_cards_revoked_or_redeemed_after_delivery_fail_their_checks_and_revoked_ones_are_refunded(sw):
    minted = sw.mint(6)
    oid = sw.open(minted.product_id, 4)
    sw.deliver_sealed(oid, minted, [(0, 4)])
    reg = sw.registry("supplier")
    reg.revoke_cards(minted.batch_id, [1], 2)
    reg.mark_redeemed(minted.batch_id, [2])  # used before the buyer even received it
    report = receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url).report
    assert {c.index: c.failed for c in report.cards} == {0: [], 1: ["not_revoked"], 2: ["not_redeemed"], 3: []}
    settlement = sw.escrow("buyer").confirm(oid)  # the buyer may still settle: the revoked card is refunded
    assert settlement.revoked_cards == 1 and settlement.buyer_refund == PRICE


# ---------------------------------------------------------------------------------------------- the consoles


def test_cli_supplier_delivers_uploads_late_and_proves_buyer_receives_and_disputes(sw, tmp_path, monkeypatch,
                                                                                  capsys):
    """`cardproof order deliver` with the public service down (delivered on chain, upload_error said), `order
    upload` once it is up, the buyer's `order receive` and `order dispute --membership`, the supplier's `order
    prove`: the order settles at once."""
    from tests.netkit import free_port

    minted = sw.mint(5)
    oid = sw.open(minted.product_id, 3)
    cli = Console(sw, monkeypatch, capsys, tmp_path / "cli-home", WORLD_KEY)
    cli.as_supplier(sw)
    monkeypatch.setenv("CARDPROOF_PUBLIC_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens there
    body = json.loads(cli.ok("order", "deliver", oid, "--batch", minted.hex, "--range", "1:3", "--json").out)
    assert body["uploaded"] is False and body["upload_error"] and "cannot reach" in body["upload_error"]
    order = sw.escrow().order(oid)
    assert order.status == OrderStatus.DELIVERED and body["sealed_hash"] == "0x" + order.sealed_hash.hex()
    assert get_blob(sw.url, oid).status_code == 404
    cli.fails("order", "upload", oid, match="cannot reach")
    # Run again, the delivery is not sent twice and the upload is redone.
    monkeypatch.setenv("CARDPROOF_PUBLIC_URL", sw.url)
    again = json.loads(cli.ok("order", "deliver", oid, "--batch", minted.hex, "--range", "1:3", "--json").out)
    assert again["uploaded"] is True and again["sealed_hash"] == body["sealed_hash"] and again["tx"] == body["tx"]
    up = json.loads(cli.ok("order", "upload", oid, "--json").out)
    assert up["sealed_hash"] == body["sealed_hash"] and up["new"] is False
    assert Web3.keccak(get_blob(sw.url, oid).content) == order.sealed_hash

    cli.as_buyer(sw)
    out = tmp_path / "cards.csv"
    got = json.loads(cli.ok("order", "receive", oid, "--out", out, "--json").out)
    assert got["ok"] is True and got["cards"] == 3 and got["passed"] == 3
    assert [r["code"] for r in read_csv(out)] == minted.codes[1:4]
    key = json.loads(cli.ok("order", "evidence", oid, "--json").out)["evidence_key"]
    cli.act_as(sw.key("arbiter"))
    reviewed = json.loads(cli.ok("order", "review", oid, "--evidence-key", key, "--json").out)
    assert reviewed["ok"] is True and len(reviewed["cards_checked"]) == 3
    cli.fails("order", "review", oid, "--evidence-key", "0x" + "00" * 32, match="evidence key does not open")
    cli.as_buyer(sw)
    cli.ok("order", "dispute", oid, "--membership", "--json")
    assert sw.escrow().order(oid).membership_dispute

    supplier_credit = sw.world.credits("supplier", "stable")
    cli.as_supplier(sw)
    proved = json.loads(cli.ok("order", "prove", oid, "--json").out)
    assert proved["settled"] is True and proved["proven_total"] == 3
    assert sw.escrow().order(oid).status == OrderStatus.RELEASED
    assert sw.world.credits("supplier", "stable") - supplier_credit == 3 * PRICE - fee_of(3 * PRICE)
    cli.fails("order", "prove", oid, match="not in a membership dispute")


# ---------------------------------------------------------------------------------------------- the supplier's side


def test_a_seal_key_that_is_no_curve_point_is_refused_before_anything_is_sent(sw):
    from issuer.delivery_seal import BadSealKey, stored_delivery

    minted = sw.mint(3)
    junk = b"\x02" + (5).to_bytes(32, "big")  # 33 bytes, as the contract wants, but x = 5 is on no point
    oid = sw.escrow("buyer").open_order(sw.world.addr("supplier"), minted.product_id, 1, sw.world.tokens["stable"],
                                        PRICE, sw.env.now() + DAY, 3_600, seal_key=junk)
    with pytest.raises(BadSealKey, match="seal key is unusable"):
        sw.deliver_sealed(oid, minted, [(0, 1)])
    assert sw.escrow().order(oid).status == OrderStatus.FUNDED
    with sw.sessions() as s:
        assert stored_delivery(s, sw.env.admin.chain_id, sw.world.escrow_address, oid) is None


def test_a_sealed_delivery_never_sent_is_resealed_for_other_cards_but_a_sent_one_is_not(sw):
    from issuer.delivery_seal import DeliveryRefused, seal_order_delivery

    minted = sw.mint(8)
    oid = sw.open(minted.product_id, 2)
    # The supplier sealed cards 0-1 and died before sending the delivery ...
    first = seal_order_delivery(sw.sessions, sw.master_key, chain_id=sw.env.admin.chain_id,
                                escrow=sw.world.escrow_address, order_id=oid, batch_id=minted.batch_id,
                                ranges=[(0, 2)], seal_key=bytes(sw.escrow().opened_event(oid)["sealKey"]))
    # ... and now delivers cards 4-5 instead: the blob on chain and on the service must hold cards 4-5.
    delivered = sw.deliver_sealed(oid, minted, [(4, 2)])
    assert delivered.sealed_hash != first.sealed_hash
    assert sw.escrow().order(oid).sealed_hash == delivered.sealed_hash
    received = receive(sw.escrow("buyer"), sw.registry("buyer"), oid, sw.key("buyer"), public_url=sw.url)
    assert received.report.ok and sorted(c.index for c in received.payload.cards) == [4, 5]
    # Delivered: another set of cards is refused (the chain holds this hash), the same set is a no-op rerun.
    with pytest.raises(DeliveryRefused, match="sealed with other cards"):
        sw.deliver_sealed(oid, minted, [(6, 2)])
    again = sw.deliver_sealed(oid, minted, [(4, 2)])
    assert again.sealed_hash == delivered.sealed_hash and again.act.tx_hash == delivered.act.tx_hash
