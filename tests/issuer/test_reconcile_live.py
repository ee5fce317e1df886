"""Faults that need a real node or a real process (anvil): a `cardproof revoke` SIGKILLed right after its
transaction was broadcast, whose revocation is mined afterwards; a reorganisation at the same height
(``anvil_reorg``) past an anchor, a revocation and a redemption. On both databases."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from issuer.anchoring import anchor_batch
from issuer.reconcile import reconcile
from issuer.redemption import redeem_card
from issuer.revocation import RevokeReason, revoke_serials
from issuer.storage import repository as repo
from issuer.storage.models import ChainAct
from tests.issuer.helpers import cards_of, mint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anvil_issuer(issuer_env):
    if issuer_env.backend != "anvil":
        pytest.skip("needs a node in another process (anvil)")
    return issuer_env


@pytest.fixture
def private_anvil_issuer(issuer_env):
    """An issuer on an anvil of this test's own: anvil_reorg on the session's shared node, whose state is
    snapshotted and reverted around every test, was seen (once, in a full run) to lose the registry itself."""
    if issuer_env.backend != "anvil":
        pytest.skip("needs a node in another process (anvil)")
    from tests.chainkit import anvil_env
    from tests.issuer.conftest import IssuerEnv

    gen = anvil_env()
    env = next(gen)
    try:
        yield IssuerEnv(env, env.registry("issuer"), env.address("issuer"))
    finally:
        gen.close()


def _automine(env, on: bool) -> None:
    resp = env.chain.admin.w3.provider.make_request("evm_setAutomine", [on])
    assert "error" not in resp, resp


def _revoked_in_db(sessions, serial) -> tuple[bool, int | None]:
    with sessions() as s:
        card = repo.get_card_by_serial(s, serial)
        return card.revoked, card.revoke_reason


def test_revocation_mined_after_the_cli_was_killed_reaches_the_database(anvil_issuer, engine, sessions, master_key,
                                                                         tmp_path):
    env = anvil_issuer
    res = mint(sessions, master_key, env.address, count=3)
    anchor_batch(sessions, env.registry, res.batch_id)
    cards = cards_of(sessions, master_key, res.batch_id)
    home = tmp_path / "cli-home"
    home.mkdir()
    shutil.copy(env.chain.home / "deployments.json", home / "deployments.json")
    child_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CARDPROOF_")},
        "CARDPROOF_HOME": str(home),
        "CARDPROOF_RPC_URL": env.chain.extra["node"].url,
        "CARDPROOF_PRIVATE_KEY": "0x" + bytes(env.chain.accounts["issuer"].key).hex(),
        "CARDPROOF_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "PYTHONPATH": str(ROOT),
    }
    client = env.registry.client
    _automine(env, False)  # the transaction waits in the mempool while the CLI waits for it
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cardproof", "revoke", cards[1]["serial"], "--reason", "fraud"],
                                env=child_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        tx_hash = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            with sessions() as s:
                tx_hash = s.scalar(sa.select(ChainAct.tx_hash).where(ChainAct.kind == "revoke"))
            if tx_hash and client.transaction_known(tx_hash):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        assert tx_hash and client.transaction_known(tx_hash)
        proc.send_signal(signal.SIGKILL)  # right after broadcast, before any receipt
        proc.wait(10)
        env.chain.mine(1)  # mined after its process died
    finally:
        _automine(env, True)
    bid = bytes.fromhex(res.batch_id[2:])
    assert env.registry.is_revoked(bid, 1)
    assert _revoked_in_db(sessions, cards[1]["serial"]) == (False, None)  # the database never heard of it
    report = reconcile(sessions, env.registry, batch_id=res.batch_id)
    assert report.consistent, report.findings
    assert _revoked_in_db(sessions, cards[1]["serial"]) == (True, RevokeReason.FRAUD)
    with sessions() as s:
        act = s.scalars(sa.select(ChainAct).where(ChainAct.kind == "revoke")).one()
        assert act.state == "final" and act.tx_hash == tx_hash and act.block_number is not None


def _reorg(env, depth: int) -> None:
    resp = env.chain.admin.w3.provider.make_request("anvil_reorg", [depth, []])
    assert "error" not in resp, resp
    env.registry.client._next_nonce = None
    env.chain.admin._next_nonce = None


def test_reorg_at_the_same_height_past_anchor_revocation_and_redemption(private_anvil_issuer, sessions, master_key):
    env = private_anvil_issuer
    res = mint(sessions, master_key, env.address, count=4)
    cards = cards_of(sessions, master_key, res.batch_id)
    bid = bytes.fromhex(res.batch_id[2:])
    start = env.chain.admin.block_number()
    anchor_batch(sessions, env.registry, res.batch_id)
    revoke_serials(sessions, env.registry, [cards[0]["serial"]], RevokeReason.LEAKED)
    redeem_card(sessions, master_key, env.registry, cards[1]["serial"], cards[1]["code"], "shop-1")
    height = env.chain.admin.block_number()
    _reorg(env, height - start)  # every block since the anchor replaced, at the same height
    assert env.chain.admin.block_number() == height
    assert not env.registry.batch(bid).anchored
    # anchor, revoke and redeem run again redo what the chain lost, in order.
    again = anchor_batch(sessions, env.registry, res.batch_id)
    assert again.state == "anchored" and again.root == res.root and not again.already
    [out] = revoke_serials(sessions, env.registry, [cards[0]["serial"]], RevokeReason.LEAKED)
    assert out.indices == [0] and env.registry.is_revoked(bid, 0)
    redone = redeem_card(sessions, master_key, env.registry, cards[1]["serial"], cards[1]["code"], "shop-1")
    assert redone.redeemed_by == "shop-1" and env.registry.is_redeemed(bid, 1)
    assert reconcile(sessions, env.registry, batch_id=res.batch_id).consistent


def test_reorg_repaired_by_reconcile(private_anvil_issuer, sessions, master_key):
    env = private_anvil_issuer
    res = mint(sessions, master_key, env.address, count=4)
    cards = cards_of(sessions, master_key, res.batch_id)
    bid = bytes.fromhex(res.batch_id[2:])
    start = env.chain.admin.block_number()
    anchor_batch(sessions, env.registry, res.batch_id)
    revoke_serials(sessions, env.registry, [cards[2]["serial"]], RevokeReason.DAMAGED)
    redeem_card(sessions, master_key, env.registry, cards[3]["serial"], cards[3]["code"], "shop-1")
    _reorg(env, env.chain.admin.block_number() - start)
    report = reconcile(sessions, env.registry, batch_id=res.batch_id)
    assert report.consistent, report.findings
    assert {(f.kind, f.status) for f in report.findings} == {("anchor", "repaired"), ("revoke", "repaired"),
                                                            ("redeem", "repaired")}
    assert env.registry.batch(bid).anchored and env.registry.is_revoked(bid, 2) and env.registry.is_redeemed(bid, 3)
    with sessions() as s:
        assert repo.get_card_by_serial(s, cards[3]["serial"]).redeemed_by == "shop-1"
    again = reconcile(sessions, env.registry, batch_id=res.batch_id)
    assert again.consistent and {f.status for f in again.findings} == {"ok"}


def _kill_node(home: Path) -> None:
    from chain import local_node

    info = local_node.status(home)
    assert info is not None
    os.kill(info.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while local_node._pid_alive(info.pid) and time.monotonic() < deadline:
        try:
            os.waitpid(info.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.02)
    local_node.stop(home)  # forgets the dead node's record


def test_node_killed_within_a_second_of_an_anchor_then_anchor_again(sessions, master_key, tmp_path):
    """anvil dumps its state every second: killed right after an anchor, it comes back without it."""
    from chain import local_node
    from chain.client import ChainClient, dev_account_for, http_web3
    from chain.deployments import deploy_registry
    from chain.registry import Registry

    home = tmp_path / "node-home"
    node = local_node.start(home, port=local_node.free_port())
    try:
        def connect() -> Registry:
            info = local_node.status(home)
            w3 = http_web3(info.url)
            client = ChainClient(w3, dev_account_for(w3, info.chain_id), backend="anvil", poll_interval=0.01)
            return Registry(client, address)

        w3 = http_web3(node.url)
        admin = ChainClient(w3, dev_account_for(w3, node.chain_id), backend="anvil", poll_interval=0.01)
        record, _ = deploy_registry(admin, home)
        address = record.address
        Registry(admin, address).grant_issuer(admin.address)
        lost = None
        for _attempt in range(4):
            res = mint(sessions, master_key, admin.address, count=2)
            time.sleep(2.2)  # the deployment and everything before is in the dumped state
            anchor_batch(sessions, connect(), res.batch_id)
            _kill_node(home)
            local_node.start(home, port=local_node.free_port())  # its old port may linger a moment
            if not connect().batch(bytes.fromhex(res.batch_id[2:])).anchored:
                lost = res
                break
        if lost is None:
            pytest.skip("the node dumped its state between the anchor and the kill every time")
        with sessions() as s:
            assert repo.get_batch(s, lost.batch_id).state == "anchored"  # the database says anchored
        again = anchor_batch(sessions, connect(), lost.batch_id)
        assert again.state == "anchored" and not again.already and again.root == lost.root
        assert connect().batch(bytes.fromhex(lost.batch_id[2:])).anchored
        assert reconcile(sessions, connect(), batch_id=lost.batch_id).consistent
    finally:
        local_node.stop(home)
