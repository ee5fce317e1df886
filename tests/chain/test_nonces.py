"""One account, one nonce sequence, whatever the number of processes (chain/client.py).

Every test runs on a real anvil of its own. Processes that sign for one account share its nonce lock (a lock
file under CARDPROOF_HOME, or Redis: our own redis-server on a free port, never the machine's), nonce
refusals are typed and retried with a fresh nonce, a transaction the node already holds is a success, and the
last nonce used is trusted only while the node still knows its transaction (never a gap after a revert).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web3 import Web3
from web3.exceptions import Web3RPCError

from chain import client as client_mod
from chain import local_node
from chain.client import (
    NONCE_ATTEMPTS,
    FileNonceStore,
    RedisNonceStore,
    connect,
    guard,
    nonce_store_for,
)
from chain.errors import (
    NonceError,
    NonceLockTimeout,
    NonceStoreUnavailable,
    nonce_error_from,
)
from chain.settings import get_settings

pytestmark = pytest.mark.anvil
REPO = Path(__file__).resolve().parents[2]
SINK = Web3.to_checksum_address("0x" + "5a" * 20)


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def node(tmp_path: Path) -> Iterator[local_node.NodeInfo]:
    home = tmp_path / "anvil"
    info = local_node.start(home, port=local_node.free_port())
    try:
        yield info
    finally:
        local_node.stop(home)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, str, Path]:
    """Our own redis-server on a free loopback port (never the machine's shared one)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    import redis

    folder = Path(tempfile.mkdtemp(prefix="cardproof-redis-"))
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=0.5).ping()
            return proc, url, folder
        except redis.RedisError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


def stop_redis(proc: subprocess.Popen, folder: Path) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def redis_url() -> Iterator[str]:
    proc, url, folder = start_redis()
    try:
        yield url
    finally:
        stop_redis(proc, folder)


def settings_for(node: local_node.NodeInfo, home: Path, **kw):
    return get_settings(home=home, rpc_url=node.url, private_key=None, keystore=None, **kw)


def count(client, block: str) -> int:
    return client.w3.eth.get_transaction_count(client.address, block)


# ---------------------------------------------------------------------------------------------- typed errors


@pytest.mark.parametrize("message, kind", [
    ("nonce too low", "too_low"), ("Nonce too low: next nonce 5, tx nonce 4", "too_low"),
    ("replacement transaction underpriced", "underpriced"), ("already known", "already_known"),
    ("transaction already imported", "already_known"), ("Invalid transaction nonce", "invalid"),
])
def test_nonce_refusals_are_typed(message, kind):
    exc = Web3RPCError(str({"code": -32003, "message": message}))
    typed = nonce_error_from(exc)
    assert isinstance(typed, NonceError) and typed.kind == kind and typed.code == "nonce_conflict"

    def refuse():
        raise exc

    with pytest.raises(NonceError):
        guard(refuse)
    assert nonce_error_from(Web3RPCError("execution reverted")) is None


def test_store_follows_configuration(tmp_path):
    s = get_settings(home=tmp_path, rpc_url="http://127.0.0.1:9", redis_url=None)
    assert isinstance(nonce_store_for(s, "rpc"), FileNonceStore)
    assert nonce_store_for(s, "eth-tester") is client_mod.MEMORY_NONCES
    s = get_settings(home=tmp_path, rpc_url="http://127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")
    assert isinstance(nonce_store_for(s, "rpc"), RedisNonceStore)


# ---------------------------------------------------------------------------------------------- processes

SENDER = textwrap.dedent("""
    import json, sys, time
    import chain.client
    from chain.client import connect
    chain.client.NONCE_ATTEMPTS = 1  # no retry: the lock alone must keep the sequence
    start = float(sys.argv[2])
    client = connect()
    while time.time() < start:
        time.sleep(0.005)
    nonces = []
    for _ in range(int(sys.argv[1])):
        sent = client.send_value(sys.argv[3], 1)
        nonces.append(sent.nonce)
    print(json.dumps(nonces))
""")


def _run_concurrently(env: dict[str, str], processes: int, per_process: int, threads: int, settings) -> list[int]:
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", SENDER, str(per_process), str(start), SINK], env=env,
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(processes)]
    nonces: list[int] = []
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            client = connect(settings)  # a client of its own, as another part of this process would have
            while time.time() < start:
                time.sleep(0.005)
            for _ in range(per_process):
                nonces.append(client.send_value(SINK, 1).nonce)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=in_thread) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        nonces.extend(json.loads(out))
    assert not errors, errors
    return nonces


def _env(node, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDPROOF_")}
    return {**env, "CARDPROOF_HOME": str(home), "CARDPROOF_RPC_URL": node.url, "PYTHONPATH": str(REPO), **extra}


@pytest.mark.parametrize("store", ["file", "redis"])
def test_processes_and_threads_share_one_nonce_sequence(node, tmp_path, store, request, monkeypatch):
    """3 processes and 2 threads with clients of their own send 40 transactions at once, with no nonce retry
    (without the shared lock, some are refused: "nonce too low")."""
    monkeypatch.setattr(client_mod, "NONCE_ATTEMPTS", 1)
    extra = {}
    if store == "redis":
        extra["CARDPROOF_REDIS_URL"] = request.getfixturevalue("redis_url")
    home = tmp_path / "home"
    settings = settings_for(node, home, redis_url=extra.get("CARDPROOF_REDIS_URL"))
    probe = connect(settings)
    first = count(probe, "pending")
    nonces = _run_concurrently(_env(node, home, **extra), processes=3, per_process=8, threads=2, settings=settings)
    assert sorted(nonces) == list(range(first, first + 40))  # each once, no gap
    assert count(probe, "latest") == count(probe, "pending") == first + 40  # all mined: nothing stuck
    if store == "file":
        assert (home / "nonces").is_dir() and len(list((home / "nonces").glob("*.nonce"))) == 1
        text = next((home / "nonces").glob("*.nonce")).read_text().split()
        assert int(text[0]) == first + 39 and probe.transaction_known(text[1])


# ---------------------------------------------------------------------------------------------- last used


def test_last_used_nonce_wins_while_the_node_knows_it(node, tmp_path, monkeypatch):
    client = connect(settings_for(node, tmp_path / "home"))
    client.w3.provider.make_request("evm_setAutomine", [False])
    first = client.send_value(SINK, 1)
    # A node behind a load balancer may still count the old pending number.
    real = client.w3.eth.get_transaction_count
    monkeypatch.setattr(client.w3.eth, "get_transaction_count", lambda *a, **kw: first.nonce)
    second = client.send_value(SINK, 1)
    assert second.nonce == first.nonce + 1
    monkeypatch.setattr(client.w3.eth, "get_transaction_count", real)
    client.w3.provider.make_request("evm_mine", [])
    assert client.wait(second.tx_hash)["status"] == 1


def test_a_nonce_the_chain_lost_is_not_trusted(node, tmp_path):
    """After a revert drops the last transaction, the node's count wins: no gap, the next one is mined."""
    client = connect(settings_for(node, tmp_path / "home"))
    snap = client.w3.provider.make_request("evm_snapshot", [])["result"]
    lost = client.send_value(SINK, 1)
    client.wait(lost.tx_hash)
    assert client.w3.provider.make_request("evm_revert", [snap])["result"] is True
    again = connect(settings_for(node, tmp_path / "home"))  # a fresh process would read the same store
    sent = again.send_value(SINK, 1)
    assert sent.nonce == lost.nonce
    assert again.wait(sent.tx_hash, timeout=10)["status"] == 1


# ---------------------------------------------------------------------------------------------- batched sends


def test_threads_sending_at_once_are_served_in_batches(node, tmp_path, monkeypatch):
    """Forty threads of one process send for one account at once: every transaction is accepted with its own
    consecutive nonce, and the node is asked for the pending count and the fees once per batch, not once per
    transaction; a transaction that cannot be built fails for its own caller only."""
    client = connect(settings_for(node, tmp_path / "home"))
    client.w3.provider.make_request("evm_setAutomine", [False])
    asked = {"count": 0, "fees": 0}
    real_count, real_fees = client.w3.eth.get_transaction_count, client._fees

    def counting_count(*a, **kw):
        asked["count"] += 1
        time.sleep(0.05)  # a slow node: the others queue up meanwhile
        return real_count(*a, **kw)

    def counting_fees():
        asked["fees"] += 1
        return real_fees()

    monkeypatch.setattr(client.w3.eth, "get_transaction_count", counting_count)
    monkeypatch.setattr(client, "_fees", counting_fees)
    start = count(client, "pending")
    results: dict[int, object] = {}
    gate = threading.Barrier(40)

    def send(i: int) -> None:
        gate.wait()
        try:
            if i == 7:
                results[i] = client._sign_and_send(lambda nonce, fees: 1 / 0, 21_000)
            else:
                results[i] = client.send_value(SINK, i + 1)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            results[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(results[7], ZeroDivisionError)
    sent = [r for i, r in results.items() if i != 7]
    assert all(hasattr(r, "nonce") for r in sent), [r for r in sent if not hasattr(r, "nonce")]
    assert sorted(r.nonce for r in sent) == list(range(start, start + 39))
    assert asked["count"] < 39 and asked["fees"] < 39, asked
    client.w3.provider.make_request("evm_mine", [])
    assert all(client.wait(r.tx_hash, timeout=10)["status"] == 1 for r in sent)


def test_fees_are_worked_out_once_a_block_for_every_sender(node, tmp_path, monkeypatch):
    """Several accounts of one process sending in the same block ask the node for the fees once (the base fee is
    fixed for a block); a new block asks again."""
    client = connect(settings_for(node, tmp_path / "home"))
    client.w3.provider.make_request("evm_setAutomine", [False])
    others = [client.with_account(a) for a in client_mod.dev_accounts(client.w3, client.chain_id, 3)[1:]]
    asked = []
    real = client_mod.ChainClient._node_fees
    monkeypatch.setattr(client_mod.ChainClient, "_node_fees", lambda self: asked.append(1) or real(self))
    for sender in [client, *others] * 3:
        sender.send_value(SINK, 1)
    assert len(asked) == 1
    client.w3.provider.make_request("evm_mine", [])
    time.sleep(client.poll_interval + 0.05)  # the head is read again after a poll interval
    others[0].send_value(SINK, 1)
    assert len(asked) == 2


def test_waiting_transactions_share_one_head_poll(node, tmp_path, monkeypatch):
    """Twenty transactions waiting for their receipts at once ask for the head once per poll for all of them,
    and for each receipt only when a new block came (not every poll)."""
    client = connect(settings_for(node, tmp_path / "home"))
    client.poll_interval = 0.05
    client.w3.provider.make_request("evm_setAutomine", [False])
    sent = [client.send_value(SINK, i + 1) for i in range(20)]
    asked = {"receipts": 0, "heads": 0}
    real_receipt, real_head = client.get_receipt, client.block_number

    def counting_receipt(tx_hash):
        asked["receipts"] += 1
        return real_receipt(tx_hash)

    def counting_head():
        asked["heads"] += 1
        return real_head()

    monkeypatch.setattr(client, "get_receipt", counting_receipt)
    monkeypatch.setattr(client, "block_number", counting_head)
    got: list[object] = []
    threads = [threading.Thread(target=lambda s=s: got.append(client.wait(s.tx_hash, timeout=20))) for s in sent]
    for t in threads:
        t.start()
    time.sleep(0.8)  # 16 polls of 20 waiters with no new block
    client.w3.provider.make_request("evm_mine", [])
    for t in threads:
        t.join(20)
    assert len(got) == 20 and all(r["status"] == 1 for r in got)
    # Polling each receipt every 50 ms would be ~20 x 16 = 320 receipt requests before the block.
    assert asked["receipts"] <= 20 * 3, asked
    assert asked["heads"] <= 40, asked


# ---------------------------------------------------------------------------------------------- refusals


def _foreign_transfer(client, nonce: int, tip: int) -> bytes:
    """The same account's transaction signed outside cardproof (another wallet holding the key)."""
    base = int(client.w3.eth.get_block("latest")["baseFeePerGas"])
    tx = {"to": SINK, "value": 7, "gas": 21_000, "nonce": nonce, "chainId": client.chain_id,
          "maxFeePerGas": 4 * base + tip, "maxPriorityFeePerGas": tip}
    return client.account.sign_transaction(tx).raw_transaction


@pytest.mark.parametrize("automine", [True, False])
def test_a_refused_nonce_is_retried_with_the_next(node, tmp_path, automine):
    """A wallet outside the lock takes our nonce between signing and broadcast: "nonce too low" (mined) or
    "replacement transaction underpriced" (pending); the client signs again with the next nonce."""
    client = connect(settings_for(node, tmp_path / "home"))
    if not automine:
        client.w3.provider.make_request("evm_setAutomine", [False])
    seen = []

    def intruder(sent) -> None:
        seen.append(sent)
        if len(seen) == 1:
            client.w3.eth.send_raw_transaction(_foreign_transfer(client, sent.nonce, tip=50 * 10**9))

    sent = client._sign_and_send(lambda nonce, fees: {"to": SINK, "value": 1, "gas": 21_000, "nonce": nonce,
                                                      "chainId": client.chain_id, **fees}, 21_000, intruder)
    assert [s.nonce for s in seen] == [seen[0].nonce, seen[0].nonce + 1] and sent == seen[1]
    assert seen[0].tx_hash != seen[1].tx_hash
    if not automine:
        client.w3.provider.make_request("evm_mine", [])
    assert client.wait(sent.tx_hash, timeout=10)["status"] == 1


def test_the_same_transaction_already_known_is_a_success(node, tmp_path, monkeypatch):
    client = connect(settings_for(node, tmp_path / "home"))
    real = client.w3.eth.send_raw_transaction

    def twice(raw):
        real(raw)  # a first attempt reached the node, its answer was lost; the retry meets the same transaction
        return real(raw)

    monkeypatch.setattr(client.w3.eth, "send_raw_transaction", twice)
    sent = client.send_value(SINK, 1)
    assert client.wait(sent.tx_hash)["status"] == 1


def test_nonce_retries_are_bounded(node, tmp_path, monkeypatch):
    client = connect(settings_for(node, tmp_path / "home"))
    before = count(client, "pending")
    calls = []

    def refuse(raw):
        calls.append(raw)
        raise Web3RPCError(str({"code": -32003, "message": "nonce too low"}))

    monkeypatch.setattr(client.w3.eth, "send_raw_transaction", refuse)
    with pytest.raises(NonceError, match=f"{NONCE_ATTEMPTS} times; nothing was sent"):
        client.send_value(SINK, 1)
    assert len(calls) == NONCE_ATTEMPTS and count(client, "pending") == before


# ---------------------------------------------------------------------------------------------- the lock


def test_a_held_file_lock_times_out_with_one_line(node, tmp_path):
    home = tmp_path / "home"
    client = connect(settings_for(node, home))
    client.nonce_lock_timeout = 0.3
    holder = textwrap.dedent("""
        import fcntl, os, sys, time
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(30)
    """)
    path = home / "nonces" / f"{client._nonce_key()}.nonce"
    path.parent.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        before = count(client, "pending")
        with pytest.raises(NonceLockTimeout, match="held the nonce lock"):
            client.send_value(SINK, 1)
        assert count(client, "pending") == before
    finally:
        proc.kill()
        proc.wait()
    assert client.wait(client.send_value(SINK, 1).tx_hash)["status"] == 1  # free again


def test_redis_down_sends_nothing(node, tmp_path):
    client = connect(settings_for(node, tmp_path / "home", redis_url=f"redis://127.0.0.1:{_free_port()}/0",
                                  rpc_timeout=1))
    assert isinstance(client.nonces, RedisNonceStore)
    before = count(client, "pending")
    started = time.monotonic()
    with pytest.raises(NonceStoreUnavailable, match="nothing was sent"):
        client.send_value(SINK, 1)
    assert time.monotonic() - started < 5 and count(client, "pending") == before


def test_redis_lock_is_released_and_last_nonce_kept(node, tmp_path, redis_url):
    import redis

    client = connect(settings_for(node, tmp_path / "home", redis_url=redis_url))
    sent = client.send_value(SINK, 1)
    r = redis.Redis.from_url(redis_url)
    key = client._nonce_key()
    assert r.get(f"cardproof:nonce:{key}:lock") is None
    nonce, tx_hash = r.get(f"cardproof:nonce:{key}:last").decode().split()
    assert int(nonce) == sent.nonce and tx_hash == "0x" + bytes(sent.tx_hash).hex()

