"""The one entry point to a chain: connect, pick the acting account, send transactions.

``connect()`` chooses the backend from configuration:

* ``CARDPROOF_RPC_URL=eth-tester``: the in-process py-evm chain (shared by the whole process);
* an ``http(s)://`` URL: any JSON-RPC node;
* unset: the anvil node that ``cardproof chain up`` started for this ``CARDPROOF_HOME``.

Transactions are built, signed locally, simulated (so reverts come back as typed errors before any gas
is spent), sent, and awaited for a receipt plus N confirmations. Nonces come from the node's pending
count, so they survive restarts. Reverts are decoded into :mod:`chain.errors` types on every backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    TransactionReverted,
    TransactionTimeout,
)
from chain.reverts import as_revert
from chain.settings import Settings, get_settings

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


def http_web3(url: str, timeout: float = 10.0) -> Web3:
    from web3 import HTTPProvider

    return Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))


def resolve_rpc(settings: Settings) -> str:
    """The RPC URL to use ("eth-tester", an http(s) URL), or a one-line error saying what to do."""
    url = (settings.rpc_url or "").strip()
    if url:
        if url == ETH_TESTER or url.startswith(("http://", "https://")):
            return url
        raise ConfigError(f"CARDPROOF_RPC_URL must be 'eth-tester' or an http(s) URL, not {url!r}")
    node = local_node.status(settings.home)
    if node is None:
        raise NoChainRunning(
            f"no chain configured: run `cardproof chain up` (CARDPROOF_HOME={settings.home}) "
            "or set CARDPROOF_RPC_URL"
        )
    return node.url


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


@dataclass
class SentTx:
    tx_hash: HexBytes
    nonce: int
    gas: int


@dataclass
class ChainClient:
    """A Web3 connection plus the account that acts through it."""

    w3: Web3
    account: LocalAccount
    confirmations: int = 0
    backend: str = "rpc"
    receipt_timeout: float = 120.0
    poll_interval: float = 0.05
    _nonce_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Held from taking a nonce to the node's acceptance: in one process, transactions reach the node in nonce
    #: order, so a failed broadcast is released before anybody takes the next nonce (no gap, no reordering).
    _send_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _next_nonce: int | None = field(default=None, repr=False)
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
                           self.poll_interval, _chain_id=self._chain_id)

    def block_number(self) -> int:
        return guard(lambda: self.w3.eth.block_number)

    def contract(self, address: str, abi: list[dict[str, Any]]) -> Any:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)

    def call(self, fn: ContractFunction, block: Any = "latest") -> Any:
        """Run a view function; reverts become typed errors."""
        return guard(lambda: fn.call({"from": self.address}, block_identifier=block))

    # ------------------------------------------------------------------ transactions

    def _take_nonce(self) -> int:
        with self._nonce_lock:
            pending = guard(lambda: self.w3.eth.get_transaction_count(self.address, "pending"))
            nonce = pending if self._next_nonce is None else max(pending, self._next_nonce)
            self._next_nonce = nonce + 1
            return nonce

    def _release_nonce(self, nonce: int) -> None:
        with self._nonce_lock:
            if self._next_nonce == nonce + 1:
                self._next_nonce = nonce

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
        return self._sign_and_send(lambda nonce: fn.build_transaction({**params, "gas": gas, "nonce": nonce}), gas,
                                   before_broadcast)

    def send_deploy(self, abi: list[dict[str, Any]], bytecode: str, *args: Any, gas: int | None = None) -> SentTx:
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        ctor = factory.constructor(*args)
        params: dict[str, Any] = {"from": self.address}
        if gas is None:
            gas = int(guard(lambda: ctor.estimate_gas(params)) * 1.2) + 50_000
        return self._sign_and_send(lambda nonce: ctor.build_transaction({**params, "gas": gas, "nonce": nonce}), gas)

    def send_value(self, to: str, value: int) -> SentTx:
        def build(nonce: int) -> dict[str, Any]:
            tx: dict[str, Any] = {"from": self.address, "to": Web3.to_checksum_address(to), "value": value,
                                  "gas": 21_000, "nonce": nonce, "chainId": self.chain_id}
            tx.update(self._fees())
            return tx

        return self._sign_and_send(build, 21_000)

    def _fees(self) -> dict[str, int]:
        block = guard(lambda: self.w3.eth.get_block("latest"))
        base = int(block.get("baseFeePerGas", 0) or 0)
        tip = 10**9
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def _sign_and_send(self, build: Callable[[int], dict[str, Any]], gas: int,
                       before_broadcast: Callable[[SentTx], None] | None = None) -> SentTx:
        with self._send_lock:
            nonce = self._take_nonce()
            try:
                tx = guard(lambda: build(nonce))
                signed = self.account.sign_transaction(tx)
                sent = SentTx(HexBytes(signed.hash), nonce, gas)
                if before_broadcast is not None:
                    before_broadcast(sent)
                tx_hash = guard(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction))
            except BaseException:
                self._release_nonce(nonce)
                raise
        return SentTx(HexBytes(tx_hash), nonce, gas)

    def wait(self, tx_hash: bytes | str, *, confirmations: int | None = None,
             timeout: float | None = None) -> TxReceipt:
        """Wait for the receipt and N confirmations; a failed transaction raises its decoded revert."""
        confirmations = self.confirmations if confirmations is None else confirmations
        timeout = self.receipt_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        receipt = None
        while receipt is None:
            receipt = self.get_receipt(tx_hash)
            if receipt is None:
                if time.monotonic() > deadline:
                    raise TransactionTimeout(f"no receipt for {HexBytes(tx_hash).hex()} after {timeout:.0f}s")
                time.sleep(self.poll_interval)
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
        url = getattr(getattr(exc, "request", None), "url", None)
        where = f" at {url}" if url else ""
        raise ChainUnreachable(f"the chain does not answer{where} ({type(exc).__name__})") from None
    except Exception as exc:
        typed = as_revert(exc)
        if typed is not None:
            raise typed from None
        from web3.exceptions import ProviderConnectionError

        if isinstance(exc, ProviderConnectionError):
            raise ChainUnreachable(f"the chain does not answer: {exc}") from None
        raise


def connect(settings: Settings | None = None, *, account: LocalAccount | None = None, read_only: bool = False,
            timeout: float = 10.0) -> ChainClient:
    """Connect to the configured chain as the configured account (see the module docstring).

    `read_only`: a reader (the API, the indexer) needs no account; without a configured one it gets a
    throwaway address, which can call views but holds nothing to send transactions with.
    """
    settings = settings or get_settings()
    url = resolve_rpc(settings)
    if url == ETH_TESTER:
        _, w3 = shared_in_process_web3()
        backend = ETH_TESTER
    else:
        w3 = http_web3(url, timeout=timeout)
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
    return ChainClient(w3, account, confirmations=settings.confirmations, backend=backend, _chain_id=chain_id)
