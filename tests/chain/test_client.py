"""The chain client: accounts (key, keystore, dev default), connection errors, confirmations, nonces,
and the local anvil node's persistence across `chain down` / `chain up`."""

from __future__ import annotations

import json
import threading
import time

import pytest
from eth_account import Account

from chain import local_node
from chain.client import (
    ANVIL_DEV_KEY,
    ChainClient,
    connect,
    load_account,
    new_in_process_web3,
    dev_account_for,
)
from chain.deployments import deploy_registry, find, is_live
from chain.errors import AccountError, ChainUnreachable, ConfigError, NoChainRunning, TransactionTimeout
from chain.settings import get_settings

KEY = "0x" + "11" * 32


def test_private_key_account_and_no_key_in_errors(tmp_path):
    acct = load_account(get_settings(home=tmp_path, private_key=KEY))
    assert acct.address == Account.from_key(KEY).address
    bad = "0x" + "zz" * 32
    with pytest.raises(AccountError) as exc:
        load_account(get_settings(home=tmp_path, private_key=bad))
    assert "zz" not in str(exc.value)
    assert KEY[2:] not in repr(get_settings(home=tmp_path, private_key=KEY))


def test_keystore_account(tmp_path):
    path = tmp_path / "key.json"
    path.write_text(json.dumps(Account.encrypt(KEY, "s3cret", kdf="pbkdf2", iterations=1000)))
    acct = load_account(get_settings(home=tmp_path, keystore=path, keystore_password="s3cret"))
    assert acct.address == Account.from_key(KEY).address
    with pytest.raises(AccountError, match="wrong password"):
        load_account(get_settings(home=tmp_path, keystore=path, keystore_password="nope"))
    with pytest.raises(AccountError, match="KEYSTORE_PASSWORD"):
        load_account(get_settings(home=tmp_path, keystore=path))
    with pytest.raises(AccountError, match="cannot read"):
        load_account(get_settings(home=tmp_path, keystore=tmp_path / "missing.json", keystore_password="x"))


def test_dev_default_only_on_dev_chains(tmp_path):
    _, w3 = new_in_process_web3()
    acct = load_account(get_settings(home=tmp_path), w3, w3.eth.chain_id)
    assert acct.address == w3.eth.accounts[0]
    assert load_account(get_settings(home=tmp_path), w3, 31337).key.hex() == ANVIL_DEV_KEY[2:]
    with pytest.raises(AccountError, match="no account configured"):
        load_account(get_settings(home=tmp_path), w3, 1)  # mainnet: never a default key


def test_connection_errors_say_what_to_do(tmp_path):
    with pytest.raises(NoChainRunning, match="cardproof chain up"):
        connect(get_settings(home=tmp_path))
    with pytest.raises(ConfigError, match="eth-tester"):
        connect(get_settings(home=tmp_path, rpc_url="ftp://example.test"))
    with pytest.raises(ChainUnreachable, match="127.0.0.1:1"):
        connect(get_settings(home=tmp_path, rpc_url="http://127.0.0.1:1"))
    with pytest.raises(ConfigError, match="CARDPROOF_CHAIN_ID"):
        connect(get_settings(home=tmp_path, rpc_url="eth-tester", chain_id=5))


def test_read_only_connect_needs_no_account(tmp_path, monkeypatch):
    monkeypatch.setattr("chain.client.load_account", lambda *a, **k: (_ for _ in ()).throw(AccountError("none")))
    with pytest.raises(AccountError):
        connect(get_settings(home=tmp_path, rpc_url="eth-tester"))
    client = connect(get_settings(home=tmp_path, rpc_url="eth-tester"), read_only=True)
    assert client.block_number() >= 0


def test_wait_for_confirmations():
    tester, w3 = new_in_process_web3()
    client = ChainClient(w3, dev_account_for(w3, w3.eth.chain_id), confirmations=2, poll_interval=0.01)
    sent = client.send_value(Account.create().address, 1)
    with pytest.raises(TransactionTimeout, match="confirmations"):
        client.wait(sent.tx_hash, timeout=0.5)
    miner = threading.Timer(0.3, lambda: tester.mine_blocks(2))
    miner.start()
    start = time.monotonic()
    receipt = client.wait(sent.tx_hash, timeout=10)
    miner.join()
    assert receipt["status"] == 1 and time.monotonic() - start >= 0.25
    assert client.block_number() >= receipt["blockNumber"] + 2


def test_nonces_from_the_node_survive_a_restart():
    _, w3 = new_in_process_web3()
    acct = dev_account_for(w3, w3.eth.chain_id)
    first = ChainClient(w3, acct)
    a = first.send_value(Account.create().address, 1)
    second = ChainClient(w3, acct)  # a new process: no cached nonce
    b = second.send_value(Account.create().address, 1)
    c = first.send_value(Account.create().address, 1)
    assert [a.nonce, b.nonce, c.nonce] == [0, 1, 2]
    assert all(first.wait(x.tx_hash)["status"] == 1 for x in (a, b, c))


def test_local_chain_state_survives_down_and_up(tmp_path):
    node = local_node.start(tmp_path, port=local_node.free_port())
    try:
        assert local_node.status(tmp_path) == node
        assert local_node.start(tmp_path) == node  # already running: the same node
        settings = get_settings(home=tmp_path)
        record, created = deploy_registry(connect(settings), tmp_path)
        assert created
    finally:
        assert local_node.stop(tmp_path) is not None
    assert local_node.status(tmp_path) is None
    with pytest.raises(NoChainRunning):
        connect(get_settings(home=tmp_path))
    again = local_node.start(tmp_path)
    try:
        assert again.port == node.port  # the port this home used last
        client = connect(get_settings(home=tmp_path))
        assert is_live(client, record)
        assert find(client, tmp_path, "CardRegistry").address == record.address
        assert deploy_registry(client, tmp_path) == (record, False)
    finally:
        local_node.stop(tmp_path)
