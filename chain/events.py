"""Read and decode contract events from a block range, ready for indexing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eth_utils.abi import event_abi_to_log_topic
from hexbytes import HexBytes
from web3._utils.events import get_event_data
from web3 import Web3

from chain.client import ChainClient, guard


@dataclass(frozen=True)
class ChainEvent:
    name: str
    args: dict[str, Any]
    address: str
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.tx_hash, self.log_index)


def _topic_table(abi: list[dict[str, Any]]) -> dict[bytes, dict[str, Any]]:
    """topic0 -> event ABI (tuple and array-of-tuple arguments included, via eth_utils)."""
    return {
        bytes(event_abi_to_log_topic(item)): item
        for item in abi
        if item.get("type") == "event" and not item.get("anonymous")
    }


def read_events(client: ChainClient, contracts: Iterable[tuple[str, list[dict[str, Any]]]],
                from_block: int, to_block: int, names: Iterable[str] | None = None,
                chunk: int = 5_000) -> list[ChainEvent]:
    """Events of the given (address, abi) contracts in [from_block, to_block], in chain order."""
    wanted = set(names) if names is not None else None
    tables: dict[str, dict[bytes, dict[str, Any]]] = {}
    for address, abi in contracts:
        tables[Web3.to_checksum_address(address)] = _topic_table(abi)
    if not tables or to_block < from_block:
        return []
    out: list[ChainEvent] = []
    codec = client.w3.codec
    start = from_block
    while start <= to_block:
        end = min(to_block, start + chunk - 1)
        logs = guard(lambda s=start, e=end: client.w3.eth.get_logs(
            {"fromBlock": s, "toBlock": e, "address": list(tables)}))
        for log in logs:
            table = tables.get(Web3.to_checksum_address(log["address"]))
            if not table or not log["topics"]:
                continue
            abi = table.get(bytes(log["topics"][0]))
            if abi is None or (wanted is not None and abi["name"] not in wanted):
                continue
            data = get_event_data(codec, abi, log)
            out.append(ChainEvent(
                name=abi["name"],
                args=dict(data["args"]),
                address=Web3.to_checksum_address(log["address"]),
                block_number=int(log["blockNumber"]),
                block_hash=HexBytes(log["blockHash"]).to_0x_hex(),
                tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
                log_index=int(log["logIndex"]),
            ))
        start = end + 1
    out.sort(key=lambda e: (e.block_number, e.log_index))
    return out
