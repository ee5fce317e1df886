"""Errors of the chain package.

Every error cardproof raises derives from :class:`CardproofError`, whose ``str()`` is one line fit for a
user (the CLI prints it as it is). Contract reverts are decoded into subclasses of
:class:`ContractRevert`, one per Solidity custom error, with the error's parameters as snake_case
attributes: callers never see an exception specific to eth-tester or to a JSON-RPC node.

Messages are for people: a parameter that is a time shows as a date (``2026-12-02 07:10 UTC``), a duration in
units (``1h``, ``30d``), an order status by name (``delivered``), and the errors people meet most (a dispute
window or delivery deadline out of range, an order in the wrong status) say what is allowed in those units.
The raw integers stay in ``params`` and as attributes.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from chain.humanize import format_duration, format_time, status_name


class CardproofError(Exception):
    """Base of every cardproof error; str() is one line fit for users."""

    #: Stable machine-readable code (API error bodies, --json output).
    code: ClassVar[str] = "error"


class ChainError(CardproofError):
    """Base of the chain package's errors."""

    code = "chain_error"


class ConfigError(ChainError, ValueError):
    """The configuration is incomplete or invalid."""

    code = "config_error"


class ChainUnreachable(ChainError, ConnectionError):
    """The JSON-RPC node does not answer."""

    code = "chain_unreachable"


class NonceError(ChainError):
    """The node refused a transaction for its nonce (taken by another transaction, or this one is known).

    ``kind``: ``too_low``, ``underpriced`` (another transaction holds the nonce), ``already_known`` or
    ``invalid``. The client retries such a refusal with a fresh nonce a bounded number of times; this error
    reaches callers only when every attempt was refused, and nothing of theirs was broadcast then.
    """

    code = "nonce_conflict"

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


#: Node messages (geth, anvil, besu, nethermind, erigon) meaning "this nonce is not usable for this transaction".
_NONCE_MESSAGES = (
    ("nonce too low", "too_low"),
    ("replacement transaction underpriced", "underpriced"),
    ("already known", "already_known"),
    ("already imported", "already_known"),
    ("known transaction", "already_known"),
    ("invalid transaction nonce", "invalid"),
    ("nonce has already been used", "too_low"),
    ("oldnonce", "too_low"),
)


def nonce_error_from(exc: BaseException) -> NonceError | None:
    """A node's refusal of a transaction's nonce as a NonceError, else None."""
    text = str(exc).lower()
    for needle, kind in _NONCE_MESSAGES:
        if needle in text:
            return NonceError(f"the node refused the transaction's nonce: {needle}", kind)
    return None


class NonceLockTimeout(ChainError, TimeoutError):
    """The account's nonce lock (shared by every process signing for it) could not be taken in time."""

    code = "nonce_lock_timeout"


class NonceStoreUnavailable(ChainError):
    """The shared store of the account's nonce lock (Redis, the lock file) cannot be used: nothing was sent."""

    code = "nonce_store_unavailable"


class NoChainRunning(ChainError):
    """No RPC URL is configured and no local chain is running for this CARDPROOF_HOME."""

    code = "no_chain"


class NodeError(ChainError):
    """The local anvil node could not be started or stopped."""

    code = "node_error"


class AccountError(ChainError):
    """No usable account, or the keystore could not be opened. Never carries key material."""

    code = "account_error"


class NotDeployed(ChainError, LookupError):
    """The contract is not deployed on this chain (run `cardproof deploy`)."""

    code = "not_deployed"


class TransactionTimeout(ChainError, TimeoutError):
    """A transaction was sent but no receipt (or not enough confirmations) arrived in time."""

    code = "tx_timeout"


class TransactionReverted(ChainError):
    """A transaction or call reverted and the revert data could not be decoded."""

    code = "reverted"

    def __init__(self, message: str, data: bytes | None = None) -> None:
        super().__init__(message)
        self.data = data


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _show(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value)


class ContractRevert(TransactionReverted):
    """A revert decoded from a contract's custom error.

    Subclasses are named after the Solidity error; ``params`` keeps the decoded arguments with
    snake_case names, which are also set as attributes (``exc.batch_id``).
    """

    code = "contract_revert"
    #: Solidity error name -> Python class, filled by __init_subclass__.
    by_name: ClassVar[dict[str, type[ContractRevert]]] = {}
    #: Parameters (snake_case) shown as dates, as durations, as order status names in the message.
    times: ClassVar[frozenset[str]] = frozenset()
    durations: ClassVar[frozenset[str]] = frozenset()
    statuses: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ContractRevert.by_name[cls.__name__] = cls
        cls.code = _snake(cls.__name__)

    def __init__(self, error_name: str | None = None, data: bytes | None = None, **params: Any) -> None:
        self.error_name = error_name or type(self).__name__
        self.params = {_snake(k): v for k, v in params.items()}
        for key, value in self.params.items():
            setattr(self, key, value)
        args = ", ".join(f"{k}={self.show_param(k, v)}" for k, v in self.params.items())
        summary = (type(self).__doc__ or "").strip().splitlines()[0] if type(self).__doc__ else ""
        text = f"{self.error_name}({args})"
        try:
            explained = self.explain()
        except (KeyError, TypeError, ValueError):  # parameters other than the contract's: the generic message
            explained = None
        if explained:
            text = f"{explained} [{self.error_name}]"
        elif type(self) is not ContractRevert and summary:
            text = f"{summary} [{text}]"
        super().__init__(text, data)

    def show_param(self, name: str, value: Any) -> str:
        """One parameter as people read it: a date, a duration, a status name, hex for bytes."""
        if isinstance(value, int) and not isinstance(value, bool):
            if name in self.times:
                return format_time(value)
            if name in self.durations:
                return format_duration(value)
            if name in self.statuses:
                return status_name(value)
        return _show(value)

    def explain(self) -> str | None:
        """A whole sentence for people from the parameters (subclasses), or None for the generic message."""
        return None


class Panic(ContractRevert):
    """The contract panicked (assertion, overflow, division by zero, ...)."""


class RevertReason(ContractRevert):
    """The contract reverted with a reason string."""


# --- CardRegistry (contracts/ICardRegistry.sol) -------------------------------------------------


class BatchAlreadyAnchored(ContractRevert):
    """This batch id is anchored already."""


class BatchNotAnchored(ContractRevert):
    """This batch is not anchored."""


class BatchIdNotOwned(ContractRevert):
    """Issuers may anchor only batch ids that start with their own address."""


class EmptyBatch(ContractRevert):
    """A batch must hold at least one card."""


class InvalidRoot(ContractRevert):
    """A zero Merkle root cannot be anchored."""


class NotBatchIssuer(ContractRevert):
    """Only the batch's issuer may do this."""


class NotBatchRedeemer(ContractRevert):
    """Only the batch's issuer or one of its redeemers may redeem its cards."""


class CardIndexOutOfRange(ContractRevert):
    """The card index is beyond the batch's card count."""


class CardAlreadyRedeemed(ContractRevert):
    """The card was redeemed already."""


class CardRevoked(ContractRevert):
    """The card is revoked."""


class BatchAlreadyRevoked(ContractRevert):
    """The whole batch is revoked already."""


class EmptyIndexList(ContractRevert):
    """No card indices were given."""


class ZeroAddress(ContractRevert):
    """The zero address is not allowed."""


class InvalidIssuerName(ContractRevert):
    """An issuer's display name must be 1 to 64 bytes of UTF-8."""


# --- OpenZeppelin --------------------------------------------------------------------------------


class AccessControlUnauthorizedAccount(ContractRevert):
    """The account lacks the role this needs."""


class AccessControlBadConfirmation(ContractRevert):
    """Roles can only be renounced by their holder."""


class ReentrancyGuardReentrantCall(ContractRevert):
    """Re-entrant call refused by the contract's reentrancy guard."""


class SafeERC20FailedOperation(ContractRevert):
    """The token transfer failed (the token returned false)."""


# --- OpenZeppelin ERC-20 / ERC-2612 (IERC6093, test tokens) -------------------------------------


class ERC20InsufficientBalance(ContractRevert):
    """The sender's token balance is too low."""


class ERC20InsufficientAllowance(ContractRevert):
    """The spender's token allowance is too low."""


class ERC20InvalidSender(ContractRevert):
    """Tokens cannot be sent from this address."""


class ERC20InvalidReceiver(ContractRevert):
    """Tokens cannot be sent to this address."""


class ERC20InvalidApprover(ContractRevert):
    """This address cannot approve a spender."""


class ERC20InvalidSpender(ContractRevert):
    """This address cannot be approved as a spender."""


class ERC2612ExpiredSignature(ContractRevert):
    """The permit's deadline has passed."""

    times = frozenset({"deadline"})


class ERC2612InvalidSigner(ContractRevert):
    """The permit was not signed by the token owner."""


class InvalidAccountNonce(ContractRevert):
    """The nonce was used already or is out of order."""


class ECDSAInvalidSignature(ContractRevert):
    """The signature is invalid."""


class ECDSAInvalidSignatureLength(ContractRevert):
    """The signature has the wrong length."""


class ECDSAInvalidSignatureS(ContractRevert):
    """The signature's s value is out of range (malleable signature)."""


class StringTooLong(ContractRevert):
    """The string is too long for a short string."""


class InvalidShortString(ContractRevert):
    """The value is not a valid short string."""


class Blocklisted(ContractRevert):
    """The account is blocklisted by the token."""


# --- CardEscrow (contracts/ICardEscrow.sol) -----------------------------------------------------
# CardRevoked, CardAlreadyRedeemed and ZeroAddress are shared with the registry (same signatures).


class TokenNotAllowed(ContractRevert):
    """The token is not on the escrow's allowlist."""


class FeeTooHigh(ContractRevert):
    """The fee exceeds the escrow's hard cap."""


class InvalidWindowRules(ContractRevert):
    """The window rules are inconsistent."""

    durations = frozenset({"max_delivery_period", "min_dispute_window", "max_dispute_window"})


class SupplierNotIssuer(ContractRevert):
    """The supplier does not hold ISSUER_ROLE in the card registry."""


class InvalidQuantity(ContractRevert):
    """The quantity is zero or above the maximum."""


class InvalidUnitPrice(ContractRevert):
    """The unit price is zero or too large."""


class InvalidDeliveryDeadline(ContractRevert):
    """The delivery deadline is in the past or too far ahead."""

    times = frozenset({"deadline", "now", "latest"})

    def explain(self) -> str | None:
        deadline, now, latest = int(self.params["deadline"]), int(self.params["now"]), int(self.params["latest"])
        if deadline <= now:
            return f"the delivery deadline {format_time(deadline)} is not in the future (now {format_time(now)})"
        return (f"the delivery deadline must be at most {format_duration(latest - now)} from now, by "
                f"{format_time(latest)} ({format_duration(deadline - now)} asked, until {format_time(deadline)})")


class InvalidDisputeWindow(ContractRevert):
    """The dispute window is outside the allowed range."""

    durations = frozenset({"dispute_window", "min_window", "max_window"})

    def explain(self) -> str | None:
        p = self.params
        return (f"dispute window must be between {format_duration(p['min_window'])} and "
                f"{format_duration(p['max_window'])} ({format_duration(p['dispute_window'])} given)")


class UnderFunded(ContractRevert):
    """The escrow received less than the order's amount (fee-on-transfer token)."""


class OrderNotFound(ContractRevert):
    """There is no such order."""


class InvalidOrderStatus(ContractRevert):
    """The order is not in the status this needs."""

    statuses = frozenset({"status", "required"})

    def explain(self) -> str | None:
        p = self.params
        return (f"order {int(p['order_id'])} is {status_name(p['status'])}; this needs it "
                f"{status_name(p['required'])}")


class NotOrderBuyer(ContractRevert):
    """Only the order's buyer may do this."""


class NotOrderSupplier(ContractRevert):
    """Only the order's supplier may do this."""


class DeliveryDeadlinePassed(ContractRevert):
    """The order's delivery deadline has passed."""

    times = frozenset({"deadline"})


class DeliveryDeadlineNotPassed(ContractRevert):
    """The order's delivery deadline has not passed yet."""

    times = frozenset({"deadline"})


class DisputeWindowClosed(ContractRevert):
    """The order's dispute window has closed."""

    times = frozenset({"window_end"})


class DisputeWindowOpen(ContractRevert):
    """The order's dispute window is still open."""

    times = frozenset({"window_end"})


class BatchNotOwnedBySupplier(ContractRevert):
    """The batch is not an anchored batch of the order's supplier."""


class InvalidRangeCount(ContractRevert):
    """The delivery has no ranges or too many."""


class InvalidCardRange(ContractRevert):
    """The card range is empty or beyond the batch's cards."""


class QuantityMismatch(ContractRevert):
    """The delivered card count differs from the ordered quantity."""


class CardAlreadyDelivered(ContractRevert):
    """The card was delivered in an order already; a card is sold once."""


class InvalidSplit(ContractRevert):
    """The arbiter's split does not add up to the escrowed amount."""


class NothingToWithdraw(ContractRevert):
    """There is no credit to withdraw in this token."""


# --- CardEscrow: disputes end, window floors (issue 10) -----------------------------------------


class WindowOutOfBounds(ContractRevert):
    """A window rule is below its floor (1 hour) or above its ceiling."""

    durations = frozenset({"window", "floor", "ceiling"})

    def explain(self) -> str | None:
        p = self.params
        floor, ceiling = format_duration(p["floor"]), format_duration(p["ceiling"])
        allowed = f"at least {floor}" if int(p["ceiling"]) >= 2**32 - 1 else f"between {floor} and {ceiling}"
        return (f"window rule {p['rule']} must be {allowed} ({format_duration(p['window'])} given): "
                "no window may be below its floor (1 hour) or above its ceiling")


class DisputeDeadlinePassed(ContractRevert):
    """The dispute's deadline has passed: no arbiter can act, only the default outcome applies (release)."""

    times = frozenset({"deadline"})


class DisputeDeadlineNotPassed(ContractRevert):
    """The dispute waits for an arbiter until its deadline."""

    times = frozenset({"deadline"})


class NotArbiterOwner(ContractRevert):
    """Only the owner of this arbiter contract may forward rulings through it (test arbiter)."""


# --- Products, sealed deliveries, membership disputes (issue 10) ---------------------------------


class InvalidProduct(ContractRevert):
    """A product needs a SKU, a face value above zero and a currency."""


class UnknownProduct(ContractRevert):
    """There is no such product in the registry."""


class ProductMismatch(ContractRevert):
    """The batch holds another product than the order is for."""


class ExpiryTooSoon(ContractRevert):
    """The batch's cards expire before the order's minimum expiry."""

    times = frozenset({"expiry", "min_expiry"})


class InvalidSealKey(ContractRevert):
    """A seal key is a 33-byte compressed secp256k1 public key."""


class MissingSealedHash(ContractRevert):
    """A delivery must carry the hash of its sealed codes."""


class NotMembershipDispute(ContractRevert):
    """The order is not in a membership dispute."""


class CardNotInOrder(ContractRevert):
    """The card is not one of the order's delivered cards."""


class InvalidDeliveryProof(ContractRevert):
    """The multiproof does not prove these cards in the batch's anchored root."""


class MerkleProofInvalidMultiproof(ContractRevert):
    """OpenZeppelin MerkleProof: the multiproof's lengths do not fit (leaves + proof != flags + 1)."""


class RoleRequired(AccessControlUnauthorizedAccount):
    """The account lacks the role this needs; the message names the role and who holds it.

    Raised by the escrow and registry wrappers (chain/escrow.py, chain/registry.py; the message is built once, in
    chain/reverts.role_required) in place of the bare AccessControlUnauthorizedAccount revert,
    with the same parameters (``account``, ``needed_role``) plus ``role`` (its name, e.g. "admin") and
    ``holders`` (the accounts that hold it, as far as the contract lists them).
    """

    def __init__(self, message: str, *, account: str, needed_role: bytes, role: str, holders: list[str],
                 data: bytes | None = None) -> None:
        super().__init__("AccessControlUnauthorizedAccount", data, account=account, needed_role=needed_role)
        self.role = role
        self.holders = list(holders)
        self.args = (message,)
