"""Redemption (exactly once, in the database and on chain) and revocation, on both chains and both
databases."""

from __future__ import annotations

import logging
import threading

import pytest
import sqlalchemy as sa

from chain.client import ChainClient, http_web3
from chain.errors import ChainUnreachable
from chain.local_node import free_port
from chain.registry import CardStatus, Registry
from issuer.anchoring import NotBatchIssuer, anchor_batch
from issuer.core.errors import InvalidSerial
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED
from issuer.core.serial import format_serial, parse_serial
from issuer.errors import AlreadyRedeemed, CardNotFound, CardRevoked, InvalidBatchState, WrongCode
from issuer.lookup import check_code, find_card
from issuer.redemption import redeem_card
from issuer.revocation import InvalidReason, RevokeReason, parse_reason, revoke_serials
from issuer.storage import repository as repo
from issuer.storage.models import ChainAct
from tests.issuer.helpers import cards_of, mint

THREADS = 16


def anchored_batch(env, sessions, master_key, count=6):
    res = mint(sessions, master_key, env.address, count=count)
    anchor_batch(sessions, env.registry, res.batch_id)
    return res, cards_of(sessions, master_key, res.batch_id)


def card_state(sessions, serial):
    with sessions() as s:
        card = repo.get_card_by_serial(s, serial)
        return card.redeemed_at, card.redeemed_by, card.revoked


def test_redeem_marks_database_and_chain(issuer_env, sessions, master_key, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # SQL and parameters
    res, cards = anchored_batch(issuer_env, sessions, master_key)
    card = cards[2]
    display = format_serial(parse_serial(card["serial"]))
    out = redeem_card(sessions, master_key, issuer_env.registry, display.lower(), card["code"], "shop-1")
    assert out.serial == display and out.index == 2 and out.batch_id == res.batch_id
    assert out.redeemed_by == "shop-1" and out.tx_hash.startswith("0x")
    redeemed_at, by, _ = card_state(sessions, card["serial"])
    assert redeemed_at is not None and by == "shop-1"
    bid = bytes.fromhex(res.batch_id[2:])
    assert issuer_env.registry.is_redeemed(bid, 2)
    assert not issuer_env.registry.is_redeemed(bid, 3)
    with sessions() as s:
        rec = find_card(s, card["serial"])
    assert issuer_env.registry.verify_card(rec.leaf.as_tuple(), rec.proof) == (True, CardStatus.REDEEMED)
    with pytest.raises(AlreadyRedeemed):
        redeem_card(sessions, master_key, issuer_env.registry, card["serial"], card["code"], "shop-2")
    assert card_state(sessions, card["serial"])[1] == "shop-1"
    # Nothing logged anywhere (SQL statements and parameters included) holds a code.
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "UPDATE cards" in text  # the SQL log really was on
    assert not any(c["code"] in text for c in cards)


def test_wrong_code_changes_nothing(issuer_env, sessions, master_key):
    res, cards = anchored_batch(issuer_env, sessions, master_key, count=3)
    target, other = cards[0], cards[1]
    for attempt in [other["code"], "", "   ", " - - ", other["code"].lower(), target["code"][:-1], target["code"] + "X",
                    "SECRET-GUESS"]:
        with pytest.raises(WrongCode) as err:
            redeem_card(sessions, master_key, issuer_env.registry, target["serial"], attempt, "x")
        assert (not attempt.strip()) or attempt not in str(err.value)
        assert err.value.code == "wrong_code"
    assert card_state(sessions, target["serial"])[0] is None
    assert not issuer_env.registry.is_redeemed(bytes.fromhex(res.batch_id[2:]), 0)
    # Surrounding white space is not part of a code.
    redeem_card(sessions, master_key, issuer_env.registry, target["serial"], f"  {target['code']}\n", "x")


def test_a_generated_code_is_folded_an_imported_one_exact(issuer_env, sessions, master_key, tmp_path):
    """Generated codes are committed folded: typed in lower case, with its dashes dropped or spaced, the code still
    redeems. Imported codes are committed exactly: only the code as imported (surrounding white space aside)."""
    res, cards = anchored_batch(issuer_env, sessions, master_key, count=2)
    assert res.code_form == CODE_FORM_FOLDED
    code = cards[0]["code"]
    assert "-" in code and code != code.lower()
    typed = code.lower().replace("-", "")
    with sessions() as s:
        assert check_code(s, master_key, cards[0]["serial"], typed)
        assert check_code(s, master_key, cards[0]["serial"], code.replace("-", " ").lower())
        assert not check_code(s, master_key, cards[0]["serial"], cards[1]["code"].lower().replace("-", ""))
    out = redeem_card(sessions, master_key, issuer_env.registry, cards[0]["serial"], typed, "till")
    assert out.index == 0 and issuer_env.registry.is_redeemed(bytes.fromhex(res.batch_id[2:]), 0)

    (tmp_path / "codes.csv").write_text("code\nAbCd-1234-EfGh\nOther-Code-0001\n")
    imp = mint(sessions, master_key, issuer_env.address, codes_csv=tmp_path / "codes.csv")
    assert imp.code_form == CODE_FORM_EXACT
    anchor_batch(sessions, issuer_env.registry, imp.batch_id)
    card = cards_of(sessions, master_key, imp.batch_id)[0]
    for attempt in ["abcd-1234-efgh", "ABCD-1234-EFGH", "AbCd1234EfGh", "AbCd 1234 EfGh", "AbCd-1234-EfG"]:
        with pytest.raises(WrongCode):
            redeem_card(sessions, master_key, issuer_env.registry, card["serial"], attempt, "till")
    assert card_state(sessions, card["serial"])[0] is None
    assert not issuer_env.registry.is_redeemed(bytes.fromhex(imp.batch_id[2:]), 0)
    out = redeem_card(sessions, master_key, issuer_env.registry, card["serial"], " AbCd-1234-EfGh ", "till")
    assert out.index == 0 and card_state(sessions, card["serial"])[1] == "till"


def test_check_code(sessions, master_key):
    res = mint(sessions, master_key, count=2)
    cards = cards_of(sessions, master_key, res.batch_id)
    with sessions() as s:
        assert check_code(s, master_key, cards[0]["serial"], cards[0]["code"])
        assert not check_code(s, master_key, cards[0]["serial"], cards[1]["code"])
        assert not check_code(s, master_key, cards[0]["serial"], "")


def test_unknown_and_malformed_serials(issuer_env, sessions, master_key):
    anchored_batch(issuer_env, sessions, master_key, count=1)
    with pytest.raises(CardNotFound):
        redeem_card(sessions, master_key, issuer_env.registry, format_serial(12345), "x", "x")
    for bad in ["", "nope", "0000-0000-0000-0000-1"]:
        with pytest.raises(InvalidSerial):
            redeem_card(sessions, master_key, issuer_env.registry, bad, "x", "x")


def test_unanchored_batch_cannot_be_redeemed(issuer_env, sessions, master_key):
    res = mint(sessions, master_key, issuer_env.address, count=2)
    card = cards_of(sessions, master_key, res.batch_id)[0]
    with pytest.raises(InvalidBatchState):
        redeem_card(sessions, master_key, issuer_env.registry, card["serial"], card["code"], "x")
    assert card_state(sessions, card["serial"])[0] is None


def test_concurrent_redemptions_exactly_one_wins(issuer_env, sessions, master_key):
    res, cards = anchored_batch(issuer_env, sessions, master_key, count=2)
    card = cards[1]
    barrier = threading.Barrier(THREADS)
    outcomes: list[object] = [None] * THREADS

    def worker(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = redeem_card(sessions, master_key, issuer_env.registry, card["serial"], card["code"],
                                      f"till-{i}")
        except Exception as exc:  # noqa: BLE001 - collected and checked below
            outcomes[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    losers = [o for o in outcomes if isinstance(o, Exception)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(e, AlreadyRedeemed) for e in losers), losers
    redeemed_at, by, _ = card_state(sessions, card["serial"])
    assert redeemed_at is not None and by == winners[0].redeemed_by
    bid = bytes.fromhex(res.batch_id[2:])
    assert issuer_env.registry.is_redeemed(bid, 1) and not issuer_env.registry.is_redeemed(bid, 0)
    events = issuer_env.registry.contract.events.CardsRedeemed.get_logs(from_block=0)
    assert len([e for e in events if e["args"]["batchId"] == bid]) == 1


def test_claim_is_released_when_the_chain_is_unreachable(issuer_env, sessions, master_key):
    res, cards = anchored_batch(issuer_env, sessions, master_key, count=2)
    card = cards[0]
    client = issuer_env.registry.client
    dead = Registry(ChainClient(http_web3(f"http://127.0.0.1:{free_port()}", timeout=2), client.account,
                                _chain_id=client.chain_id), issuer_env.registry.address)
    with pytest.raises(ChainUnreachable):
        redeem_card(sessions, master_key, dead, card["serial"], card["code"], "x")
    assert card_state(sessions, card["serial"])[:2] == (None, None)
    out = redeem_card(sessions, master_key, issuer_env.registry, card["serial"], card["code"], "later")
    assert out.redeemed_by == "later"


def test_redeemed_on_chain_elsewhere_keeps_the_claim(issuer_env, sessions, master_key):
    res, cards = anchored_batch(issuer_env, sessions, master_key, count=2)
    bid = bytes.fromhex(res.batch_id[2:])
    issuer_env.registry.mark_redeemed(bid, [1])  # by another system of the issuer
    with pytest.raises(AlreadyRedeemed):
        redeem_card(sessions, master_key, issuer_env.registry, cards[1]["serial"], cards[1]["code"], "x")
    redeemed_at, by, _ = card_state(sessions, cards[1]["serial"])
    assert redeemed_at is not None and by == "chain"


def test_revoke_then_redeem_is_refused(issuer_env, sessions, master_key):
    res, cards = anchored_batch(issuer_env, sessions, master_key, count=5)
    bid = bytes.fromhex(res.batch_id[2:])
    serials = [cards[3]["serial"], format_serial(parse_serial(cards[1]["serial"])), cards[3]["serial"]]
    out = revoke_serials(sessions, issuer_env.registry, serials, parse_reason("leaked"))
    assert len(out) == 1 and out[0].indices == [1, 3] and out[0].reason == RevokeReason.LEAKED
    assert out[0].batch_id == res.batch_id and out[0].tx_hash.startswith("0x")
    assert issuer_env.registry.is_revoked(bid, 1) and issuer_env.registry.is_revoked(bid, 3)
    assert not issuer_env.registry.is_revoked(bid, 2)
    assert card_state(sessions, cards[3]["serial"])[2] is True
    with pytest.raises(CardRevoked):
        redeem_card(sessions, master_key, issuer_env.registry, cards[3]["serial"], cards[3]["code"], "x")
    assert card_state(sessions, cards[3]["serial"])[0] is None
    with pytest.raises(CardRevoked):  # revoking twice is refused before anything is sent
        revoke_serials(sessions, issuer_env.registry, [cards[1]["serial"]], RevokeReason.FRAUD)
    with sessions() as s:
        rec = find_card(s, cards[1]["serial"])
    assert issuer_env.registry.verify_card(rec.leaf.as_tuple(), rec.proof) == (True, CardStatus.REVOKED)


def test_revoked_on_chain_only_is_recorded_at_redemption(issuer_env, sessions, master_key):
    res, cards = anchored_batch(issuer_env, sessions, master_key, count=2)
    issuer_env.registry.revoke_cards(bytes.fromhex(res.batch_id[2:]), [0], 2)
    with pytest.raises(CardRevoked):
        redeem_card(sessions, master_key, issuer_env.registry, cards[0]["serial"], cards[0]["code"], "x")
    redeemed_at, _, revoked = card_state(sessions, cards[0]["serial"])
    assert redeemed_at is None and revoked is True


def test_revocation_validates_everything_before_sending(issuer_env, sessions, master_key):
    res, cards = anchored_batch(issuer_env, sessions, master_key, count=2)
    unanchored = cards_of(sessions, master_key, mint(sessions, master_key, issuer_env.address, count=1).batch_id)
    with pytest.raises(InvalidBatchState):
        revoke_serials(sessions, issuer_env.registry, [cards[0]["serial"], unanchored[0]["serial"]],
                       RevokeReason.LEAKED)
    with pytest.raises(CardNotFound):
        revoke_serials(sessions, issuer_env.registry, [cards[0]["serial"], format_serial(7)], RevokeReason.LEAKED)
    with pytest.raises(NotBatchIssuer):
        revoke_serials(sessions, issuer_env.chain.registry("issuer2"), [cards[0]["serial"]], RevokeReason.LEAKED)
    assert not issuer_env.registry.is_revoked(bytes.fromhex(res.batch_id[2:]), 0)
    assert card_state(sessions, cards[0]["serial"])[2] is False


@pytest.mark.parametrize("text,reason", [("leaked", 1), ("FRAUD", 2), (" recalled ", 3), ("4", 4), (0, 0)])
def test_parse_reason(text, reason):
    assert parse_reason(text) == reason


@pytest.mark.parametrize("text", ["stolen", "9", "", -1])
def test_parse_bad_reason(text):
    with pytest.raises(InvalidReason):
        parse_reason(text)


def test_appointed_redeemer_redeems_and_issuers_are_listed(issuer_env, sqlite_sessions, master_key):
    from issuer.issuers import InvalidAddress, add_issuer, list_issuers, set_redeemer

    sessions = sqlite_sessions
    admin = issuer_env.chain.registry("admin")
    added = add_issuer(sessions, admin, issuer_env.address.lower(), "  Acme \n Games ")
    # The fixture's issuer holds the role without a name: the name is recorded on chain (grantIssuer).
    assert added == {"address": issuer_env.address, "name": "Acme Games", "granted": True,
                     "registry": admin.address}
    assert admin.issuer_name(issuer_env.address) == "Acme Games"
    again = add_issuer(sessions, admin, issuer_env.address, "Acme Games")
    assert again["granted"] is False  # role and name already on chain: no transaction
    newcomer = issuer_env.chain.address("stranger")
    assert add_issuer(sessions, admin, newcomer, "New")["granted"] is True
    assert admin.is_issuer(newcomer)
    with pytest.raises(InvalidAddress):
        add_issuer(sessions, admin, "0xnope", "x")

    res, cards = anchored_batch(issuer_env, sessions, master_key, count=3)
    redeemer = issuer_env.chain.registry("redeemer")
    with pytest.raises(Exception) as err:  # not appointed yet: the chain refuses, the claim is released
        redeem_card(sessions, master_key, redeemer, cards[0]["serial"], cards[0]["code"], "shop")
    assert "NotBatchRedeemer" in str(err.value)
    assert card_state(sessions, cards[0]["serial"])[0] is None
    set_redeemer(issuer_env.registry, redeemer.client.address, True)
    out = redeem_card(sessions, master_key, redeemer, cards[0]["serial"], cards[0]["code"], "shop")
    assert out.redeemed_by == "shop"
    assert issuer_env.registry.is_redeemed(bytes.fromhex(res.batch_id[2:]), 0)

    listed = {r["address"]: r for r in list_issuers(sessions)}
    assert listed[issuer_env.address]["name"] == "Acme Games"
    assert listed[issuer_env.address]["batches"] == 1 and listed[issuer_env.address]["anchored_batches"] == 1
    assert listed[issuer_env.address]["cards"] == 3 and listed[issuer_env.address]["redeemed_cards"] == 1
    assert listed[newcomer]["batches"] == 0


def test_timeout_after_broadcast_keeps_the_claim_and_the_chain_settles_it(issuer_env, sessions, master_key,
                                                                          monkeypatch):
    from chain.errors import TransactionTimeout

    res, cards = anchored_batch(issuer_env, sessions, master_key, count=2)
    card = cards[0]
    client = issuer_env.registry.client

    def timeout(*_a, **_k):
        raise TransactionTimeout("no receipt yet")

    monkeypatch.setattr(client, "wait", timeout)
    with pytest.raises(TransactionTimeout):
        redeem_card(sessions, master_key, issuer_env.registry, card["serial"], card["code"], "x")
    redeemed_at, by, _ = card_state(sessions, card["serial"])
    assert redeemed_at is not None and by.startswith("tx:0x")  # the broadcast transaction, not released
    monkeypatch.undo()
    # The transaction was mined meanwhile: a retry learns it from the chain and does not redeem twice.
    with pytest.raises(AlreadyRedeemed):
        redeem_card(sessions, master_key, issuer_env.registry, card["serial"], card["code"], "y")
    assert card_state(sessions, card["serial"])[1] == "x"  # the redeemer its recorded act names
    assert issuer_env.registry.is_redeemed(bytes.fromhex(res.batch_id[2:]), card["index"])


def test_transaction_lost_before_broadcast_is_released_on_retry(issuer_env, sessions, master_key, monkeypatch):
    res, cards = anchored_batch(issuer_env, sessions, master_key, count=2)
    card = cards[1]
    client = issuer_env.registry.client

    def lost(*_a, **_k):
        raise ChainUnreachable("the connection dropped while sending")

    monkeypatch.setattr(client.w3.eth, "send_raw_transaction", lost)
    with pytest.raises(ChainUnreachable):
        redeem_card(sessions, master_key, issuer_env.registry, card["serial"], card["code"], "x")
    # Its hash was recorded first (the act); the node does not know it, so the card is free again at once.
    with sessions() as s:
        act = s.scalars(sa.select(ChainAct).where(ChainAct.kind == "redeem")).one()
        # the attempt is over (a final state, not an open one that reconcile would keep re-checking)
        assert act.tx_hash.startswith("0x") and act.state == "failed" and act.lease_until is None
    assert card_state(sessions, card["serial"])[:2] == (None, None)
    monkeypatch.undo()
    out = redeem_card(sessions, master_key, issuer_env.registry, card["serial"], card["code"], "again")
    assert out.redeemed_by == "again"
    assert card_state(sessions, card["serial"])[1] == "again"
