"""The platform operator's changes to the escrow's rules: fee, fee recipient, payment tokens, window rules.

Every change is made by the escrow's admin (DEFAULT_ADMIN_ROLE): each function first checks the acting account
holds it (``Escrow.require_role``: a RoleRequired naming the admin, nothing sent), reads the current value and
sends nothing when it already holds (:attr:`Change.changed` is False), and checks the new value against the
contract's bounds in people's units ("below the floor of 1h", "above the cap of 1%"), so no doomed transaction is
sent. The transactions go through the chain/escrow.py wrappers.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from chain.errors import ChainError
from chain.escrow import DEFAULT_ADMIN_ROLE, Escrow, Rules
from chain.escrow_view import format_duration

__all__ = [
    "WINDOW_RULES",
    "AdminValueError",
    "Change",
    "fee_json",
    "format_fee",
    "parse_fee",
    "set_fee",
    "set_fee_recipient",
    "set_token_allowed",
    "set_windows",
    "windows_json",
]

ZERO_ADDRESS = "0x" + "00" * 20
#: The escrow's window rules (chain.escrow.Rules fields) that the admin sets, with what people call them.
WINDOW_RULES = {
    "max_delivery_period": "max delivery period",
    "min_dispute_window": "min dispute window",
    "max_dispute_window": "max dispute window",
    "dispute_resolution_period": "dispute resolution period",
}


class AdminValueError(ChainError, ValueError):
    """A value the escrow would refuse (fee above its cap, window below its floor, ...); nothing was sent."""

    code = "invalid_admin_value"


@dataclass(frozen=True)
class Change:
    """One admin setting before and after; ``tx`` is None when nothing was sent (it already held)."""

    setting: str
    before: Any
    after: Any
    tx: str | None

    @property
    def changed(self) -> bool:
        return self.tx is not None


def _tx(receipt: Any) -> str:
    from hexbytes import HexBytes

    return HexBytes(receipt["transactionHash"]).to_0x_hex()


# ------------------------------------------------------------------------------------------------ fee


def format_fee(bps: int) -> str:
    """25 basis points -> ``"0.25%"``; 100 -> ``"1%"``; 0 -> ``"0%"``."""
    percent = (Decimal(int(bps)) / 100).normalize()
    return f"{percent:f}%"


def fee_json(bps: int) -> dict[str, Any]:
    """A fee for JSON: the raw basis points and the percentage people read."""
    return {"bps": int(bps), "percent": format_fee(bps)}


def parse_fee(text: str) -> int:
    """A fee as people type it, in percent (``0.25%`` or ``0.25``) or basis points (``25bps``) -> basis points."""
    raw = (text or "").strip().lower().replace(" ", "")
    try:
        if raw.endswith("bps"):
            value = Decimal(raw.removesuffix("bps"))
        else:
            value = Decimal(raw.removesuffix("%")) * 100
    except InvalidOperation:
        raise AdminValueError(f"FEE: {text!r} is not a percentage like 0.25% (or basis points like 25bps)") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise AdminValueError(f"FEE: {text!r} is not a whole number of basis points (steps of 0.01%)")
    if value < 0:
        raise AdminValueError(f"FEE: {text!r} is below 0%")
    return int(value)


def set_fee(escrow: Escrow, bps: int) -> Change:
    """Set the platform fee of orders opened from now on (admin); at most the escrow's cap (1%)."""
    escrow.require_role(DEFAULT_ADMIN_ROLE)
    rules = escrow.rules()
    if bps > rules.max_fee_bps:
        raise AdminValueError(f"FEE: {format_fee(bps)} is above the escrow's cap of {format_fee(rules.max_fee_bps)}")
    if bps == rules.fee_bps:
        return Change("fee", bps, bps, None)
    return Change("fee", rules.fee_bps, bps, _tx(escrow.set_fee(bps)))


# ------------------------------------------------------------------------------------------------ fee recipient


def set_fee_recipient(escrow: Escrow, recipient: str) -> Change:
    """Set who is credited the platform fees (admin); fees accrued so far become the previous recipient's credit."""
    from eth_utils import to_checksum_address

    recipient = to_checksum_address(recipient)
    if recipient == ZERO_ADDRESS:
        raise AdminValueError("ADDRESS: the zero address cannot receive the fees")
    escrow.require_role(DEFAULT_ADMIN_ROLE)
    before = escrow.rules().fee_recipient
    if before == recipient:
        return Change("fee_recipient", before, recipient, None)
    return Change("fee_recipient", before, recipient, _tx(escrow.set_fee_recipient(recipient)))


# ------------------------------------------------------------------------------------------------ payment tokens


def set_token_allowed(escrow: Escrow, token: str, allowed: bool) -> Change:
    """Allow (or stop allowing) `token` as the payment of new orders (admin). A token is checked to be an ERC-20
    before it is allowed; open orders in a removed token settle as usual."""
    from eth_utils import to_checksum_address

    from chain.escrow_view import token_meta

    token = to_checksum_address(token)
    if token == ZERO_ADDRESS:
        raise AdminValueError("TOKEN: the zero address is not a token")
    escrow.require_role(DEFAULT_ADMIN_ROLE)
    if allowed:
        token_meta(escrow.client, token)  # TokenError unless an ERC-20 lives there
    before = escrow.is_token_allowed(token)
    if before == allowed:
        return Change("token", before, allowed, None)
    return Change("token", before, allowed, _tx(escrow.set_tokens_allowed([token], allowed)))


# ------------------------------------------------------------------------------------------------ windows


def windows_of(rules: Rules) -> dict[str, int]:
    """The admin-set window rules, in seconds."""
    return {name: int(getattr(rules, name)) for name in WINDOW_RULES}


def windows_json(windows: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Window rules for JSON: raw seconds and the duration people read (``"1h"``)."""
    return {name: {"seconds": int(value), "human": format_duration(value)} for name, value in windows.items()}


def check_windows(rules: Rules, windows: dict[str, int]) -> None:
    """Raise AdminValueError for window rules the escrow would refuse, in people's units."""
    floor = rules.window_floor
    for name, value in windows.items():
        if value < floor:
            raise AdminValueError(f"--{name.replace('_', '-')}: {format_duration(value)} is below the floor of "
                                  f"{format_duration(floor)}")
    ceiling = rules.max_dispute_resolution_period
    if windows["dispute_resolution_period"] > ceiling:
        raise AdminValueError(f"--dispute-resolution-period: {format_duration(windows['dispute_resolution_period'])} "
                              f"is above the ceiling of {format_duration(ceiling)}")
    if windows["min_dispute_window"] > windows["max_dispute_window"]:
        raise AdminValueError(f"the min dispute window ({format_duration(windows['min_dispute_window'])}) is longer "
                              f"than the max dispute window ({format_duration(windows['max_dispute_window'])})")
    uint32_max = 2**32 - 1
    for name, value in windows.items():
        if value > uint32_max:
            raise AdminValueError(f"--{name.replace('_', '-')}: {format_duration(value)} is longer than the escrow "
                                  f"can hold ({format_duration(uint32_max)})")


def set_windows(escrow: Escrow, **changes: int | None) -> Change:
    """Set some of the window rules (admin): max_delivery_period, min_dispute_window, max_dispute_window,
    dispute_resolution_period, in seconds; the others keep their values. Orders already open keep theirs."""
    unknown = set(changes) - set(WINDOW_RULES)
    if unknown:
        raise AdminValueError(f"not a window rule: {', '.join(sorted(unknown))}")
    given = {name: int(value) for name, value in changes.items() if value is not None}
    if not given:
        raise AdminValueError("give at least one window to set: " + ", ".join(
            f"--{name.replace('_', '-')}" for name in WINDOW_RULES))
    escrow.require_role(DEFAULT_ADMIN_ROLE)
    rules = escrow.rules()
    before = windows_of(rules)
    after = {**before, **given}
    check_windows(rules, after)
    if after == before:
        return Change("windows", before, after, None)
    receipt = escrow.set_window_rules(after["max_delivery_period"], after["min_dispute_window"],
                                      after["max_dispute_window"], after["dispute_resolution_period"])
    return Change("windows", before, after, _tx(receipt))
