"""Deploy contracts and record where they live, per chain, in ``{CARDPROOF_HOME}/deployments.json``.

A record is trusted only while the chain still has the recorded contract's code at its address, so a
fresh in-process chain or a wiped anvil gets a new deployment instead of a dangling address.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hexbytes import HexBytes
from web3 import Web3

from chain.artifacts import load_artifact
from chain.client import ChainClient, guard
from chain.errors import NotDeployed

REGISTRY = "CardRegistry"


@dataclass(frozen=True)
class Deployment:
    name: str
    chain_id: int
    address: str
    block_number: int
    tx_hash: str
    deployer: str
    source_hash: str
    deployed_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _path(home: Path) -> Path:
    return home / "deployments.json"


def _load_all(home: Path) -> dict[str, dict[str, dict[str, Any]]]:
    try:
        return json.loads(_path(home).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _save(home: Path, record: Deployment) -> None:
    data = _load_all(home)
    data.setdefault(str(record.chain_id), {})[record.name] = record.to_json()
    home.mkdir(parents=True, exist_ok=True)
    tmp = _path(home).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, _path(home))


def recorded(home: Path, chain_id: int, name: str) -> Deployment | None:
    raw = _load_all(home).get(str(chain_id), {}).get(name)
    return Deployment(**raw) if raw else None


def is_live(client: ChainClient, record: Deployment) -> bool:
    """Whether the chain still holds the recorded deployment of `record.name` at its address.

    Contracts with immutables (CardEscrow keeps its registry in one, TestStablecoin its EIP-712 domain) never
    match the artifact's runtime code byte for byte. So the code must be identical, or of the same length
    with the recorded creation transaction still on chain, having created that address from the artifact's
    creation code.
    """
    from web3.exceptions import TransactionNotFound

    art = load_artifact(record.name)
    code = HexBytes(guard(lambda: client.w3.eth.get_code(record.address)))
    expected = HexBytes(art.deployed_bytecode)
    if code == expected:
        return True
    if len(code) != len(expected):
        return False
    try:
        tx = guard(lambda: client.w3.eth.get_transaction(record.tx_hash))
        receipt = guard(lambda: client.w3.eth.get_transaction_receipt(record.tx_hash))
    except TransactionNotFound:
        return False
    if tx is None or receipt is None or receipt.get("contractAddress") is None:
        return False
    return (Web3.to_checksum_address(receipt["contractAddress"]) == Web3.to_checksum_address(record.address)
            and HexBytes(tx["input"]).startswith(HexBytes(art.bytecode)))


def find(client: ChainClient, home: Path, name: str) -> Deployment:
    """The live deployment of `name` on the client's chain, or NotDeployed."""
    record = recorded(home, client.chain_id, name)
    if record is None or not is_live(client, record):
        raise NotDeployed(f"{name} is not deployed on chain {client.chain_id}: run `cardproof deploy`")
    return record


def deploy(client: ChainClient, home: Path, name: str, *args: Any, gas: int | None = None) -> tuple[Deployment, bool]:
    """Deploy `name` unless a live recorded deployment exists. Returns (record, created)."""
    existing = recorded(home, client.chain_id, name)
    if existing is not None and is_live(client, existing):
        return existing, False
    art = load_artifact(name)
    sent = client.send_deploy(art.abi, art.bytecode, *args, gas=gas)
    receipt = client.wait(sent.tx_hash)
    record = Deployment(
        name=name,
        chain_id=client.chain_id,
        address=receipt["contractAddress"],
        block_number=receipt["blockNumber"],
        tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
        deployer=client.address,
        source_hash=art.source_hash,
        deployed_at=time.time(),
    )
    _save(home, record)
    return record, True


def deploy_registry(client: ChainClient, home: Path, admin: str | None = None) -> tuple[Deployment, bool]:
    return deploy(client, home, REGISTRY, admin or client.address, gas=3_000_000)
