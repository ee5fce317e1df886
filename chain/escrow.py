"""Typed wrapper over the CardEscrow contract (contracts/CardEscrow.sol) and the dev-chain stablecoin.

Opening an order checks what would make it revert first (token allowlisted, supplier an issuer, quantity and
price in range, the buyer's balance and allowance) and raises the same typed errors the chain would
(:class:`chain.errors.TokenNotAllowed`, :class:`chain.errors.ERC20InsufficientAllowance`, ...), so callers
never pay for a doomed transaction. Every other call is simulated by :class:`chain.client.ChainClient`
before it is sent, so reverts come back typed too. A call refused for a missing role raises
:class:`chain.errors.RoleRequired`, whose message names the role and the accounts holding it ("run this as the
admin 0xf39F..."), never a role hash.

Disputes end: ``dispute`` gives the dispute a deadline (``Order.dispute_deadline``); an arbiter may ``resolve`` it
until then, after which ``release`` settles it with the default outcome (the settlement of an undisputed release).
The buyer may ``withdraw_dispute``. Arbiters are managed with ``grant_arbiter`` / ``revoke_arbiter`` /
``arbiters`` (AccessControlEnumerable); the escrow is deployed with one (``deploy_escrow(arbiter=...)``).

Orders name a registry product (``open_order(supplier, product_id, ...)``) and a seal key (by default the buyer's
account key, :func:`account_seal_key`); ``deliver`` records the sealed delivery's hash. In a membership dispute
(``dispute_membership``) the supplier proves the delivered cards with ``prove_delivery`` (a multiproof).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeVar

from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.logs import DISCARD
from web3.types import TxReceipt

from chain.artifacts import load_artifact
from chain.client import ChainClient
from chain.deployments import Deployment, deploy, find
from chain.errors import (
    AccessControlUnauthorizedAccount,
    ChainError,
    ERC20InsufficientAllowance,
    ERC20InsufficientBalance,
    InvalidQuantity,
    InvalidUnitPrice,
    RoleRequired,
    SupplierNotIssuer,
    TokenNotAllowed,
)
from chain.registry import ISSUER_ROLE

ESCROW = "CardEscrow"
STABLECOIN = "TestStablecoin"
ARBITER_ROLE = Web3.keccak(text="ARBITER_ROLE")
DEFAULT_ADMIN_ROLE = b"\0" * 32
#: Names of the escrow's roles, as people say them (errors, CLI).
ROLE_NAMES = {bytes(DEFAULT_ADMIN_ROLE): "admin", bytes(ARBITER_ROLE): "arbiter"}
MAX_UINT256 = 2**256 - 1
UINT96_MAX = 2**96 - 1

# Gas limits given explicitly (estimation is slow on eth-tester): generous bounds over measured use.
GAS_ADMIN = 200_000
GAS_OPEN = 300_000
GAS_OPEN_PERMIT = 380_000
GAS_SIMPLE = 150_000
GAS_WITHDRAW = 200_000

#: The subset of ERC-20 (+ EIP-2612 / ERC-5267) the wrapper uses. `approve` and `transfer` declare no
#: outputs so the same ABI drives tokens that return nothing (USDT-like).
ERC20_ABI: list[dict[str, Any]] = [
    {"type": "function", "name": "balanceOf", "stateMutability": "view",
     "inputs": [{"name": "account", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "allowance", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "approve", "stateMutability": "nonpayable",
     "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}], "outputs": []},
    {"type": "function", "name": "transfer", "stateMutability": "nonpayable",
     "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}], "outputs": []},
    {"type": "function", "name": "name", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
    {"type": "function", "name": "symbol", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
    {"type": "function", "name": "decimals", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint8"}]},
    {"type": "function", "name": "nonces", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "permit", "stateMutability": "nonpayable",
     "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"}, {"name": "deadline", "type": "uint256"},
                {"name": "v", "type": "uint8"}, {"name": "r", "type": "bytes32"}, {"name": "s", "type": "bytes32"}],
     "outputs": []},
    {"type": "function", "name": "eip712Domain", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "fields", "type": "bytes1"}, {"name": "name", "type": "string"},
                 {"name": "version", "type": "string"}, {"name": "chainId", "type": "uint256"},
                 {"name": "verifyingContract", "type": "address"}, {"name": "salt", "type": "bytes32"},
                 {"name": "extensions", "type": "uint256[]"}]},
]


class OrderStatus(IntEnum):
    """Mirrors the Solidity enum OrderStatus."""

    NONE = 0
    FUNDED = 1
    DELIVERED = 2
    DISPUTED = 3
    CONFIRMED = 4
    RELEASED = 5
    RESOLVED = 6
    CANCELLED = 7

    @property
    def settled(self) -> bool:
        return self in (OrderStatus.CONFIRMED, OrderStatus.RELEASED, OrderStatus.RESOLVED, OrderStatus.CANCELLED)


@dataclass(frozen=True)
class CardRange:
    """Cards start .. start + length - 1 of a batch."""

    start: int
    length: int

    @property
    def stop(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class Order:
    order_id: int
    buyer: str
    supplier: str
    token: str
    quantity: int
    unit_price: int
    amount: int
    fee_bps: int
    delivery_deadline: int
    dispute_window: int
    status: OrderStatus
    delivered_at: int
    batch_id: bytes
    range_count: int

    @property
    def exists(self) -> bool:
        return self.status != OrderStatus.NONE

    #: When the current (or last settled) dispute ends unresolved; 0 if never disputed or withdrawn to Delivered.
    dispute_deadline: int = 0
    #: The ordered product (registry product id); after delivery the batch's, which delivery checked equal.
    product_id: int = 0
    #: The earliest expiry the cards may have (0 = any); 0 once delivered (the OrderOpened event keeps it).
    min_expiry: int = 0
    #: keccak256 of the sealed delivery, b"" before delivery.
    sealed_hash: bytes = b""
    #: Whether the current (or last) dispute is a membership dispute, and how many cards were proven in it.
    membership_dispute: bool = False
    proven_count: int = 0

    @property
    def dispute_window_end(self) -> int | None:
        """When disputes stop and release becomes possible; None before delivery."""
        return self.delivered_at + self.dispute_window if self.delivered_at else None

    def releasable_at(self) -> int | None:
        """From when anyone may settle the order with the default outcome (release); None when not now or later."""
        if self.status == OrderStatus.DELIVERED:
            return self.dispute_window_end
        if self.status == OrderStatus.DISPUTED:
            return self.dispute_deadline
        return None


@dataclass(frozen=True)
class Rules:
    fee_bps: int
    max_fee_bps: int
    fee_recipient: str
    max_delivery_period: int
    min_dispute_window: int
    max_dispute_window: int
    max_quantity: int
    max_ranges: int
    #: Time an arbiter has to resolve a dispute, from when it is raised.
    dispute_resolution_period: int
    #: Floor of every window rule (1 hour).
    window_floor: int
    #: Ceiling of dispute_resolution_period (90 days).
    max_dispute_resolution_period: int


@dataclass(frozen=True)
class Settlement:
    """What a confirm / release credited (from the OrderConfirmed / OrderReleased event)."""

    order_id: int
    revoked_cards: int
    supplier_amount: int
    fee: int
    buyer_refund: int
    receipt: TxReceipt
    #: The release settled a dispute that ended without a ruling (DisputeExpired), with the default outcome.
    dispute_expired: bool = False


@dataclass(frozen=True)
class DisputeWithdrawal:
    """A withdrawn dispute: the order is Delivered again, or (``settled``) it was released at once."""

    order_id: int
    settled: bool
    settlement: Settlement | None
    receipt: TxReceipt


@dataclass(frozen=True)
class Permit:
    """An EIP-2612 permit signature."""

    value: int
    deadline: int
    v: int
    r: bytes
    s: bytes


def sku_bytes(sku: bytes | str) -> bytes:
    """A SKU as bytes32: ASCII right-padded with zero bytes (as in the card leaf)."""
    raw = sku.encode("ascii") if isinstance(sku, str) else bytes(sku)
    if len(raw) > 32:
        raise ValueError(f"SKU longer than 32 bytes: {sku!r}")
    return raw.ljust(32, b"\0")


def _ranges(ranges: Iterable[CardRange | tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for r in ranges:
        start, length = (r.start, r.length) if isinstance(r, CardRange) else r
        out.append((int(start), int(length)))
    return out


def _words_touched(ranges: Sequence[tuple[int, int]]) -> int:
    return sum(((s + n - 1) >> 8) - (s >> 8) + 1 for s, n in ranges if n > 0)


def gas_deliver(ranges: Sequence[tuple[int, int]]) -> int:
    return 185_000 + 45_000 * _words_touched(ranges) + 30_000 * len(ranges)


def gas_prove(cards: int, proof_nodes: int) -> int:
    """Gas limit of a proveDelivery call: a leaf rebuilt and hashed, a bit set and calldata per card."""
    return 250_000 + 9_000 * cards + 2_000 * proof_nodes


@dataclass(frozen=True)
class ProvenCard:
    """The public leaf fields of a delivered card that proveDelivery takes (the rest comes from the batch)."""

    index: int
    serial: int
    code_form: int
    code_commitment: bytes

    def as_tuple(self) -> tuple[int, int, int, bytes]:
        return (self.index, self.serial, self.code_form, self.code_commitment)


def account_seal_key(client: ChainClient) -> bytes:
    """The compressed secp256k1 public key of the client's account: the default seal key of its orders."""
    from eth_keys import keys

    return keys.PrivateKey(bytes(client.account.key)).public_key.to_compressed_bytes()


def gas_settle(words: int) -> int:
    return 160_000 + 12_000 * words


_T = TypeVar("_T")


class Token:
    """A minimal ERC-20 handle (works with tokens whose approve/transfer return nothing)."""

    def __init__(self, client: ChainClient, address: str) -> None:
        self.client = client
        self.address = to_checksum_address(address)
        self.contract = client.contract(self.address, ERC20_ABI)

    def as_account(self, client: ChainClient) -> Token:
        return Token(client, self.address)

    def balance_of(self, account: str) -> int:
        return int(self.client.call(self.contract.functions.balanceOf(to_checksum_address(account))))

    def allowance(self, owner: str, spender: str) -> int:
        return int(self.client.call(self.contract.functions.allowance(to_checksum_address(owner),
                                                                      to_checksum_address(spender))))

    def approve(self, spender: str, amount: int) -> TxReceipt:
        return self.client.transact(self.contract.functions.approve(to_checksum_address(spender), amount),
                                    gas=GAS_SIMPLE)

    def transfer(self, to: str, amount: int) -> TxReceipt:
        return self.client.transact(self.contract.functions.transfer(to_checksum_address(to), amount),
                                    gas=GAS_SIMPLE)

    def name(self) -> str:
        return str(self.client.call(self.contract.functions.name()))

    def nonce(self, owner: str) -> int:
        return int(self.client.call(self.contract.functions.nonces(to_checksum_address(owner))))

    def domain(self) -> dict[str, Any]:
        """The EIP-712 domain of the token's permits: ERC-5267 if offered, else (name, "1")."""
        try:
            _, name, version, chain_id, verifying, _, _ = self.client.call(self.contract.functions.eip712Domain())
            return {"name": name, "version": version, "chainId": int(chain_id),
                    "verifyingContract": to_checksum_address(verifying)}
        except ChainError:
            return {"name": self.name(), "version": "1", "chainId": self.client.chain_id,
                    "verifyingContract": self.address}

    def sign_permit(self, spender: str, value: int, deadline: int, nonce: int | None = None) -> Permit:
        """Sign an EIP-2612 permit of the client's account for `spender` (nothing is sent)."""
        owner = self.client.address
        message = {
            "owner": owner,
            "spender": to_checksum_address(spender),
            "value": int(value),
            "nonce": self.nonce(owner) if nonce is None else nonce,
            "deadline": int(deadline),
        }
        types = {"Permit": [
            {"name": "owner", "type": "address"},
            {"name": "spender", "type": "address"},
            {"name": "value", "type": "uint256"},
            {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"},
        ]}
        signed = self.client.account.sign_typed_data(self.domain(), types, message)
        return Permit(int(value), int(deadline), signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big"))

    def submit_permit(self, owner: str, spender: str, permit: Permit) -> TxReceipt:
        """Send a permit signed by `owner` (anyone may send it)."""
        fn = self.contract.functions.permit(to_checksum_address(owner), to_checksum_address(spender), permit.value,
                                            permit.deadline, permit.v, permit.r, permit.s)
        return self.client.transact(fn, gas=GAS_SIMPLE)


class Escrow:
    """The CardEscrow as seen by one account (`client`)."""

    def __init__(self, client: ChainClient, address: str) -> None:
        self.client = client
        self.address = to_checksum_address(address)
        self.contract = client.contract(self.address, load_artifact(ESCROW).abi)
        self._registry: str | None = None

    @classmethod
    def deployed(cls, client: ChainClient, home: Path) -> Escrow:
        return cls(client, find(client, home, ESCROW).address)

    def as_account(self, client: ChainClient) -> Escrow:
        other = Escrow(client, self.address)
        other._registry = self._registry
        return other

    @property
    def fn(self) -> Any:
        return self.contract.functions

    def token(self, address: str) -> Token:
        return Token(self.client, address)

    # ---------------------------------------------------------------- admin

    def set_tokens_allowed(self, tokens: Sequence[str], allowed: bool = True) -> TxReceipt:
        addrs = [to_checksum_address(t) for t in tokens]
        fn = self.fn.setTokensAllowed(addrs, allowed)
        return self._with_role(lambda: self.client.transact(fn, gas=GAS_ADMIN + 60_000 * len(addrs)))

    def set_fee(self, fee_bps: int) -> TxReceipt:
        return self._with_role(lambda: self.client.transact(self.fn.setFee(fee_bps), gas=GAS_ADMIN))

    def set_fee_recipient(self, recipient: str) -> TxReceipt:
        n = len(self.client.call(self.fn.tokenList()))
        fn = self.fn.setFeeRecipient(to_checksum_address(recipient))
        return self._with_role(lambda: self.client.transact(fn, gas=GAS_ADMIN + 40_000 * n))

    def set_window_rules(self, max_delivery_period: int, min_dispute_window: int, max_dispute_window: int,
                         dispute_resolution_period: int | None = None) -> TxReceipt:
        """Set the window rules (admin); the resolution period stays as it is unless given."""
        if dispute_resolution_period is None:
            dispute_resolution_period = self.rules().dispute_resolution_period
        fn = self.fn.setWindowRules(max_delivery_period, min_dispute_window, max_dispute_window,
                                    dispute_resolution_period)
        return self._with_role(lambda: self.client.transact(fn, gas=GAS_ADMIN))

    # ---------------------------------------------------------------- roles

    def grant_arbiter(self, account: str) -> TxReceipt:
        """Grant ARBITER_ROLE (admin only); granting it to an arbiter again changes nothing (no event)."""
        self.require_role(DEFAULT_ADMIN_ROLE)
        fn = self.fn.grantRole(ARBITER_ROLE, to_checksum_address(account))
        return self._with_role(lambda: self.client.transact(fn, gas=GAS_ADMIN))

    def revoke_arbiter(self, account: str) -> TxReceipt:
        """Revoke ARBITER_ROLE (admin only); revoking it from a non-arbiter changes nothing (no event).
        Disputes already raised keep their deadlines: without an arbiter they end with the default outcome."""
        self.require_role(DEFAULT_ADMIN_ROLE)
        fn = self.fn.revokeRole(ARBITER_ROLE, to_checksum_address(account))
        return self._with_role(lambda: self.client.transact(fn, gas=GAS_ADMIN))

    def is_arbiter(self, account: str) -> bool:
        return self.has_role(ARBITER_ROLE, account)

    def has_role(self, role: bytes, account: str) -> bool:
        return bool(self.client.call(self.fn.hasRole(role, to_checksum_address(account))))

    def require_role(self, role: bytes) -> None:
        """Raise RoleRequired (nothing sent) unless the client's account holds `role`."""
        if not self.has_role(role, self.client.address):
            raise self.role_error(AccessControlUnauthorizedAccount(
                "AccessControlUnauthorizedAccount", None, account=self.client.address.lower(), needed_role=role))

    def role_members(self, role: bytes) -> list[str]:
        """Every holder of `role` (AccessControlEnumerable), in the contract's order."""
        return [to_checksum_address(a) for a in self.client.call(self.fn.getRoleMembers(role))]

    def arbiters(self) -> list[str]:
        return self.role_members(ARBITER_ROLE)

    def admins(self) -> list[str]:
        return self.role_members(DEFAULT_ADMIN_ROLE)

    def _with_role(self, action: Callable[[], _T]) -> _T:
        """Run `action`; a missing role becomes a RoleRequired that names the role and its holders."""
        try:
            return action()
        except RoleRequired:
            raise
        except AccessControlUnauthorizedAccount as exc:
            raise self.role_error(exc) from None

    def role_error(self, exc: AccessControlUnauthorizedAccount) -> RoleRequired:
        """The readable form of a role revert: who lacks which role, and who holds it (chain.reverts.role_required)."""
        from chain.reverts import role_required

        return role_required(self.client, self.address, exc, contract=ESCROW)

    # ---------------------------------------------------------------- opening

    @property
    def registry_address(self) -> str:
        if self._registry is None:
            self._registry = to_checksum_address(self.client.call(self.fn.registry()))
        return self._registry

    def preflight_open(self, supplier: str, quantity: int, token: str, unit_price: int,
                       *, check_allowance: bool = True) -> int:
        """Raise the typed error an openOrder would revert with for these reasons; returns the amount.

        Checks the token allowlist, the supplier's ISSUER_ROLE, quantity and price bounds, then the
        buyer's balance and (unless a permit will set it) allowance.
        """
        token = to_checksum_address(token)
        supplier = to_checksum_address(supplier)
        # Addresses in the errors are lowercase, exactly as decoded from a revert.
        if not self.is_token_allowed(token):
            raise TokenNotAllowed(token=token.lower())
        max_quantity = int(self.client.call(self.fn.MAX_QUANTITY()))
        if not 0 < quantity <= max_quantity:
            raise InvalidQuantity(quantity=quantity, max_quantity=max_quantity)
        if not 0 < unit_price <= UINT96_MAX:
            raise InvalidUnitPrice(unit_price=unit_price)
        registry = self.client.contract(self.registry_address, load_artifact("CardRegistry").abi)
        if not self.client.call(registry.functions.hasRole(ISSUER_ROLE, supplier)):
            raise SupplierNotIssuer(supplier=supplier.lower())
        amount = quantity * unit_price
        erc20 = self.token(token)
        balance = erc20.balance_of(self.client.address)
        if balance < amount:
            raise ERC20InsufficientBalance(sender=self.client.address.lower(), balance=balance, needed=amount)
        if check_allowance:
            allowance = erc20.allowance(self.client.address, self.address)
            if allowance < amount:
                raise ERC20InsufficientAllowance(spender=self.address.lower(), allowance=allowance, needed=amount)
        return amount

    def approve(self, token: str, amount: int = MAX_UINT256) -> TxReceipt:
        """Approve the escrow to pull `amount` of `token` from the client's account."""
        return self.token(token).approve(self.address, amount)

    def _terms(self, supplier: str, product_id: int, quantity: int, token: str, unit_price: int,
               delivery_deadline: int, dispute_window: int, min_expiry: int) -> tuple[Any, ...]:
        return (to_checksum_address(supplier), int(product_id), int(min_expiry), quantity,
                to_checksum_address(token), unit_price, delivery_deadline, dispute_window)

    def open_order(self, supplier: str, product_id: int, quantity: int, token: str, unit_price: int,
                   delivery_deadline: int, dispute_window: int, *, min_expiry: int = 0, seal_key: bytes | None = None,
                   preflight: bool = True, gas: int | None = None) -> int:
        """Open and fund an order for ``quantity`` cards of registry product ``product_id``; returns its id (from
        the OrderOpened event). The codes will be sealed to ``seal_key`` (default: the buyer's account key)."""
        if preflight:
            self.preflight_open(supplier, quantity, token, unit_price)
        key = seal_key if seal_key is not None else account_seal_key(self.client)
        fn = self.fn.openOrder(self._terms(supplier, product_id, quantity, token, unit_price, delivery_deadline,
                                           dispute_window, min_expiry), key)
        return self._opened_id(self.client.transact(fn, gas=gas or GAS_OPEN))

    def sign_permit(self, token: str, amount: int, deadline: int) -> Permit:
        """The client's EIP-2612 permit letting the escrow pull `amount` of `token`."""
        return self.token(token).sign_permit(self.address, amount, deadline)

    def open_order_with_permit(self, supplier: str, product_id: int, quantity: int, token: str, unit_price: int,
                               delivery_deadline: int, dispute_window: int, *, permit: Permit | None = None,
                               permit_deadline: int | None = None, min_expiry: int = 0,
                               seal_key: bytes | None = None, preflight: bool = True,
                               gas: int | None = None) -> int:
        """Open an order approving the escrow with a permit in the same transaction; returns its id.

        The permit is signed here unless given. If it was already used (front-run), the order still opens
        on the allowance that permit set.
        """
        if preflight:
            amount = self.preflight_open(supplier, quantity, token, unit_price, check_allowance=False)
        else:
            amount = quantity * unit_price
        if permit is None:
            deadline = permit_deadline if permit_deadline is not None else delivery_deadline
            permit = self.sign_permit(token, amount, deadline)
        key = seal_key if seal_key is not None else account_seal_key(self.client)
        fn = self.fn.openOrderWithPermit(self._terms(supplier, product_id, quantity, token, unit_price,
                                                     delivery_deadline, dispute_window, min_expiry), key,
                                         permit.deadline, permit.v, permit.r, permit.s)
        return self._opened_id(self.client.transact(fn, gas=gas or GAS_OPEN_PERMIT))

    def _opened_id(self, receipt: TxReceipt) -> int:
        events = self.contract.events.OrderOpened().process_receipt(receipt, errors=DISCARD)
        if not events:
            raise ChainError(f"no OrderOpened event in {HexBytes(receipt['transactionHash']).to_0x_hex()}")
        return int(events[0]["args"]["orderId"])

    # ---------------------------------------------------------------- order life cycle

    def deliver(self, order_id: int, batch_id: bytes, ranges: Iterable[CardRange | tuple[int, int]],
                *, sealed_hash: bytes, gas: int | None = None) -> TxReceipt:
        """Assign cards `ranges` of the supplier's batch `batch_id` to the order (supplier only), recording the
        hash of their sealed delivery."""
        rs = _ranges(ranges)
        return self.client.transact(self.fn.deliver(order_id, batch_id, rs, sealed_hash), gas=gas or gas_deliver(rs))

    def send_deliver(self, order_id: int, batch_id: bytes, ranges: Iterable[CardRange | tuple[int, int]], *,
                     sealed_hash: bytes, before_broadcast: Callable[[Any], None] | None = None) -> Any:
        """Sign and broadcast a delivery without waiting (``before_broadcast`` sees the signed transaction)."""
        rs = _ranges(ranges)
        return self.client.send(self.fn.deliver(order_id, batch_id, rs, sealed_hash), gas=gas_deliver(rs),
                                before_broadcast=before_broadcast)

    def dispute_membership(self, order_id: int) -> TxReceipt:
        """Dispute that the delivered cards are in their batch at all (buyer, within the window): the supplier must
        prove them (``prove_delivery``) before the dispute's deadline, else the unproven ones are refunded."""
        return self.client.transact(self.fn.disputeMembership(order_id), gas=GAS_SIMPLE)

    def prove_delivery(self, order_id: int, cards: Sequence[ProvenCard], proof: Sequence[bytes],
                       flags: Sequence[bool], *, gas: int | None = None) -> TxReceipt:
        """Prove delivered cards of an order in a membership dispute (their leaf fields in the multiproof's leaf
        order, and the multiproof); settles the order when every card is proven."""
        fn = self.fn.proveDelivery(order_id, [c.as_tuple() for c in cards], list(proof), list(flags))
        return self.client.transact(fn, gas=gas or gas_prove(len(cards), len(proof)) + self.settle_gas(order_id))

    def confirm(self, order_id: int, *, gas: int | None = None) -> Settlement:
        """Accept the delivery and settle (buyer only)."""
        receipt = self.client.transact(self.fn.confirm(order_id), gas=gas or self.settle_gas(order_id))
        return self._settlement(receipt, "OrderConfirmed")

    def release(self, order_id: int, *, gas: int | None = None) -> Settlement:
        """Settle with the default outcome (anyone): a delivered order after its dispute window, or a disputed one
        after its dispute deadline (``Settlement.dispute_expired``)."""
        receipt = self.client.transact(self.fn.release(order_id), gas=gas or self.settle_gas(order_id))
        expired = bool(self.contract.events.DisputeExpired().process_receipt(receipt, errors=DISCARD))
        return self._settlement(receipt, "OrderReleased", dispute_expired=expired)

    def dispute(self, order_id: int) -> TxReceipt:
        """Dispute a delivery within its window (buyer); the dispute's deadline is in the OrderDisputed event and
        in ``order(order_id).dispute_deadline``."""
        return self.client.transact(self.fn.dispute(order_id), gas=GAS_SIMPLE)

    def withdraw_dispute(self, order_id: int, *, gas: int | None = None) -> DisputeWithdrawal:
        """Withdraw the buyer's dispute: Delivered again while the window is open and the deadline not passed,
        else settled at once with the default outcome."""
        receipt = self.client.transact(self.fn.withdrawDispute(order_id), gas=gas or self.settle_gas(order_id))
        (event,) = self.contract.events.DisputeWithdrawn().process_receipt(receipt, errors=DISCARD)
        settled = bool(event["args"]["settled"])
        settlement = self._settlement(receipt, "OrderReleased") if settled else None
        return DisputeWithdrawal(order_id, settled, settlement, receipt)

    def resolve(self, order_id: int, buyer_amount: int, supplier_amount: int) -> TxReceipt:
        """Split a disputed order's escrow (arbiter only, before the dispute's deadline); the fee applies to the
        supplier's share."""
        fn = self.fn.resolve(order_id, buyer_amount, supplier_amount)
        return self._with_role(lambda: self.client.transact(fn, gas=GAS_ADMIN))

    def cancel(self, order_id: int) -> TxReceipt:
        return self.client.transact(self.fn.cancel(order_id), gas=GAS_SIMPLE)

    def withdraw(self, token: str, to: str | None = None, *, gas: int | None = None) -> int:
        """Withdraw the client's whole credit in `token` (to `to`, default itself); returns the amount."""
        token = to_checksum_address(token)
        if to is None:
            fn = self.fn.withdraw(token)
        else:
            fn = self.fn.withdrawTo(token, to_checksum_address(to))
        receipt = self.client.transact(fn, gas=gas or GAS_WITHDRAW)
        events = self.contract.events.Withdrawn().process_receipt(receipt, errors=DISCARD)
        return int(events[0]["args"]["amount"]) if events else 0

    def settle_gas(self, order_id: int, ranges: Sequence[tuple[int, int]] | None = None) -> int:
        """Gas limit of settling the order (one registry read per 256-card word of its delivery). ``ranges``: the
        delivery's (start, length) ranges, when the caller has just read them (saves reading them again)."""
        if ranges is None:
            _, got = self.delivery(order_id)
            ranges = [(r.start, r.length) for r in got]
        return gas_settle(_words_touched(ranges) if ranges else 1)

    def _settlement(self, receipt: TxReceipt, event: str, *, dispute_expired: bool = False) -> Settlement:
        logs = getattr(self.contract.events, event)().process_receipt(receipt, errors=DISCARD)
        args = logs[0]["args"]
        return Settlement(int(args["orderId"]), int(args["revokedCards"]), int(args["supplierAmount"]),
                          int(args["fee"]), int(args["buyerRefund"]), receipt, dispute_expired)

    # ---------------------------------------------------------------- reads

    def rules(self) -> Rules:
        r = self.client.call(self.fn.rules())
        return Rules(int(r[0]), int(r[1]), to_checksum_address(r[2]), int(r[3]), int(r[4]), int(r[5]),
                     int(r[6]), int(r[7]), int(r[8]), int(r[9]), int(r[10]))

    def is_token_allowed(self, token: str) -> bool:
        return bool(self.client.call(self.fn.isTokenAllowed(to_checksum_address(token))))

    def token_list(self) -> list[str]:
        return [to_checksum_address(t) for t in self.client.call(self.fn.tokenList())]

    def order(self, order_id: int, block: Any = "latest") -> Order:
        o = self.client.call(self.fn.order(order_id), block)
        (buyer, supplier, product_id, min_expiry, token, quantity, unit_price, amount, fee_bps, deadline, window,
         status, delivered_at, batch_id, range_count, sealed_hash, membership, proven, dispute_deadline) = o
        sealed = bytes(sealed_hash)
        return Order(order_id, to_checksum_address(buyer), to_checksum_address(supplier), to_checksum_address(token),
                     int(quantity), int(unit_price), int(amount), int(fee_bps), int(deadline), int(window),
                     OrderStatus(status), int(delivered_at), bytes(batch_id), int(range_count), int(dispute_deadline),
                     int(product_id), int(min_expiry), sealed if any(sealed) else b"", bool(membership), int(proven))

    def delivery(self, order_id: int) -> tuple[bytes, list[CardRange]]:
        batch_id, ranges = self.client.call(self.fn.deliveryOf(order_id))
        return bytes(batch_id), [CardRange(int(s), int(n)) for s, n in ranges]

    def order_count(self) -> int:
        return int(self.client.call(self.fn.orderCount()))

    def credits(self, account: str, token: str) -> int:
        return int(self.client.call(self.fn.credits(to_checksum_address(account), to_checksum_address(token))))

    def fees_accrued(self, token: str) -> int:
        return int(self.client.call(self.fn.feesAccrued(to_checksum_address(token))))

    def delivered_word(self, batch_id: bytes, word: int) -> int:
        return int(self.client.call(self.fn.deliveredWord(batch_id, word)))

    def proven_word(self, batch_id: bytes, word: int) -> int:
        return int(self.client.call(self.fn.provenWord(batch_id, word)))

    def opened_event(self, order_id: int, from_block: int = 0) -> dict[str, Any] | None:
        """The OrderOpened event's arguments of ``order_id`` (product, minimum expiry, seal key, ...), or None."""
        logs = self.contract.events.OrderOpened().get_logs(from_block=from_block,
                                                            argument_filters={"orderId": order_id})
        return dict(logs[0]["args"]) if logs else None

    def revoked_count(self, order_id: int) -> int:
        """The order's delivered cards refundable now: revoked and not redeemed."""
        return int(self.client.call(self.fn.revokedCount(order_id)))


# ------------------------------------------------------------------ deployment


def deploy_escrow(client: ChainClient, home: Path, registry_address: str, *, admin: str | None = None,
                  fee_recipient: str | None = None, arbiter: str | None = None,
                  tokens: Sequence[str] = ()) -> tuple[Deployment, bool]:
    """Deploy the CardEscrow for `registry_address` unless a live one is recorded; returns (record, created).

    The client's account becomes admin, fee recipient and first arbiter unless given (an escrow is never
    deployed without an arbiter); `tokens` are allowlisted when the escrow is created (and the client is its
    admin).
    """
    record, created = deploy(client, home, ESCROW, to_checksum_address(registry_address),
                             to_checksum_address(admin or client.address),
                             to_checksum_address(fee_recipient or client.address),
                             to_checksum_address(arbiter or client.address), gas=8_000_000)
    if created and tokens and (admin is None or to_checksum_address(admin) == client.address):
        Escrow(client, record.address).set_tokens_allowed(list(tokens), True)
    return record, created


def deploy_test_stablecoin(client: ChainClient, home: Path, name: str = "Test USD",
                           symbol: str = "tUSD") -> tuple[Deployment, bool]:
    """Deploy the dev-chain TestStablecoin (client is admin and minter) unless a live one is recorded."""
    return deploy(client, home, STABLECOIN, name, symbol, client.address, gas=3_000_000)


def stablecoin_address(client: ChainClient, home: Path) -> str:
    """Address of the dev-chain TestStablecoin recorded for this chain (NotDeployed if there is none)."""
    return find(client, home, STABLECOIN).address


def faucet(client: ChainClient, token: str, to: str, amount: int) -> TxReceipt:
    """Mint `amount` of a TestStablecoin to `to`; the client needs MINTER_ROLE (the deployer has it)."""
    contract = client.contract(token, load_artifact(STABLECOIN).abi)
    return client.transact(contract.functions.mint(to_checksum_address(to), amount), gas=GAS_SIMPLE)
