"""Every on-chain act of the supplier's side is a recorded intent, reconciled with the chain (issue 9).

Rollbacks (eth-tester snapshots, anvil ``evm_revert`` followed by new blocks, ``anvil_reorg``) past an anchor, a
revocation or a redemption: a rerun of the command redoes the act the chain lost; a revocation mined after its
process died reaches the database; ``reconcile`` repairs and reports. On both chains and both databases.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from issuer import acts
from issuer.anchoring import anchor_batch
from issuer.errors import AlreadyRedeemed, CardRevoked
from issuer.reconcile import reconcile
from issuer.redemption import redeem_card
from issuer.revocation import RevokeReason, revoke_serials
from issuer.storage import repository as repo
from issuer.storage.models import ChainAct
from tests.issuer.helpers import cards_of, mint


class SimulatedCrash(BaseException):
    """The process dying (nothing may catch it and carry on)."""


def die(*_a, **_k):
    raise SimulatedCrash()


def rollback(env, snap) -> None:
    """Roll the chain back to `snap`, then mine past the old height (a rollback that does not lower the block
    number); clients must forget their cached nonces, as a new process would."""
    height = env.chain.admin.block_number()
    env.chain.revert(snap)
    env.chain.mine(max(1, height - env.chain.admin.block_number() + 2))
    env.registry.client._next_nonce = None
    env.chain.admin._next_nonce = None


def batch_of(sessions, batch_id):
    with sessions() as s:
        return repo.get_batch(s, batch_id)


def card(sessions, serial):
    with sessions() as s:
        return repo.get_card_by_serial(s, serial)


def act_rows(sessions, kind=None):
    with sessions() as s:
        q = sa.select(ChainAct).order_by(ChainAct.id)
        if kind:
            q = q.where(ChainAct.kind == kind)
        return list(s.scalars(q))


def anchored(env, sessions, master_key, count=4):
    res = mint(sessions, master_key, env.address, count=count)
    anchor_batch(sessions, env.registry, res.batch_id)
    return res, cards_of(sessions, master_key, res.batch_id)


def test_anchor_is_a_recorded_act_and_reconcile_says_consistent(issuer_env, sessions, master_key):
    res, _ = anchored(issuer_env, sessions, master_key)
    [act] = act_rows(sessions, "anchor")
    batch = batch_of(sessions, res.batch_id)
    assert act.state == "final" and act.tx_hash == batch.anchor_tx and act.attempts == 1
    assert act.block_number == batch.anchor_block and act.block_hash and act.nonce is not None
    report = reconcile(sessions, issuer_env.registry)
    assert report.consistent and report.batches == 1
    assert report.to_json() == {"consistent": True, "batches": 1, "counts": {"ok": 3}, "findings": []}


def test_rollback_past_an_anchor_then_anchor_again(issuer_env, sessions, master_key):
    res = mint(sessions, master_key, issuer_env.address, count=3)
    snap = issuer_env.chain.snapshot()
    first = anchor_batch(sessions, issuer_env.registry, res.batch_id)
    rollback(issuer_env, snap)
    bid = bytes.fromhex(res.batch_id[2:])
    assert not issuer_env.registry.batch(bid).anchored  # the chain lost it; the database says anchored
    assert batch_of(sessions, res.batch_id).state == "anchored"
    again = anchor_batch(sessions, issuer_env.registry, res.batch_id)
    assert again.state == "anchored" and not again.already
    assert again.batch_id == first.batch_id and again.root == first.root == res.root
    on_chain = issuer_env.registry.batch(bid)
    assert on_chain.anchored and "0x" + on_chain.root.hex() == res.root
    batch = batch_of(sessions, res.batch_id)
    assert batch.anchor_tx == again.anchor_tx and batch.error is None
    [act] = act_rows(sessions, "anchor")  # the same act, sent twice
    assert act.attempts == 2 and act.state == "final" and act.tx_hash == again.anchor_tx
    assert reconcile(sessions, issuer_env.registry, batch_id=res.batch_id).consistent


def test_rollback_past_an_anchor_is_repaired_by_reconcile(issuer_env, sessions, master_key):
    res = mint(sessions, master_key, issuer_env.address, count=3)
    snap = issuer_env.chain.snapshot()
    anchor_batch(sessions, issuer_env.registry, res.batch_id)
    rollback(issuer_env, snap)
    report = reconcile(sessions, issuer_env.registry, issuer=issuer_env.address)
    assert report.consistent
    [f] = [f for f in report.findings if f.kind == "anchor"]
    assert f.status == "repaired" and "lost the anchor" in f.detail
    assert issuer_env.registry.batch(bytes.fromhex(res.batch_id[2:])).anchored
    again = reconcile(sessions, issuer_env.registry, batch_id=res.batch_id)
    assert again.consistent and {f.status for f in again.findings} == {"ok"}


def test_rollback_past_a_revocation_then_revoke_again(issuer_env, sessions, master_key):
    res, cards = anchored(issuer_env, sessions, master_key)
    bid = bytes.fromhex(res.batch_id[2:])
    snap = issuer_env.chain.snapshot()
    revoke_serials(sessions, issuer_env.registry, [cards[1]["serial"]], RevokeReason.LEAKED)
    rollback(issuer_env, snap)
    assert not issuer_env.registry.is_revoked(bid, 1) and card(sessions, cards[1]["serial"]).revoked
    [out] = revoke_serials(sessions, issuer_env.registry, [cards[1]["serial"]], RevokeReason.LEAKED)
    assert out.indices == [1] and out.tx_hash.startswith("0x")
    assert issuer_env.registry.is_revoked(bid, 1) and not issuer_env.registry.is_revoked(bid, 0)
    with pytest.raises(CardRevoked):  # now both agree: refused, nothing sent
        revoke_serials(sessions, issuer_env.registry, [cards[1]["serial"]], RevokeReason.LEAKED)
    assert reconcile(sessions, issuer_env.registry, batch_id=res.batch_id).consistent


def test_rollback_past_a_revocation_is_repaired_by_reconcile(issuer_env, sessions, master_key):
    res, cards = anchored(issuer_env, sessions, master_key)
    bid = bytes.fromhex(res.batch_id[2:])
    snap = issuer_env.chain.snapshot()
    revoke_serials(sessions, issuer_env.registry, [cards[0]["serial"], cards[2]["serial"]], RevokeReason.FRAUD)
    rollback(issuer_env, snap)
    report = reconcile(sessions, issuer_env.registry, batch_id=res.batch_id)
    assert report.consistent, report.findings
    [f] = [f for f in report.findings if f.kind == "revoke"]
    assert f.status == "repaired" and f.cards == [0, 2]
    assert issuer_env.registry.is_revoked(bid, 0) and issuer_env.registry.is_revoked(bid, 2)


def test_rollback_past_a_redemption_then_redeem_again(issuer_env, sessions, master_key):
    res, cards = anchored(issuer_env, sessions, master_key)
    bid = bytes.fromhex(res.batch_id[2:])
    c = cards[3]
    snap = issuer_env.chain.snapshot()
    first = redeem_card(sessions, master_key, issuer_env.registry, c["serial"], c["code"], "shop-1")
    rollback(issuer_env, snap)
    assert not issuer_env.registry.is_redeemed(bid, 3) and card(sessions, c["serial"]).redeemed_by == "shop-1"
    # Anybody else: still already redeemed (exactly once) — but the chain gets its bit back.
    snap2 = issuer_env.chain.snapshot()
    with pytest.raises(AlreadyRedeemed):
        redeem_card(sessions, master_key, issuer_env.registry, c["serial"], c["code"], "shop-2")
    assert issuer_env.registry.is_redeemed(bid, 3)
    assert card(sessions, c["serial"]).redeemed_by == "shop-1"
    # Once more after another rollback: the recorded redeemer's rerun redeems (settles and finishes).
    rollback(issuer_env, snap2)
    assert not issuer_env.registry.is_redeemed(bid, 3)
    again = redeem_card(sessions, master_key, issuer_env.registry, c["serial"], c["code"], "shop-1")
    assert again.serial == first.serial and again.redeemed_by == "shop-1"
    assert issuer_env.registry.is_redeemed(bid, 3)
    events = issuer_env.registry.contract.events.CardsRedeemed.get_logs(from_block=0)
    assert len([e for e in events if e["args"]["batchId"] == bid]) == 1  # the chain holds one redemption
    with pytest.raises(AlreadyRedeemed):
        redeem_card(sessions, master_key, issuer_env.registry, c["serial"], c["code"], "shop-1")
    assert reconcile(sessions, issuer_env.registry, batch_id=res.batch_id).consistent


def test_rollback_past_a_redemption_is_repaired_by_reconcile(issuer_env, sessions, master_key):
    res, cards = anchored(issuer_env, sessions, master_key)
    bid = bytes.fromhex(res.batch_id[2:])
    snap = issuer_env.chain.snapshot()
    redeem_card(sessions, master_key, issuer_env.registry, cards[0]["serial"], cards[0]["code"], "shop-1")
    rollback(issuer_env, snap)
    report = reconcile(sessions, issuer_env.registry, batch_id=res.batch_id)
    assert report.consistent, report.findings
    [f] = [f for f in report.findings if f.kind == "redeem"]
    assert f.status == "repaired" and f.cards == [0]
    assert issuer_env.registry.is_redeemed(bid, 0) and card(sessions, cards[0]["serial"]).redeemed_by == "shop-1"


def test_revocation_mined_after_the_process_died_reaches_the_database(issuer_env, sessions, master_key,
                                                                       monkeypatch):
    res, cards = anchored(issuer_env, sessions, master_key)
    bid = bytes.fromhex(res.batch_id[2:])
    monkeypatch.setattr(issuer_env.registry.client, "wait", die)
    with pytest.raises(SimulatedCrash):
        revoke_serials(sessions, issuer_env.registry, [cards[2]["serial"]], RevokeReason.RECALLED)
    monkeypatch.undo()
    deadline = time.monotonic() + 10  # anvil mines a sent transaction at once, but not within the send call
    while not issuer_env.registry.is_revoked(bid, 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert issuer_env.registry.is_revoked(bid, 2)  # mined
    assert not card(sessions, cards[2]["serial"]).revoked  # the database never heard of it
    [act] = act_rows(sessions, "revoke")
    assert act.tx_hash and act.state in ("pending", "broadcast")
    with sessions.begin() as s:  # the process is dead: its lease would expire
        s.get(ChainAct, act.id).lease_until = None
    report = reconcile(sessions, issuer_env.registry, batch_id=res.batch_id)
    assert report.consistent, report.findings
    got = card(sessions, cards[2]["serial"])
    assert got.revoked and got.revoke_reason == RevokeReason.RECALLED  # the act's reason
    [act] = act_rows(sessions, "revoke")
    assert act.state == "final" and act.block_number is not None


def test_revoke_rerun_settles_a_revocation_mined_after_a_crash(issuer_env, sessions, master_key, monkeypatch):
    _, cards = anchored(issuer_env, sessions, master_key)
    monkeypatch.setattr(issuer_env.registry.client, "wait", die)
    with pytest.raises(SimulatedCrash):
        revoke_serials(sessions, issuer_env.registry, [cards[0]["serial"]], RevokeReason.LEAKED)
    monkeypatch.undo()
    with sessions.begin() as s:
        for a in s.scalars(sa.select(ChainAct)):
            a.lease_until = None
    tx = act_rows(sessions, "revoke")[0].tx_hash
    [out] = revoke_serials(sessions, issuer_env.registry, [cards[0]["serial"]], RevokeReason.LEAKED)
    assert out.tx_hash == tx and card(sessions, cards[0]["serial"]).revoked
    assert len(act_rows(sessions, "revoke")) == 1  # nothing sent twice


def test_reconcile_records_what_only_the_chain_holds(issuer_env, sessions, master_key):
    res, cards = anchored(issuer_env, sessions, master_key)
    bid = bytes.fromhex(res.batch_id[2:])
    issuer_env.registry.revoke_cards(bid, [1], 2)  # another system of the issuer
    issuer_env.registry.mark_redeemed(bid, [2])
    report = reconcile(sessions, issuer_env.registry, batch_id=res.batch_id)
    assert report.consistent
    assert card(sessions, cards[1]["serial"]).revoked
    assert card(sessions, cards[2]["serial"]).redeemed_by == "chain"
    assert {(f.kind, f.status) for f in report.findings} >= {("revoke", "repaired"), ("redeem", "repaired")}


def test_a_stale_claim_is_released_and_a_fresh_one_is_left_alone(issuer_env, sessions, master_key):
    import datetime as dt

    res, cards = anchored(issuer_env, sessions, master_key)
    with sessions.begin() as s:
        repo.mark_card_redeemed(s, cards[0]["id"], "claim:dead")
        repo.mark_card_redeemed(s, cards[1]["id"], "claim:live")
        s.execute(sa.text("UPDATE cards SET redeemed_at = :at WHERE id = :id"),
                  {"at": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(tzinfo=None)
                   if s.bind.dialect.name == "sqlite" else dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
                   "id": cards[0]["id"]})
    report = reconcile(sessions, issuer_env.registry, batch_id=res.batch_id)
    assert not report.consistent  # one redemption still in flight
    statuses = {(f.status, tuple(f.cards)) for f in report.findings if f.kind == "redeem"}
    assert statuses == {("repaired", (0,)), ("pending", (1,))}
    assert card(sessions, cards[0]["serial"]).redeemed_at is None
    assert card(sessions, cards[1]["serial"]).redeemed_by == "claim:live"
    # A redemption whose process died before signing is not stuck: the card redeems (the claim is stale).
    out = redeem_card(sessions, master_key, issuer_env.registry, cards[0]["serial"], cards[0]["code"], "shop")
    assert out.redeemed_by == "shop"


def _killed_before_signing(env, sessions, master_key, monkeypatch):
    """A redemption whose process died after its claim and act were written, before anything was signed (the
    supplier's service SIGKILLed in scripts/chaos); its lease then expires."""
    res, cards = anchored(env, sessions, master_key)
    monkeypatch.setenv("CARDPROOF_ACT_LEASE", "0")  # the dead process's lease and claim have expired
    with monkeypatch.context() as m:
        m.setattr(env.registry.client, "send", die)
        with pytest.raises(SimulatedCrash):
            redeem_card(sessions, master_key, env.registry, cards[0]["serial"], cards[0]["code"], "shop")
    [act] = act_rows(sessions, "redeem")
    assert act.state == "pending" and act.tx_hash is None and act.attempts == 0
    assert card(sessions, cards[0]["serial"]).redeemed_by.startswith("claim:")
    return res, cards


def test_reconcile_ends_the_act_of_a_redemption_killed_before_signing(issuer_env, sessions, master_key,
                                                                      monkeypatch):
    res, cards = _killed_before_signing(issuer_env, sessions, master_key, monkeypatch)
    report = reconcile(sessions, issuer_env.registry, batch_id=res.batch_id)
    assert report.consistent
    assert card(sessions, cards[0]["serial"]).redeemed_at is None  # the card is free again
    [act] = act_rows(sessions, "redeem")
    # Over (nothing reached the chain and the claim is released), not "lost": an open state nobody will redo.
    assert act.state == "failed" and "released" in act.last_error
    assert acts.open_acts(sessions(), "redeem") == []
    again = reconcile(sessions, issuer_env.registry, batch_id=res.batch_id)
    assert again.consistent and {f.status for f in again.findings} == {"ok"}


def test_a_new_redemption_ends_the_act_of_one_killed_before_signing(issuer_env, sessions, master_key,
                                                                     monkeypatch):
    res, cards = _killed_before_signing(issuer_env, sessions, master_key, monkeypatch)
    out = redeem_card(sessions, master_key, issuer_env.registry, cards[0]["serial"], cards[0]["code"], "again")
    assert out.redeemed_by == "again"
    first, second = act_rows(sessions, "redeem")
    assert first.state == "failed" and "released" in first.last_error
    assert second.state in ("mined", "final") and second.tx_hash


def test_in_flight_claims_follow_the_lease(sessions, monkeypatch):
    monkeypatch.setenv("CARDPROOF_ACT_LEASE", "0")
    assert acts.lease_seconds() == 0
    monkeypatch.setenv("CARDPROOF_ACT_LEASE", "nonsense")
    assert acts.lease_seconds() == acts.DEFAULT_LEASE_SECONDS


# ----------------------------------------------------------------------------- the commands


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    from tests.clikit import in_process_cli

    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        c.ok("deploy", "--json")
        yield c


def _tester():
    from chain.client import shared_in_process_web3

    tester, w3 = shared_in_process_web3()
    return tester, w3


def test_cli_reconcile_and_reruns_after_a_rollback(cli, tmp_path):
    from chain.client import dev_account_for

    tester, w3 = _tester()
    dev = dev_account_for(w3, w3.eth.chain_id).address
    cli.ok("issuer", "add", "--name", "Acme", "--address", dev)
    minted = cli.ok("mint", "--sku", "GC-20", "--face-value", "20.00", "--currency", "USD", "--count", "3",
                    "--json").json
    batch = minted["batch_id"]
    assert cli.ok("reconcile", "--all", "--json").json == {"consistent": True, "batches": 1, "counts": {"ok": 1},
                                                           "findings": []}
    snap = tester.take_snapshot()
    first = cli.ok("anchor", batch, "--json").json
    export = cli.ok("export", batch, "--out", tmp_path / "out", "--no-qr", "--json").json
    assert export["cards"] == 3
    import csv

    with open(tmp_path / "out" / "cards.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    snap_anchored = tester.take_snapshot()
    cli.ok("revoke", rows[0]["serial"], "--reason", "leaked", "--json")
    r = cli("redeem", rows[1]["serial"], "--code", rows[1]["code"], "--json")
    assert r.rc == 0, r
    assert cli.ok("reconcile", batch, "--json").json["consistent"] is True

    # Rolled back past the revocation and the redemption: revoke and redeem run again redo them.
    tester.revert_to_snapshot(snap_anchored)
    tester.mine_blocks(3)
    assert cli.ok("revoke", rows[0]["serial"], "--reason", "leaked", "--json").json[0]["indices"] == [0]
    assert cli.ok("redeem", rows[1]["serial"], "--code", rows[1]["code"], "--json").json["redeemed_by"] == dev
    again = cli("revoke", rows[0]["serial"], "--reason", "leaked")  # both agree now: already done, nothing sent
    assert again.rc == 0 and "already revoked" in again.out, again

    # Rolled back past the anchor: `anchor` anchors again (same batch, same root); reconcile repairs the rest.
    tester.revert_to_snapshot(snap)
    tester.mine_blocks(3)
    again = cli.ok("anchor", batch, "--json").json
    assert again["batch_id"] == first["batch_id"] and again["root"] == first["root"] and not again["already"]
    report = cli.ok("reconcile", "--issuer", dev, "--json").json
    assert report["consistent"] is True
    assert {(f["kind"], f["status"]) for f in report["findings"]} == {("revoke", "repaired"), ("redeem", "repaired")}
    assert cli.ok("reconcile", "--all", "--json").json["findings"] == []
    text = cli.ok("reconcile", batch).out
    assert "consistent" in text


def test_cli_reconcile_exit_1_when_it_cannot_repair(cli):
    from chain.client import ChainClient, dev_account_for
    from chain.registry import Registry

    _, w3 = _tester()
    dev = dev_account_for(w3, w3.eth.chain_id)
    cli.ok("issuer", "add", "--name", "Acme", "--address", dev.address)
    batch = cli.ok("mint", "--sku", "GC-20", "--face-value", "20.00", "--currency", "USD", "--count", "2",
                   "--json").json["batch_id"]
    # Someone anchored another root under this batch id: nothing the supplier can repair.
    import json as _json

    deployments = _json.loads((cli.home / "deployments.json").read_text())
    address = next(iter(deployments.values()))["CardRegistry"]["address"]
    Registry(ChainClient(w3, dev), address).anchor_batch(bytes.fromhex(batch[2:]), b"\x42" * 32, 2, b"\x00" * 32)
    r = cli("reconcile", batch, "--json")
    assert r.rc == 1 and r.json["consistent"] is False
    [f] = r.json["findings"]
    assert f["status"] == "unrepaired" and f["kind"] == "anchor" and "another root" in f["detail"]
    cli.fails("reconcile", batch, "--all")  # one of BATCH, --issuer, --all
    cli.fails("reconcile")


def test_an_act_is_final_only_past_the_confirmation_depth(issuer_env, sessions, master_key, monkeypatch):
    res, cards = anchored(issuer_env, sessions, master_key)
    client = issuer_env.registry.client
    wait = client.wait
    monkeypatch.setattr(client, "confirmations", 3)
    monkeypatch.setattr(client, "wait", lambda tx, **kw: wait(tx, confirmations=0))  # do not wait for depth here
    revoke_serials(sessions, issuer_env.registry, [cards[0]["serial"]], RevokeReason.LEAKED)
    [act] = act_rows(sessions, "revoke")
    assert act.state == "mined" and act.block_number is not None
    report = reconcile(sessions, issuer_env.registry, batch_id=res.batch_id)
    assert report.consistent and act_rows(sessions, "revoke")[0].state == "mined"  # not deep enough yet
    issuer_env.chain.mine(3)
    report = reconcile(sessions, issuer_env.registry, batch_id=res.batch_id)
    assert report.consistent and {f.status for f in report.findings} == {"ok"}
    assert act_rows(sessions, "revoke")[0].state == "final"


def _set_automine(env, on: bool) -> None:
    if env.backend == "eth-tester":
        tester = env.extra["tester"]
        tester.enable_auto_mine_transactions() if on else tester.disable_auto_mine_transactions()
    else:
        env.admin.w3.provider.make_request("evm_setAutomine", [on])


def test_a_lost_anchor_whose_transaction_is_pending_again_is_awaited_not_resent(issuer_env, sessions, master_key,
                                                                                 monkeypatch):
    """After a reorg the anchor's own transaction may be back in the mempool: anchor waits for it."""
    res = mint(sessions, master_key, issuer_env.address, count=2)
    registry = issuer_env.registry
    _set_automine(issuer_env.chain, False)
    try:
        monkeypatch.setattr(registry.client, "wait", die)
        with pytest.raises(SimulatedCrash):
            anchor_batch(sessions, registry, res.batch_id)
        monkeypatch.undo()
        with sessions.begin() as s:  # the database had recorded it anchored before the chain lost the block
            s.execute(sa.text("UPDATE batches SET state = 'anchored', anchor_block = 1 WHERE batch_id = :b"),
                      {"b": res.batch_id})
        tx = batch_of(sessions, res.batch_id).anchor_tx
        assert registry.client.transaction_known(tx) and registry.client.get_receipt(tx) is None
        wait = registry.client.wait

        def mined_while_waiting(tx_hash, **kw):
            issuer_env.chain.mine(1)
            return wait(tx_hash, **kw)

        monkeypatch.setattr(registry.client, "wait", mined_while_waiting)
        sent: list = []
        monkeypatch.setattr(registry, "send_anchor", lambda *a, **k: sent.append(a))
        out = anchor_batch(sessions, registry, res.batch_id)
        assert out.state == "anchored" and out.anchor_tx == tx and sent == []
    finally:
        _set_automine(issuer_env.chain, True)
    assert registry.batch(bytes.fromhex(res.batch_id[2:])).anchored
