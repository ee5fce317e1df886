"""Repeated commands behave like `anchor` (issue 12): `revoke` run again says "already revoked", exits 0 and sends
nothing; `mint` checks the issuer role before it writes anything."""

from __future__ import annotations

import pytest
from eth_account import Account

from chain.client import dev_account_for, shared_in_process_web3
from issuer.errors import CardRevoked
from issuer.revocation import RevokeReason, revoke_serials
from tests.clikit import in_process_cli
from tests.issuer.test_codes_typed import _exported
from tests.issuer.test_issuer_redemption import anchored_batch

MINT = ("mint", "--sku", "GC", "--face-value", "5", "--currency", "EUR", "--count", "3")


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    with in_process_cli(tmp_path, monkeypatch, capsys, CARDPROOF_PUBLIC_URL="https://cards.example.test") as c:
        c.ok("deploy", "--json")
        yield c


def _dev():
    _, w3 = shared_in_process_web3()
    account = dev_account_for(w3, w3.eth.chain_id).address
    return w3, account


def _sent(address: str) -> int:
    w3, _ = _dev()
    return w3.eth.get_transaction_count(address)


def test_revoke_twice_says_already_and_sends_nothing(cli, tmp_path):
    _, dev = _dev()
    cli.ok("issuer", "add", "--name", "Acme", "--address", dev)
    batch = cli.ok(*MINT, "--json").json["batch_id"]
    cli.ok("anchor", batch)
    rows = _exported(cli, batch, tmp_path / "e")
    first = cli.ok("revoke", rows[0]["serial"], "--reason", "leaked", "--json").json
    assert first[0]["already"] is False and first[0]["tx_hash"].startswith("0x")
    nonce = _sent(dev)
    again = cli.ok("revoke", rows[0]["serial"], "--reason", "leaked")
    assert again.out.startswith("already revoked: 1 card(s)") and "nothing sent" in again.out
    assert rows[0]["serial"] in again.out and "leaked" in again.out
    assert _sent(dev) == nonce
    # Another reason does not conflict: the card is revoked; the reason recorded first is said.
    data = cli.ok("revoke", rows[0]["serial"].lower(), "--reason", "fraud", "--json").json
    assert data == [{"batch_id": batch, "serials": [rows[0]["serial"]], "indices": [0], "reason": 1, "tx_hash": "",
                     "already": True, "reason_name": "leaked"}]
    assert _sent(dev) == nonce
    # With a card not revoked yet: that one is revoked, the other reported.
    both = cli.ok("revoke", rows[0]["serial"], rows[2]["serial"], "--reason", "damaged", "--json").json
    assert [(r["indices"], r["already"]) for r in both] == [([2], False), ([0], True)]
    assert _sent(dev) == nonce + 1


def test_library_refuses_a_repeat_unless_asked(issuer_env, sessions, master_key):
    res, cards = anchored_batch(issuer_env, sessions, master_key, count=2)
    revoke_serials(sessions, issuer_env.registry, [cards[0]["serial"]], RevokeReason.LEAKED)
    with pytest.raises(CardRevoked):
        revoke_serials(sessions, issuer_env.registry, [cards[0]["serial"]], RevokeReason.LEAKED)
    [out] = revoke_serials(sessions, issuer_env.registry, [cards[0]["serial"]], RevokeReason.FRAUD, repeat_ok=True)
    assert out.already and out.indices == [0] and out.reason == RevokeReason.LEAKED and out.tx_hash == ""


# ------------------------------------------------------------------------------------------------------ mint


def test_mint_by_a_non_issuer_fails_before_writing_anything(cli):
    outsider = Account.create()
    w3, dev = _dev()
    w3.eth.send_transaction({"from": dev, "to": outsider.address, "value": 10**18})
    cli.act_as(outsider.key.hex())
    r = cli.fails(*MINT, rc=1, match="not an approved issuer")
    assert outsider.address in r.err and "nothing was minted" in r.err
    assert cli.ok("batches", "--json").json == []
    # --offline skips the check, with a note (and the anchor refuses it later, as before).
    human = cli.ok(*MINT, "--offline").out
    assert "note: the issuer role" in human and "not checked" in human
    offline = cli.ok(*MINT, "--offline", "--json").json
    assert offline["issuer_role"] == "not_checked" and offline["issuer"] == outsider.address
    assert "not checked" in offline["note"]
    assert len(cli.ok("batches", "--json").json) == 2
    # Once approved, the role is confirmed up front.
    cli.act_as(None)
    cli.ok("issuer", "add", "--name", "Outsider", "--address", outsider.address)
    cli.act_as(outsider.key.hex())
    minted = cli.ok(*MINT, "--json").json
    assert minted["issuer_role"] == "confirmed"
    assert "note" not in cli.ok(*MINT).out


def test_mint_with_no_registry_deployed_notes_the_unchecked_role(tmp_path, monkeypatch, capsys):
    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        out = c.ok(*MINT).out
        assert "minted batch" in out and "no registry is deployed" in out
