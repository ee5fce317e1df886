"""Typed wrapper over the CardRegistry contract (contracts/CardRegistry.sol).

A call refused for a missing role (granting or revoking issuers as a non-admin, anchoring or appointing a
redeemer as a non-issuer) raises :class:`chain.errors.RoleRequired`, whose message names the role and who holds
or grants it (chain.reverts.naming_roles), never a role hash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.types import TxReceipt

from chain.artifacts import load_artifact
from chain.client import ChainClient, SentTx
from chain.deployments import REGISTRY, find
from chain.reverts import naming_roles, role_holders

ISSUER_ROLE = Web3.keccak(text="ISSUER_ROLE")
DEFAULT_ADMIN_ROLE = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
BATCH_ANCHORED_TOPIC = "0x" + bytes(Web3.keccak(
    text="BatchAnchored(bytes32,address,bytes32,uint256,bytes32,uint32,uint64)")).hex()


class CardStatus(IntEnum):
    """Mirrors the Solidity enum CardStatus."""

    UNKNOWN = 0
    VALID = 1
    REVOKED = 2
    REDEEMED = 3
    EXPIRED = 4


@dataclass(frozen=True)
class ProductSpec:
    """A product as the registry keeps it: SKU (bytes32, ASCII right-padded with zero bytes), face value in minor
    units, ISO 4217 currency (bytes3) -- the leaf's own encodings."""

    sku: bytes
    face_value: int
    currency: bytes

    def __post_init__(self) -> None:
        if (len(self.sku) != 32 or len(self.currency) != 3 or not self.sku.strip(b"\0")
                or not self.currency.strip(b"\0") or self.face_value <= 0):
            raise ValueError(f"not a product: {self!r}")

    @classmethod
    def of(cls, sku: str | bytes, face_value: int, currency: str | bytes) -> ProductSpec:
        raw = sku.encode("ascii") if isinstance(sku, str) else bytes(sku)
        cur = currency.upper().encode("ascii") if isinstance(currency, str) else bytes(currency)
        if len(raw) > 32:
            raise ValueError(f"SKU longer than 32 bytes: {sku!r}")
        return cls(raw.ljust(32, b"\0"), int(face_value), cur)

    def as_tuple(self) -> tuple[bytes, int, bytes]:
        return (self.sku, self.face_value, self.currency)

    @property
    def sku_text(self) -> str:
        return self.sku.rstrip(b"\0").decode("ascii", errors="replace")

    @property
    def currency_text(self) -> str:
        return self.currency.decode("ascii", errors="replace")


#: The product that tooling anchors roots of no real cards with (gas benches, tests of the registry's rules).
#: Real batches are anchored with their own product: ``issuer.anchoring`` passes the batch's.
PLACEHOLDER_PRODUCT = ProductSpec.of("PLACEHOLDER", 1, "USD")


@dataclass(frozen=True)
class OnChainBatch:
    batch_id: bytes
    root: bytes
    issuer: str
    card_count: int
    anchored_at: int
    revoked: bool
    revoke_reason: int
    product_id: int = 0
    expiry: int = 0

    @property
    def anchored(self) -> bool:
        return self.anchored_at != 0


def batch_id_owner(batch_id: bytes) -> str:
    """The address encoded in a batch id's first 20 bytes."""
    return Web3.to_checksum_address(batch_id[:20])


# Gas limits given explicitly (estimation is slow on eth-tester); generous upper bounds of measured use.
GAS_ANCHOR = 150_000
GAS_GRANT = 120_000


def _gas_bitmap(indices: Sequence[int]) -> int:
    """Gas limit of a revokeCards/markRedeemed call: each bitmap word beyond the first costs a storage write
    (about 22k gas when fresh), two cold reads and an event (about 27k in all), on top of ~1.2k per index."""
    words = len({i >> 8 for i in indices})
    return 120_000 + 1_500 * len(indices) + 32_000 * max(words - 1, 0)


class Registry:
    def __init__(self, client: ChainClient, address: str) -> None:
        self.client = client
        self.address = Web3.to_checksum_address(address)
        self.contract = client.contract(self.address, load_artifact(REGISTRY).abi)

    @classmethod
    def deployed(cls, client: ChainClient, home: Path) -> Registry:
        return cls(client, find(client, home, REGISTRY).address)

    def as_account(self, client: ChainClient) -> Registry:
        return Registry(client, self.address)

    @property
    def fn(self) -> Any:
        return self.contract.functions

    # ---------------------------------------------------------------- roles

    def grant_issuer(self, address: str, name: str | None = None) -> TxReceipt:
        """Grant ISSUER_ROLE; with ``name``, through ``grantIssuer``, which also records the display name on chain."""
        who = Web3.to_checksum_address(address)
        with self._roles():
            if name is None:
                return self.client.transact(self.fn.grantRole(ISSUER_ROLE, who), gas=GAS_GRANT)
            return self.client.transact(self.fn.grantIssuer(who, name),
                                        gas=GAS_GRANT + 25_000 * (len(name.encode()) // 32 + 1))

    def issuer_name(self, address: str, block: Any = "latest") -> str:
        """The display name the platform recorded on chain for ``address`` ("" when none)."""
        raw = self.fn.issuerName(Web3.to_checksum_address(address)).call(block_identifier=block)
        return raw if isinstance(raw, str) else bytes(raw).decode("utf-8", errors="replace")

    def revoke_issuer(self, address: str) -> TxReceipt:
        with self._roles():
            return self.client.transact(self.fn.revokeRole(ISSUER_ROLE, Web3.to_checksum_address(address)),
                                        gas=GAS_GRANT)

    def _roles(self) -> Any:
        """Context in which a role revert becomes a RoleRequired naming the role and its holders."""
        return naming_roles(self.client, self.address, contract=REGISTRY)

    def admins(self) -> list[str]:
        """The accounts holding the registry's admin role (from its RoleGranted events)."""
        return role_holders(self.client, self.address, DEFAULT_ADMIN_ROLE, contract=REGISTRY)

    def is_issuer(self, address: str) -> bool:
        return bool(self.client.call(self.fn.hasRole(ISSUER_ROLE, Web3.to_checksum_address(address))))

    def is_admin(self, address: str) -> bool:
        return bool(self.client.call(self.fn.hasRole(DEFAULT_ADMIN_ROLE, Web3.to_checksum_address(address))))

    def set_redeemer(self, redeemer: str, allowed: bool = True) -> TxReceipt:
        with self._roles():
            return self.client.transact(self.fn.setRedeemer(Web3.to_checksum_address(redeemer), allowed),
                                        gas=GAS_GRANT)

    def is_redeemer(self, issuer: str, redeemer: str) -> bool:
        return bool(self.client.call(self.fn.isRedeemer(Web3.to_checksum_address(issuer),
                                                        Web3.to_checksum_address(redeemer))))

    # ---------------------------------------------------------------- writes

    def send_anchor(self, batch_id: bytes, root: bytes, card_count: int, manifest_hash: bytes, *,
                    product: ProductSpec, expiry: int,
                    before_broadcast: Callable[[SentTx], None] | None = None) -> SentTx:
        call = self.fn.anchorBatch(batch_id, root, card_count, manifest_hash, product.as_tuple(), expiry)
        with self._roles():
            return self.client.send(call, gas=GAS_ANCHOR + self._new_product_gas(product),
                                    before_broadcast=before_broadcast)

    def _new_product_gas(self, product: ProductSpec) -> int:
        """Extra gas when the anchor registers its product (three fresh slots and an event)."""
        return 0 if self.product_id_of(product) else 90_000

    def anchor_event(self, batch_id: bytes, *, tx_hash: str | None = None, from_block: int = 0) -> dict[str, Any] | None:
        """Transaction and block of the BatchAnchored log of `batch_id`: from the receipt of `tx_hash` when it
        holds that log, else by scanning the registry's logs for the batch id's indexed topic."""
        from chain.client import guard

        # Topics as hex strings: eth-tester matches nothing when HexBytes and str topics are mixed.
        topics = [BATCH_ANCHORED_TOPIC, "0x" + batch_id.hex()]
        if tx_hash:
            receipt = self.client.get_receipt(tx_hash)
            if receipt is not None and receipt["status"] == 1 and any(
                    log["address"].lower() == self.address.lower()
                    and ["0x" + bytes(t).hex() for t in log["topics"][:2]] == topics for log in receipt["logs"]):
                return {"tx_hash": tx_hash, "block_number": int(receipt["blockNumber"])}
        logs = guard(lambda: self.client.w3.eth.get_logs({
            "address": self.address, "fromBlock": from_block, "toBlock": "latest", "topics": topics,
        }))
        if not logs:
            return None
        log = logs[0]
        return {"tx_hash": "0x" + bytes(log["transactionHash"]).hex(), "block_number": int(log["blockNumber"])}

    def anchor_batch(self, batch_id: bytes, root: bytes, card_count: int, manifest_hash: bytes,
                     product: ProductSpec = PLACEHOLDER_PRODUCT, expiry: int = 0,
                     on_sent: Callable[[SentTx], None] | None = None) -> TxReceipt:
        call = self.fn.anchorBatch(batch_id, root, card_count, manifest_hash, product.as_tuple(), expiry)
        with self._roles():
            return self.client.transact(call, gas=GAS_ANCHOR + self._new_product_gas(product), on_sent=on_sent)

    def revoke_cards(self, batch_id: bytes, indices: Sequence[int], reason: int) -> TxReceipt:
        indices = list(indices)
        return self.client.transact(self.fn.revokeCards(batch_id, indices, reason), gas=_gas_bitmap(indices))

    def revoke_batch(self, batch_id: bytes, reason: int) -> TxReceipt:
        return self.client.transact(self.fn.revokeBatch(batch_id, reason), gas=GAS_GRANT)

    def mark_redeemed(self, batch_id: bytes, indices: Sequence[int],
                      on_sent: Callable[[SentTx], None] | None = None) -> TxReceipt:
        indices = list(indices)
        return self.client.transact(self.fn.markRedeemed(batch_id, indices),
                                    gas=_gas_bitmap(indices), on_sent=on_sent)

    # ---------------------------------------------------------------- reads

    def batch(self, batch_id: bytes, block: Any = "latest") -> OnChainBatch:
        root, issuer, count, at, revoked, reason, product_id, expiry = self.client.call(self.fn.batch(batch_id), block)
        return OnChainBatch(batch_id, bytes(root), issuer, count, at, revoked, reason, product_id, expiry)

    def product(self, product_id: int, block: Any = "latest") -> ProductSpec | None:
        """Product ``product_id``, or None when the registry has none by that id."""
        sku, face, currency = self.client.call(self.fn.product(product_id), block)
        if not face:
            return None
        return ProductSpec(bytes(sku), int(face), bytes(currency))

    def product_id_of(self, product: ProductSpec, block: Any = "latest") -> int:
        """The id of ``product`` (0 when no batch of it was ever anchored)."""
        return int(self.client.call(self.fn.productIdOf(*product.as_tuple()), block))

    def is_revoked(self, batch_id: bytes, index: int) -> bool:
        return bool(self.client.call(self.fn.isRevoked(batch_id, index)))

    def is_redeemed(self, batch_id: bytes, index: int) -> bool:
        return bool(self.client.call(self.fn.isRedeemed(batch_id, index)))

    def revoked_word(self, batch_id: bytes, word: int, block: Any = "latest") -> int:
        return int(self.client.call(self.fn.revokedWord(batch_id, word), block))

    def redeemed_word(self, batch_id: bytes, word: int, block: Any = "latest") -> int:
        return int(self.client.call(self.fn.redeemedWord(batch_id, word), block))

    def leaf_hash(self, leaf: tuple[Any, ...]) -> bytes:
        return bytes(self.client.call(self.fn.leafHash(leaf)))

    def verify_card(self, leaf: tuple[Any, ...], proof: Sequence[bytes]) -> tuple[bool, CardStatus]:
        authentic, status = self.client.call(self.fn.verifyCard(leaf, list(proof)))
        return bool(authentic), CardStatus(status)
