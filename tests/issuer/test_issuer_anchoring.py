"""Anchoring on eth-tester and anvil, SQLite and PostgreSQL: proofs verify on chain, idempotence,
crash recovery at every step, root mismatches, reverts and retries."""

from __future__ import annotations

import time

import pytest
from web3 import Web3

from chain.errors import ChainUnreachable, ContractRevert
from chain.registry import BATCH_ANCHORED_TOPIC, CardStatus, ProductSpec
from issuer.anchoring import NotBatchIssuer, RootMismatch, anchor_batch
from issuer.errors import BatchNotFound
from issuer.lookup import find_card
from issuer.storage import repository as repo
from tests.issuer.helpers import mint

# A str topic: eth-tester matches no log when a filter mixes HexBytes and str topics.
TOPIC = "0x" + bytes(Web3.keccak(
    text="BatchAnchored(bytes32,address,bytes32,uint256,bytes32,uint32,uint64)")).hex()
assert TOPIC == BATCH_ANCHORED_TOPIC


class SimulatedCrash(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it and carry on)."""


def die(*_args, **_kwargs):
    raise SimulatedCrash()


def anchor_events(env, batch_id: str) -> list:
    return env.registry.client.w3.eth.get_logs({
        "address": env.registry.address, "fromBlock": 0, "toBlock": "latest",
        "topics": [TOPIC, batch_id],
    })


def state_of(sessions, batch_id: str):
    with sessions() as s:
        return repo.get_batch(s, batch_id)


def assert_anchored_once(env, sessions, res) -> None:
    batch = state_of(sessions, res.batch_id)
    assert batch.state == "anchored" and batch.error is None
    events = anchor_events(env, res.batch_id)
    assert len(events) == 1
    assert batch.anchor_tx == "0x" + bytes(events[0]["transactionHash"]).hex()
    assert batch.anchor_block == events[0]["blockNumber"]
    on_chain = env.registry.batch(bytes.fromhex(res.batch_id[2:]))
    assert "0x" + on_chain.root.hex() == res.root == batch.root
    assert on_chain.card_count == res.count and on_chain.issuer == env.address
    assert batch.chain_id == env.registry.client.chain_id and batch.registry_address == env.registry.address


def test_anchor_then_every_stored_proof_verifies_on_chain(issuer_env, sessions, master_key):
    res = mint(sessions, master_key, issuer_env.address, count=13, expires="2099-01-01")
    out = anchor_batch(sessions, issuer_env.registry, res.batch_id)
    assert out.state == "anchored" and not out.already and out.root == res.root
    assert_anchored_once(issuer_env, sessions, res)
    with sessions() as s:
        batch = repo.get_batch(s, res.batch_id)
        serials = [c.serial for c in repo.iter_cards(s, batch.id)]
        for serial in serials:
            card = find_card(s, serial)
            assert issuer_env.registry.verify_card(card.leaf.as_tuple(), card.proof) == (True, CardStatus.VALID)
            # A proof for another leaf does not verify.
            other = card.leaf.with_index((card.index + 1) % 13)
            assert issuer_env.registry.verify_card(other.as_tuple(), card.proof)[0] is False


def test_anchoring_is_idempotent(issuer_env, sessions, master_key):
    res = mint(sessions, master_key, issuer_env.address, count=3)
    first = anchor_batch(sessions, issuer_env.registry, res.batch_id)
    again = anchor_batch(sessions, issuer_env.registry, res.batch_id)
    assert again.already and again.anchor_tx == first.anchor_tx and again.anchor_block == first.anchor_block
    assert_anchored_once(issuer_env, sessions, res)


def test_crash_after_broadcast_before_receipt(issuer_env, sessions, master_key, monkeypatch):
    """The transaction went out and its hash was recorded; the process died waiting for the receipt."""
    res = mint(sessions, master_key, issuer_env.address, count=4)
    registry = issuer_env.registry

    monkeypatch.setattr(registry.client, "wait", die)
    with pytest.raises(SimulatedCrash):
        anchor_batch(sessions, registry, res.batch_id)
    monkeypatch.undo()
    batch = state_of(sessions, res.batch_id)
    assert batch.state == "anchoring" and batch.anchor_tx
    deadline = time.monotonic() + 10  # anvil mines a sent transaction at once, but not within the send call
    while not anchor_events(issuer_env, res.batch_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(anchor_events(issuer_env, res.batch_id)) == 1  # it did reach the chain
    out = anchor_batch(sessions, registry, res.batch_id)
    assert out.state == "anchored" and out.anchor_tx == batch.anchor_tx
    assert_anchored_once(issuer_env, sessions, res)


def test_crash_after_recording_the_hash_before_broadcast(issuer_env, sessions, master_key, monkeypatch):
    """The hash was recorded but the transaction never left: the next run notices and sends again."""
    res = mint(sessions, master_key, issuer_env.address, count=4)
    registry = issuer_env.registry
    send = registry.send_anchor

    def record_then_die(*args, before_broadcast=None, **kw):
        def hook(sent):
            before_broadcast(sent)
            raise SimulatedCrash()
        return send(*args, before_broadcast=hook, **kw)

    monkeypatch.setattr(registry, "send_anchor", record_then_die)
    with pytest.raises(SimulatedCrash):
        anchor_batch(sessions, registry, res.batch_id)
    monkeypatch.undo()
    batch = state_of(sessions, res.batch_id)
    assert batch.state == "anchoring" and batch.anchor_tx
    assert not registry.client.transaction_known(batch.anchor_tx)
    assert anchor_events(issuer_env, res.batch_id) == []
    out = anchor_batch(sessions, registry, res.batch_id)
    assert out.state == "anchored" and not out.already
    assert_anchored_once(issuer_env, sessions, res)


def test_anchored_on_chain_but_database_still_minted(issuer_env, sessions, master_key):
    """E.g. the database write was lost: the batch is found on chain and recorded, not sent twice."""
    res = mint(sessions, master_key, issuer_env.address, count=5)
    batch = state_of(sessions, res.batch_id)
    receipt = issuer_env.registry.anchor_batch(batch.batch_id_bytes, bytes.fromhex(res.root[2:]), 5,
                                               bytes.fromhex(res.manifest_hash[2:]),
                                               ProductSpec.of(batch.sku, batch.face_value, batch.currency),
                                               expiry=batch.expiry or 0)
    assert state_of(sessions, res.batch_id).state == "minted"
    out = anchor_batch(sessions, issuer_env.registry, res.batch_id)
    assert out.state == "anchored" and out.anchor_tx == "0x" + bytes(receipt["transactionHash"]).hex()
    assert_anchored_once(issuer_env, sessions, res)


def test_crash_when_state_was_set_but_nothing_sent(issuer_env, sessions, master_key, monkeypatch):
    res = mint(sessions, master_key, issuer_env.address, count=2)
    registry = issuer_env.registry

    monkeypatch.setattr(registry, "send_anchor", die)
    with pytest.raises(SimulatedCrash):
        anchor_batch(sessions, registry, res.batch_id)
    monkeypatch.undo()
    batch = state_of(sessions, res.batch_id)
    assert batch.state == "anchoring" and batch.anchor_tx is None
    anchor_batch(sessions, registry, res.batch_id)
    assert_anchored_once(issuer_env, sessions, res)


def test_root_mismatch_on_chain_is_detected(issuer_env, sessions, master_key):
    res = mint(sessions, master_key, issuer_env.address, count=5)
    bid = bytes.fromhex(res.batch_id[2:])
    issuer_env.registry.anchor_batch(bid, b"\x42" * 32, 5, b"\x00" * 32)  # someone anchored another root
    with pytest.raises(RootMismatch) as err:
        anchor_batch(sessions, issuer_env.registry, res.batch_id)
    assert "0x" + "42" * 32 in str(err.value)
    batch = state_of(sessions, res.batch_id)
    assert batch.state == "failed" and "root" in batch.error
    with pytest.raises(RootMismatch):  # and it stays that way: never anchored twice
        anchor_batch(sessions, issuer_env.registry, res.batch_id)
    assert len(anchor_events(issuer_env, res.batch_id)) == 1


def test_stored_root_tampered_after_anchoring(issuer_env, sessions, master_key):
    res = mint(sessions, master_key, issuer_env.address, count=2)
    anchor_batch(sessions, issuer_env.registry, res.batch_id)
    with sessions.begin() as s:
        repo.get_batch(s, res.batch_id).root = "0x" + "77" * 32
    with pytest.raises(RootMismatch):
        anchor_batch(sessions, issuer_env.registry, res.batch_id)


def test_revert_marks_failed_and_retry_after_fixing(issuer_env, sessions, master_key):
    res = mint(sessions, master_key, issuer_env.address, count=3)
    admin = issuer_env.chain.registry("admin")
    admin.revoke_issuer(issuer_env.address)
    with pytest.raises(ContractRevert) as err:
        anchor_batch(sessions, issuer_env.registry, res.batch_id)
    assert "AccessControlUnauthorizedAccount" in str(err.value)
    batch = state_of(sessions, res.batch_id)
    assert batch.state == "failed" and "AccessControlUnauthorizedAccount" in batch.error
    assert anchor_events(issuer_env, res.batch_id) == []
    admin.grant_issuer(issuer_env.address)
    out = anchor_batch(sessions, issuer_env.registry, res.batch_id)
    assert out.state == "anchored"
    assert_anchored_once(issuer_env, sessions, res)


def test_only_the_batch_issuer_may_anchor(issuer_env, sessions, master_key):
    res = mint(sessions, master_key, issuer_env.address, count=2)
    other = issuer_env.chain.registry("issuer2")
    with pytest.raises(NotBatchIssuer):
        anchor_batch(sessions, other, res.batch_id)
    assert state_of(sessions, res.batch_id).state == "minted"


def test_unknown_batch(issuer_env, sessions):
    with pytest.raises(BatchNotFound):
        anchor_batch(sessions, issuer_env.registry, "0x" + "00" * 32)
    with pytest.raises(BatchNotFound):
        anchor_batch(sessions, issuer_env.registry, "not-a-batch")


def test_unreachable_chain_changes_nothing(issuer_env, sqlite_sessions, master_key):
    from chain.client import ChainClient, http_web3
    from chain.local_node import free_port
    from chain.registry import Registry

    res = mint(sqlite_sessions, master_key, issuer_env.address, count=2)
    dead = ChainClient(http_web3(f"http://127.0.0.1:{free_port()}", timeout=2),
                       issuer_env.registry.client.account, _chain_id=issuer_env.registry.client.chain_id)
    with pytest.raises(ChainUnreachable):
        anchor_batch(sqlite_sessions, Registry(dead, issuer_env.registry.address), res.batch_id)
    assert state_of(sqlite_sessions, res.batch_id).state == "minted"
    anchor_batch(sqlite_sessions, issuer_env.registry, res.batch_id)
    assert_anchored_once(issuer_env, sqlite_sessions, res)


def _set_automine(env, on: bool) -> None:
    if env.backend == "eth-tester":
        tester = env.extra["tester"]
        tester.enable_auto_mine_transactions() if on else tester.disable_auto_mine_transactions()
    else:
        env.admin.w3.provider.make_request("evm_setAutomine", [on])


def test_crash_while_the_transaction_is_pending(issuer_env, sessions, master_key, monkeypatch):
    """Sent, not yet mined when the process died: the next run waits for that very transaction."""
    res = mint(sessions, master_key, issuer_env.address, count=3)
    registry = issuer_env.registry
    _set_automine(issuer_env.chain, False)
    try:
        monkeypatch.setattr(registry.client, "wait", die)
        with pytest.raises(SimulatedCrash):
            anchor_batch(sessions, registry, res.batch_id)
        monkeypatch.undo()
        batch = state_of(sessions, res.batch_id)
        assert batch.state == "anchoring" and registry.client.transaction_known(batch.anchor_tx)
        assert registry.client.get_receipt(batch.anchor_tx) is None  # still pending
        wait = registry.client.wait

        def mined_while_waiting(tx_hash, **kw):
            issuer_env.chain.mine(1)
            return wait(tx_hash, **kw)

        monkeypatch.setattr(registry.client, "wait", mined_while_waiting)
        sent: list = []
        monkeypatch.setattr(registry, "send_anchor", lambda *a, **k: sent.append(a))
        out = anchor_batch(sessions, registry, res.batch_id)
        assert out.state == "anchored" and out.anchor_tx == batch.anchor_tx and sent == []
    finally:
        _set_automine(issuer_env.chain, True)
    assert_anchored_once(issuer_env, sessions, res)
