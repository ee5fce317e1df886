"""The one entry point to a chain: connect, pick the acting account, send transactions.

``connect()`` chooses the backend from configuration:

* ``CARDPROOF_RPC_URL=eth-tester``: the in-process py-evm chain (shared by the whole process);
* an ``http(s)://`` URL: any JSON-RPC node;
* unset: the anvil node that ``cardproof chain up`` started for this ``CARDPROOF_HOME``.

Transactions are built, signed locally, simulated (so reverts come back as typed errors before any gas
is spent), sent, and awaited for a receipt plus N confirmations. Reverts are decoded into :mod:`chain.errors`
types on every backend. HTTP nodes are asked through :mod:`chain.rpc` (one timeout, bounded retries, a
circuit breaker per node).

**One account, one nonce sequence, whatever the number of processes.** A transaction takes its account's
nonce lock from choosing the nonce until the node accepted it, so transactions of one account reach the node
one at a time, in nonce order, from every process and thread. The lock lives in a store shared by everything
that signs for the account: Redis when ``CARDPROOF_REDIS_URL`` is set (several machines), else a lock file
under ``$CARDPROOF_HOME/nonces`` (one machine; in-process for eth-tester). The store also keeps the last nonce
used and its transaction: the nonce is ``max(node's pending count, last used + 1)``, the latter only while
the node still knows that transaction (after a reorg or a revert that dropped it, the node's count wins, so
no gap is ever made). A nonce refused by the node ("nonce too low", "replacement transaction underpriced",
"already known", ...) is retried with a fresh nonce a bounded number of times; the same signed transaction
already known to the node is a success.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from chain import local_node
from chain.errors import (
    AccountError,
    ChainError,
    ChainUnreachable,
    ConfigError,
    NoChainRunning,
    NonceError,
    NonceLockTimeout,
    NonceStoreUnavailable,
    TransactionReverted,
    TransactionTimeout,
    nonce_error_from,
)
from chain.reverts import as_revert
from chain.rpc import GuardedHTTPProvider, RpcPolicy
from chain.settings import Settings, get_settings

log = logging.getLogger("cardproof.chain")

ETH_TESTER = "eth-tester"
#: eth-tester's default chain id, anvil's and hardhat/ganache's.
ETH_TESTER_CHAIN_ID = 131277322940537
DEV_CHAIN_IDS = frozenset({ETH_TESTER_CHAIN_ID, local_node.ANVIL_CHAIN_ID, 1337})
#: The well-known first account of anvil's default test mnemonic (public knowledge, dev chains only).
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"

_in_process_lock = threading.Lock()
_in_process: tuple[Any, Web3] | None = None


def new_in_process_web3() -> tuple[Any, Web3]:
    """A fresh in-process py-evm chain: (EthereumTester, Web3)."""
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider

    tester = EthereumTester(PyEVMBackend())
    return tester, Web3(EthereumTesterProvider(tester))


def shared_in_process_web3() -> tuple[Any, Web3]:
    """The process-wide in-process chain used when CARDPROOF_RPC_URL=eth-tester."""
    global _in_process
    with _in_process_lock:
        if _in_process is None:
            _in_process = new_in_process_web3()
        return _in_process


def reset_shared_in_process_web3() -> None:
    global _in_process
    with _in_process_lock:
        _in_process = None


def http_web3(url: str, timeout: float | None = None, *, settings: Settings | None = None) -> Web3:
    """A Web3 on the node at `url` with the RPC policy of `settings` (the environment by default): one timeout
    (`timeout` overrides CARDPROOF_RPC_TIMEOUT), bounded retries, the node's circuit breaker (chain/rpc.py)."""
    policy = RpcPolicy.from_settings(settings or get_settings(), timeout)
    w3 = Web3(GuardedHTTPProvider(url, policy))
    # Two of web3's default middlewares cost more than they give here: "validation" asks the node for its chain id
    # before every call and transaction (a quarter of a busy client's time; our transactions are signed for the
    # chain id read once at connect, which the node checks anyway), and "ens_name_to_address" inspects every
    # argument for ENS names, which cardproof never uses.
    for name in ("validation", "ens_name_to_address"):
        try:
            w3.middleware_onion.remove(name)
        except ValueError:
            pass
    return w3


def resolve_rpc(settings: Settings) -> str:
    """The RPC URL to use ("eth-tester", an http(s) URL), or a one-line error saying what to do."""
    url = (settings.rpc_url or "").strip()
    if url:
        if url == ETH_TESTER or url.startswith(("http://", "https://")):
            return url
        raise ConfigError(f"CARDPROOF_RPC_URL must be 'eth-tester' or an http(s) URL, not {url!r}")
    node = _recorded_node(settings.home)
    if node is None:
        raise NoChainRunning(
            f"no chain configured: run `cardproof chain up` (CARDPROOF_HOME={settings.home}) "
            "or set CARDPROOF_RPC_URL"
        )
    return node.url


def _recorded_node(home: Any) -> local_node.NodeInfo | None:
    """The anvil that `cardproof chain up` started for this home, if its process is alive, answering or not: it
    is not asked here (connect() asks it, with the RPC timeout, and says so when a frozen node does not answer)."""
    return local_node.recorded(home)


def dev_accounts(w3: Web3, chain_id: int, count: int = 1) -> list[LocalAccount]:
    """The node's well-known funded test accounts on a dev chain (index 0 is the default actor); [] elsewhere."""
    if chain_id == ETH_TESTER_CHAIN_ID:
        tester = getattr(w3.provider, "ethereum_tester", None)
        if tester is not None:
            return [Account.from_key(k.to_bytes()) for k in tester.backend.account_keys[:count]]
    if chain_id not in DEV_CHAIN_IDS:
        return []
    if count == 1:
        return [Account.from_key(ANVIL_DEV_KEY)]  # index 0 of the mnemonic, without the HD derivation
    Account.enable_unaudited_hdwallet_features()
    return [Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)]


def dev_account_for(w3: Web3, chain_id: int) -> LocalAccount | None:
    """The node's well-known first test account on a dev chain, else None."""
    accounts = dev_accounts(w3, chain_id, 1)
    return accounts[0] if accounts else None


def load_account(settings: Settings, w3: Web3 | None = None, chain_id: int | None = None) -> LocalAccount:
    """The acting account: CARDPROOF_PRIVATE_KEY, else the keystore, else a dev chain's first account."""
    if settings.private_key is not None:
        try:
            return Account.from_key(settings.private_key.get_secret_value().strip())
        except Exception:
            raise AccountError("CARDPROOF_PRIVATE_KEY is not a valid private key") from None
    if settings.keystore is not None:
        if settings.keystore_password is None:
            raise AccountError("CARDPROOF_KEYSTORE is set but CARDPROOF_KEYSTORE_PASSWORD is not")
        try:
            encrypted = settings.keystore.read_text(encoding="utf-8")
        except OSError as exc:
            raise AccountError(f"cannot read keystore {settings.keystore}: {exc.strerror}") from None
        try:
            key = Account.decrypt(encrypted, settings.keystore_password.get_secret_value())
        except Exception:
            raise AccountError(f"cannot decrypt keystore {settings.keystore}: wrong password or bad file") from None
        return Account.from_key(key)
    if w3 is not None and chain_id is not None:
        dev = dev_account_for(w3, chain_id)
        if dev is not None:
            return dev
    raise AccountError(
        "no account configured: set CARDPROOF_PRIVATE_KEY or CARDPROOF_KEYSTORE (+ _PASSWORD)"
    )


# ---------------------------------------------------------------------------------------------- nonces

#: Attempts of one transaction whose nonce the node refused (each with a fresh nonce).
NONCE_ATTEMPTS = 4
#: A Redis nonce lock expires after this many seconds if its holder died (it is released at once otherwise).
REDIS_LOCK_TTL = 30.0

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(name: str) -> threading.Lock:
    """One lock per name in this process (threads queue here rather than poll the shared store)."""
    with _thread_locks_guard:
        return _thread_locks.setdefault(name, threading.Lock())


def _backoff(attempt: int) -> float:
    return min(0.002 * 2**attempt, 0.05) * (0.5 + random.random())


class NonceLease:
    """An account's nonce lock, held: the last nonce used (and its transaction), and a way to record the next."""

    def __init__(self, last: tuple[int, str] | None, record: Callable[[int, str], None]) -> None:
        self.last = last
        self._record = record

    def record(self, nonce: int, tx_hash: str) -> None:
        self.last = (nonce, tx_hash)
        self._record(nonce, tx_hash)


def _parse_last(text: str | bytes | None) -> tuple[int, str] | None:
    if not text:
        return None
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    try:
        nonce, tx_hash = text.strip().split(" ", 1)
        return int(nonce), tx_hash.strip()
    except ValueError:
        return None  # a torn write: the node's count decides


class NonceStore:
    """Where an account's nonce lock and last used nonce live. ``hold(key, timeout)`` is a context manager."""

    kind = "memory"

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, str]] = {}

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[NonceLease]:
        lock = _thread_lock(f"memory:{id(self)}:{key}")
        if not lock.acquire(timeout=timeout):
            raise NonceLockTimeout(f"the nonce lock of {key} was busy for {timeout:g} s")
        try:
            yield NonceLease(self._last.get(key), lambda n, h: self._last.__setitem__(key, (n, h)))
        finally:
            lock.release()


#: The in-process store of clients built directly (tests, the in-process chain): one per process.
MEMORY_NONCES = NonceStore()


class FileNonceStore(NonceStore):
    """One machine: an flock'ed file per account under ``folder``, holding "nonce tx_hash" of the last send."""

    kind = "file"

    def __init__(self, folder: Any) -> None:
        super().__init__()
        from pathlib import Path

        self.folder = Path(folder)

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[NonceLease]:
        path = self.folder / f"{key}.nonce"
        deadline = time.monotonic() + timeout
        lock = _thread_lock(f"file:{path}")
        if not lock.acquire(timeout=timeout):
            raise NonceLockTimeout(f"the nonce lock {path} was busy for {timeout:g} s")
        try:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise NonceStoreUnavailable(f"cannot open the nonce lock {path}: {exc.strerror}") from None
            try:
                attempt = 0
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise NonceLockTimeout(f"another process held the nonce lock {path} for more than "
                                                   f"{timeout:g} s") from None
                        time.sleep(_backoff(attempt))
                        attempt += 1

                def record(nonce: int, tx_hash: str) -> None:
                    data = f"{nonce} {tx_hash}\n".encode("ascii")
                    os.lseek(fd, 0, os.SEEK_SET)
                    os.ftruncate(fd, 0)
                    os.write(fd, data)

                os.lseek(fd, 0, os.SEEK_SET)
                yield NonceLease(_parse_last(os.read(fd, 200)), record)
            finally:
                os.close(fd)  # releases the flock
        finally:
            lock.release()


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RECORD = ("if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[2], ARGV[2]) return 1 "
           "else return 0 end")


class RedisNonceStore(NonceStore):
    """Several machines: ``SET lock token NX PX`` per account, and the last nonce used, in Redis."""

    kind = "redis"
    _clients: ClassVar[dict[str, Any]] = {}

    def __init__(self, url: str, socket_timeout: float = 5.0) -> None:
        super().__init__()
        self.url = url
        self.socket_timeout = socket_timeout

    def _redis(self) -> Any:
        client = RedisNonceStore._clients.get(self.url)
        if client is None:
            import redis

            client = redis.Redis.from_url(self.url, socket_timeout=self.socket_timeout,
                                          socket_connect_timeout=self.socket_timeout)
            RedisNonceStore._clients[self.url] = client
        return client

    @contextlib.contextmanager
    def hold(self, key: str, timeout: float) -> Iterator[NonceLease]:
        import redis

        lock_key, last_key = f"cardproof:nonce:{key}:lock", f"cardproof:nonce:{key}:last"
        deadline = time.monotonic() + timeout
        lock = _thread_lock(f"redis:{self.url}:{key}")
        if not lock.acquire(timeout=timeout):
            raise NonceLockTimeout(f"the nonce lock of {key} was busy for {timeout:g} s")
        try:
            r = self._redis()
            token = os.urandom(16).hex()
            try:
                attempt = 0
                while not r.set(lock_key, token, nx=True, px=int(REDIS_LOCK_TTL * 1000)):
                    if time.monotonic() > deadline:
                        raise NonceLockTimeout(f"another process held the nonce lock of {key} in Redis for more "
                                               f"than {timeout:g} s")
                    time.sleep(_backoff(attempt))
                    attempt += 1
                last = _parse_last(r.get(last_key))
            except redis.RedisError as exc:
                raise NonceStoreUnavailable(f"the nonce lock store (Redis) does not answer: "
                                            f"{type(exc).__name__}; nothing was sent") from None

            def record(nonce: int, tx_hash: str) -> None:
                try:
                    if not r.eval(_RECORD, 2, lock_key, last_key, token, f"{nonce} {tx_hash}"):
                        log.warning("the nonce lock of %s expired before nonce %d was recorded", key, nonce)
                except redis.RedisError as exc:  # sent already: the node's pending count covers it
                    log.warning("could not record nonce %d of %s in Redis: %s", nonce, key, exc)

            try:
                yield NonceLease(last, record)
            finally:
                try:
                    r.eval(_RELEASE, 1, lock_key, token)
                except redis.RedisError as exc:  # it expires on its own
                    log.warning("could not release the nonce lock of %s in Redis: %s", key, exc)
        finally:
            lock.release()


def nonce_store_for(settings: Settings, backend: str) -> NonceStore:
    """The store every process signing with this configuration shares (see the module docstring)."""
    if backend == ETH_TESTER:
        return MEMORY_NONCES  # the chain lives in this process
    if settings.redis_url:
        return RedisNonceStore(settings.redis_url, socket_timeout=settings.rpc_timeout)
    return FileNonceStore(settings.home / "nonces")


@dataclass
class SentTx:
    tx_hash: HexBytes
    nonce: int
    gas: int


@dataclass
class _SendRequest:
    """One transaction waiting for its account's sender (:meth:`ChainClient._sign_and_send`)."""

    build: Callable[[int, dict[str, int]], dict[str, Any]]
    gas: int
    before_broadcast: Callable[[SentTx], None] | None
    done: threading.Event = field(default_factory=threading.Event)
    result: SentTx | None = None
    error: BaseException | None = None


@dataclass
class _SendQueue:
    """The transactions of one account (one nonce lock) waiting in this process, and who is sending them."""

    mutex: threading.Lock = field(default_factory=threading.Lock)
    leader: threading.Lock = field(default_factory=threading.Lock)
    pending: list[_SendRequest] = field(default_factory=list)


_send_queues: dict[str, _SendQueue] = {}


@dataclass
class _HeadCache:
    lock: threading.Lock = field(default_factory=threading.Lock)
    number: int | None = None
    read_at: float = 0.0
    #: The fees worked out at head ``fees_head`` (a block's base fee is fixed: one lookup a block will do).
    fees: dict[str, int] | None = None
    fees_head: int | None = None


_head_caches: dict[int, _HeadCache] = {}


def _head_cache(key: int) -> _HeadCache:
    with _thread_locks_guard:
        return _head_caches.setdefault(key, _HeadCache())


def _send_queue(key: str) -> _SendQueue:
    with _thread_locks_guard:
        return _send_queues.setdefault(key, _SendQueue())


@dataclass
class ChainClient:
    """A Web3 connection plus the account that acts through it."""

    w3: Web3
    account: LocalAccount
    confirmations: int = 0
    backend: str = "rpc"
    receipt_timeout: float = 120.0
    poll_interval: float = 0.05
    #: Where the account's nonce lock and last nonce live, shared by every process signing for it.
    nonces: NonceStore = field(default_factory=lambda: MEMORY_NONCES, repr=False)
    #: Seconds to wait for the nonce lock before failing (nothing is sent then).
    nonce_lock_timeout: float = 60.0
    _chain_id: int | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ basics

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = guard(lambda: self.w3.eth.chain_id)
        return self._chain_id

    @property
    def is_dev_chain(self) -> bool:
        return self.chain_id in DEV_CHAIN_IDS

    def with_account(self, account: LocalAccount) -> ChainClient:
        """The same connection acting as another account."""
        return ChainClient(self.w3, account, self.confirmations, self.backend, self.receipt_timeout,
                           self.poll_interval, nonces=self.nonces, nonce_lock_timeout=self.nonce_lock_timeout,
                           _chain_id=self._chain_id)

    def block_number(self) -> int:
        return guard(lambda: self.w3.eth.block_number)

    def contract(self, address: str, abi: list[dict[str, Any]]) -> Any:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)

    def call(self, fn: ContractFunction, block: Any = "latest") -> Any:
        """Run a view function; reverts become typed errors."""
        return guard(lambda: fn.call({"from": self.address}, block_identifier=block))

    # ------------------------------------------------------------------ transactions

    def _nonce_key(self) -> str:
        key = f"{self.chain_id}-{self.address.lower()}"
        if self.nonces is MEMORY_NONCES:  # one process, maybe several chains of the same id
            provider = self.w3.provider
            key = f"{getattr(provider, 'endpoint_uri', None) or id(provider)}|{key}"
        return key

    def _choose_nonce(self, lease: NonceLease, floor: int) -> int:
        """max(the node's pending count, last used + 1 while the node knows that transaction, floor)."""
        pending = guard(lambda: self.w3.eth.get_transaction_count(self.address, "pending"))
        nonce = max(pending, floor)
        if lease.last is not None and lease.last[0] + 1 > nonce and self.transaction_known(lease.last[1]):
            nonce = lease.last[0] + 1  # the node's count lags behind what it already accepted
        return nonce
    def send(self, fn: ContractFunction, *, gas: int | None = None, value: int = 0,
             before_broadcast: Callable[[SentTx], None] | None = None) -> SentTx:
        """Simulate, sign and send a contract call; returns once the node accepted it.

        `before_broadcast` gets the signed transaction's hash before it is broadcast, so a caller can
        persist it and, after a crash at any point, find out whether the transaction made it.
        """
        params: dict[str, Any] = {"from": self.address, "value": value}
        if gas is None:
            estimate = guard(lambda: fn.estimate_gas(params))  # reverts here with the decoded error
            gas = int(estimate * 1.25) + 20_000
        else:
            guard(lambda: fn.call(params))  # simulate: one execution, typed error on revert
        return self._sign_and_send(
            lambda nonce, fees: fn.build_transaction({**params, **fees, "gas": gas, "nonce": nonce,
                                                      "chainId": self.chain_id}), gas, before_broadcast)

    def send_deploy(self, abi: list[dict[str, Any]], bytecode: str, *args: Any, gas: int | None = None) -> SentTx:
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        ctor = factory.constructor(*args)
        params: dict[str, Any] = {"from": self.address}
        if gas is None:
            gas = int(guard(lambda: ctor.estimate_gas(params)) * 1.2) + 50_000
        return self._sign_and_send(
            lambda nonce, fees: ctor.build_transaction({**params, **fees, "gas": gas, "nonce": nonce,
                                                        "chainId": self.chain_id}), gas)

    def send_value(self, to: str, value: int) -> SentTx:
        def build(nonce: int, fees: dict[str, int]) -> dict[str, Any]:
            return {"from": self.address, "to": Web3.to_checksum_address(to), "value": value, "gas": 21_000,
                    "nonce": nonce, "chainId": self.chain_id, **fees}

        return self._sign_and_send(build, 21_000)

    def _fees(self) -> dict[str, int]:
        """EIP-1559 fees for the next block: the node's suggested tip, and twice the base fee on top of it (what
        web3 would fill in; asked once per batch of sends instead of once per transaction, and once per block for
        every sender of this process: twice the base fee covers the next blocks' rises)."""
        head = None
        if self.backend != ETH_TESTER:
            head = self.shared_head()
            cache = _head_cache(id(self.w3))
            with cache.lock:
                if cache.fees is not None and cache.fees_head == head:
                    return dict(cache.fees)
        fees = self._node_fees()
        if head is not None:
            with cache.lock:
                cache.fees, cache.fees_head = dict(fees), head
        return fees

    def _node_fees(self) -> dict[str, int]:
        block = guard(lambda: self.w3.eth.get_block("latest"))
        base = int(block.get("baseFeePerGas", 0) or 0)
        try:
            tip = int(guard(lambda: self.w3.eth.max_priority_fee))
        except ChainUnreachable:
            raise
        except Exception:  # noqa: BLE001 - a node without eth_maxPriorityFeePerGas: web3's own default tip
            tip = 10**9
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def _sign_and_send(self, build: Callable[[int, dict[str, int]], dict[str, Any]], gas: int,
                       before_broadcast: Callable[[SentTx], None] | None = None) -> SentTx:
        """Queue the transaction for its account's sender and wait until it is broadcast (or refused).

        Many threads sending for one account at once (a supplier's node delivering a hundred orders) are served
        in batches: whichever thread finds no batch under way takes the account's nonce lock once, asks the
        node for the pending count and the fees once, and signs and broadcasts every queued transaction in
        turn (flat combining). One at a time, in nonce order, as before; only the per-transaction round trips
        and lock hand-overs are gone. Each transaction keeps its own outcome: a refusal or an error reaches
        its own caller only.
        """
        request = _SendRequest(build, gas, before_broadcast)
        queue = _send_queue(f"{self.nonces.kind}:{id(self.nonces)}:{id(self.w3)}:{self._nonce_key()}")
        with queue.mutex:
            queue.pending.append(request)
        while True:
            if queue.leader.acquire(blocking=False):
                try:
                    while True:
                        with queue.mutex:
                            batch, queue.pending = queue.pending, []
                        if not batch:
                            break
                        self._send_batch(batch)
                finally:
                    queue.leader.release()
            if request.done.wait(0.01):
                break
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _send_batch(self, batch: list[_SendRequest]) -> None:
        """Sign and broadcast `batch` under one hold of the nonce lock (see :meth:`_sign_and_send`).

        A refused nonce leaves nothing of that transaction at the node, so it is signed again with the next
        nonce (`before_broadcast` then sees the new hash, which replaces the old one). A time-out or a lost
        connection during a broadcast is not retried: the node may hold the transaction, and the caller
        settles it from the hash it recorded; the next transaction's nonce is then asked of the node again.
        """
        try:
            with self.nonces.hold(self._nonce_key(), self.nonce_lock_timeout) as lease:
                fees = self._fees()
                nonce = self._choose_nonce(lease, 0)
                for request in batch:
                    nonce = self._send_one(request, lease, nonce, fees)
        except BaseException as exc:  # the lock, the node: every request not yet served shares the failure
            for request in batch:
                if not request.done.is_set():
                    request.error = exc
                    request.done.set()
            if not isinstance(exc, Exception):
                raise

    def _send_one(self, request: _SendRequest, lease: NonceLease, nonce: int, fees: dict[str, int]) -> int:
        """Sign and broadcast one queued transaction from `nonce`; returns the nonce for the next one."""
        try:
            for attempt in range(1, NONCE_ATTEMPTS + 1):
                tx = guard(lambda nonce=nonce: request.build(nonce, fees))
                signed = self.account.sign_transaction(tx)
                sent = SentTx(HexBytes(signed.hash), nonce, request.gas)
                if request.before_broadcast is not None:
                    request.before_broadcast(sent)
                try:
                    guard(lambda raw=signed.raw_transaction: self.w3.eth.send_raw_transaction(raw))
                except NonceError as exc:
                    if not self.transaction_known(sent.tx_hash):  # else: this very transaction is there: sent
                        if attempt == NONCE_ATTEMPTS:
                            raise NonceError(f"{exc} for nonce {nonce} of {self.address}, {attempt} times; nothing "
                                             "was sent", exc.kind) from None
                        log.info("nonce %d of %s refused (%s): trying the next one", nonce, self.address, exc.kind)
                        nonce = self._choose_nonce(lease, nonce + 1)
                        continue
                except Exception:
                    # Maybe at the node, maybe not: the caller settles it from its hash; ask the node for the next.
                    request.error = sys.exc_info()[1]
                    request.done.set()
                    return self._choose_nonce(lease, 0)
                lease.record(nonce, "0x" + bytes(sent.tx_hash).hex())
                request.result = sent
                request.done.set()
                return nonce + 1
            raise AssertionError("unreachable")
        except Exception as exc:  # noqa: BLE001 - nothing of this one was sent: its caller gets the error
            if not request.done.is_set():
                request.error = exc
                request.done.set()
            return nonce

    def wait(self, tx_hash: bytes | str, *, confirmations: int | None = None,
             timeout: float | None = None) -> TxReceipt:
        """Wait for the receipt and N confirmations; a failed transaction raises its decoded revert."""
        confirmations = self.confirmations if confirmations is None else confirmations
        timeout = self.receipt_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        asked_at = self.shared_head()  # before the receipt: a block mined after this is seen as new
        receipt = self.get_receipt(tx_hash)
        polls = 0
        while receipt is None:
            # A receipt can only appear with a new block: ask again then (the head is read once per poll interval
            # for every thread of this process, not once per waiting transaction), and every second anyway.
            if time.monotonic() > deadline:
                raise TransactionTimeout(f"no receipt for {HexBytes(tx_hash).hex()} after {timeout:.0f}s")
            time.sleep(self.poll_interval)
            polls += 1
            head = self.shared_head()
            if head != asked_at or self.backend == ETH_TESTER or polls * self.poll_interval >= 1.0:
                asked_at, polls = head, 0
                receipt = self.get_receipt(tx_hash)
        if receipt["status"] != 1:
            raise self._failure(receipt)
        while confirmations and self.block_number() < receipt["blockNumber"] + confirmations:
            if time.monotonic() > deadline:
                raise TransactionTimeout(
                    f"{HexBytes(tx_hash).hex()} has fewer than {confirmations} confirmations after {timeout:.0f}s"
                )
            time.sleep(max(self.poll_interval, 0.2))
        # A reorg may have replaced the block: read the receipt again after confirming.
        if confirmations:
            again = self.get_receipt(tx_hash)
            if again is None or again["blockHash"] != receipt["blockHash"]:
                return self.wait(tx_hash, confirmations=confirmations, timeout=max(1.0, deadline - time.monotonic()))
        return receipt

    def shared_head(self) -> int:
        """The head block number, read at most once per ``poll_interval`` for every thread of this process that
        uses this connection (many transactions waiting at once cost one request a poll, not one each)."""
        cache = _head_cache(id(self.w3))
        with cache.lock:
            now = time.monotonic()
            if cache.number is None or now - cache.read_at >= self.poll_interval:
                cache.number = self.block_number()
                cache.read_at = time.monotonic()
            return cache.number

    def get_receipt(self, tx_hash: bytes | str) -> TxReceipt | None:
        from web3.exceptions import TransactionNotFound

        try:
            return guard(lambda: self.w3.eth.get_transaction_receipt(tx_hash))
        except TransactionNotFound:
            return None

    def transact(self, fn: ContractFunction, *, gas: int | None = None, value: int = 0,
                 on_sent: Callable[[SentTx], None] | None = None) -> TxReceipt:
        """send() then wait(); `on_sent` gets the hash after signing, before broadcast (see send)."""
        sent = self.send(fn, gas=gas, value=value, before_broadcast=on_sent)
        return self.wait(sent.tx_hash)

    def transaction_known(self, tx_hash: bytes | str) -> bool:
        """Whether the node knows this transaction (pending or mined)."""
        from web3.exceptions import TransactionNotFound

        try:
            guard(lambda: self.w3.eth.get_transaction(tx_hash))
        except TransactionNotFound:
            return False
        return True

    def _failure(self, receipt: TxReceipt) -> ChainError:
        """Replay a failed transaction as a call to recover and decode its revert data."""
        tx = guard(lambda: self.w3.eth.get_transaction(receipt["transactionHash"]))
        call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx["value"], "gas": tx["gas"]}
        try:
            self.w3.eth.call(call, block_identifier=max(receipt["blockNumber"] - 1, 0))
        except Exception as exc:  # noqa: BLE001 - every backend raises its own type here
            typed = as_revert(exc)
            if typed is not None:
                return typed
        return TransactionReverted(
            f"transaction {HexBytes(receipt['transactionHash']).hex()} failed (status 0, gas used {receipt['gasUsed']})"
        )


def guard(thunk: Callable[[], Any]) -> Any:
    """Run a web3 call, turning reverts into typed errors and connection failures into ChainUnreachable."""
    import requests

    try:
        return thunk()
    except ChainError:
        raise
    except (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError) as exc:
        from chain.rpc import describe

        url = getattr(getattr(exc, "request", None), "url", None)
        where = f" at {url}" if url else ""
        raise ChainUnreachable(f"the chain node{where} does not answer ({describe(exc, 0)})") from None
    except Exception as exc:
        typed = as_revert(exc)
        if typed is not None:
            raise typed from None
        nonce_error = nonce_error_from(exc)
        if nonce_error is not None:
            raise nonce_error from None
        from web3.exceptions import ProviderConnectionError

        if isinstance(exc, ProviderConnectionError):
            raise ChainUnreachable(f"the chain node does not answer: {exc}") from None
        raise


def connect(settings: Settings | None = None, *, account: LocalAccount | None = None, read_only: bool = False,
            timeout: float | None = None) -> ChainClient:
    """Connect to the configured chain as the configured account (see the module docstring).

    `timeout`: seconds per JSON-RPC request, CARDPROOF_RPC_TIMEOUT by default (chain/rpc.py).

    `read_only`: a reader (the API, the indexer) needs no account; without a configured one it gets a
    throwaway address, which can call views but holds nothing to send transactions with.
    """
    settings = settings or get_settings()
    url = resolve_rpc(settings)
    if url == ETH_TESTER:
        _, w3 = shared_in_process_web3()
        backend = ETH_TESTER
    else:
        w3 = http_web3(url, timeout, settings=settings)
        backend = "rpc"
    chain_id = guard(lambda: w3.eth.chain_id)
    if settings.chain_id is not None and settings.chain_id != chain_id:
        raise ConfigError(f"the node at {url} is chain {chain_id}, but CARDPROOF_CHAIN_ID is {settings.chain_id}")
    if account is None:
        try:
            account = load_account(settings, w3, chain_id)
        except AccountError:
            if not read_only:
                raise
            account = Account.create()
    return ChainClient(w3, account, confirmations=settings.confirmations, backend=backend,
                       nonces=nonce_store_for(settings, backend), nonce_lock_timeout=settings.nonce_lock_timeout,
                       _chain_id=chain_id)
