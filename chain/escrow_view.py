"""Presentation of escrow orders for people and JSON: token amounts in token units, durations, order summaries.

Shared by the ``cardproof order`` commands (verify_api/order_cli.py) and the order API (verify_api/order_view.py).
Amounts are integers in the token's smallest unit on chain; people type and read them as decimals in token
units ("9.50"), converted with the token's ``decimals()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from chain.errors import ChainError
from chain.humanize import STATUS_NAMES, format_duration, format_time, status_name

__all__ = [
    "STATUS_NAMES",
    "AmountError",
    "DurationError",
    "TokenError",
    "TokenMeta",
    "format_amount",
    "format_duration",
    "format_time",
    "order_json",
    "parse_amount",
    "parse_duration",
    "ranges_json",
    "status_name",
    "token_meta",
]


class AmountError(ChainError, ValueError):
    """An amount that is not a plain decimal in token units, or has more decimals than the token."""

    code = "invalid_amount"


class TokenError(ChainError, ValueError):
    """The address is not an ERC-20 token the command can use (no code there, or no decimals())."""

    code = "invalid_token"


class DurationError(ChainError, ValueError):
    """A duration that is not like 3d, 12h, 90m or 1d12h (a bare number has no unit and is refused)."""

    code = "invalid_duration"


_AMOUNT = re.compile(r"^(\d+(\.\d*)?|\.\d+)$")
_DURATION_PART = re.compile(r"(\d+)([wdhms])")
_UNIT_SECONDS = {"w": 7 * 86_400, "d": 86_400, "h": 3_600, "m": 60, "s": 1}


@dataclass(frozen=True)
class TokenMeta:
    address: str
    symbol: str
    decimals: int

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "symbol": self.symbol, "decimals": self.decimals}

    def fmt(self, units: int) -> str:
        return format_amount(units, self.decimals)

    def parse(self, text: str, *, what: str = "amount", allow_zero: bool = False) -> int:
        return parse_amount(text, self.decimals, what=what, allow_zero=allow_zero, symbol=self.symbol)

    def money(self, units: int) -> dict[str, Any]:
        """JSON of an amount: decimal string in token units and the exact integer in the smallest unit."""
        return {"amount": self.fmt(units), "units": str(int(units)), "symbol": self.symbol}


def parse_amount(text: str, decimals: int, *, what: str = "amount", allow_zero: bool = False,
                 symbol: str = "") -> int:
    """``"9.50"`` -> 9_500_000 for a 6-decimal token. Exact: more decimals than the token has is an error."""
    raw = (text or "").strip().replace("_", "")
    if not _AMOUNT.match(raw):
        raise AmountError(f"{what} {text!r} is not a decimal amount in token units (like 9.50)")
    try:
        value = Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise AmountError(f"{what} {text!r} is not a decimal amount") from None
    units = value.scaleb(decimals)
    if units != units.to_integral_value():
        unit = f" {symbol}" if symbol else ""
        raise AmountError(f"{what} {text!r} has more than {decimals} decimals (the smallest{unit} amount is "
                          f"{format_amount(1, decimals)})")
    result = int(units)
    if result == 0 and not allow_zero:
        raise AmountError(f"{what} must be more than zero")
    if result >= 2**256:
        raise AmountError(f"{what} {text!r} is too large")
    return result


def format_amount(units: int, decimals: int) -> str:
    """9_500_000 (6 decimals) -> ``"9.50"``: every significant digit, at least two decimals (if the token has them)."""
    units = int(units)
    sign = "-" if units < 0 else ""
    units = abs(units)
    if decimals <= 0:
        return f"{sign}{units}"
    whole, frac = divmod(units, 10**decimals)
    digits = str(frac).rjust(decimals, "0").rstrip("0")
    digits = digits.ljust(min(2, decimals), "0")
    return f"{sign}{whole}.{digits}"


def parse_duration(text: str, *, what: str = "duration") -> int:
    """``"3d"`` -> 259200 seconds; also ``2w``, ``12h``, ``90m``, ``45s`` and combinations (``1d12h``).

    A bare number is refused (``--deadline 3`` was once read as 3 seconds): the unit must be said."""
    raw = (text or "").strip().lower().replace(" ", "")
    if raw.isdigit():
        if int(raw) == 0:
            raise DurationError(f"{what} {text!r} has no unit and must be longer than zero: say 1d, 12h, 90m or 45s")
        raise DurationError(f"{what} {text!r} has no unit: {raw} what? say {raw}d, {raw}h, {raw}m or {raw}s")
    pos, seconds = 0, 0
    for m in _DURATION_PART.finditer(raw):
        if m.start() != pos:
            break
        seconds += int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not raw or pos != len(raw):
        raise DurationError(f"{what} {text!r} is not a duration like 3d, 12h, 90m or 1d12h")
    if seconds <= 0:
        raise DurationError(f"{what} must be longer than zero")
    return seconds


def token_meta(client: Any, address: str) -> TokenMeta:
    """Symbol and decimals of an ERC-20 read from the chain (symbol "" if the token has none)."""
    from chain.errors import ChainUnreachable
    from chain.escrow import ERC20_ABI

    contract = client.contract(address, ERC20_ABI)
    try:
        decimals = int(client.call(contract.functions.decimals()))
    except ChainUnreachable:
        raise
    except Exception:  # noqa: BLE001 - no contract, or one without decimals(): not a usable token
        raise TokenError(f"{contract.address} is not an ERC-20 token on chain {client.chain_id} "
                         "(no decimals())") from None
    try:
        symbol = str(client.call(contract.functions.symbol()))
    except Exception:  # noqa: BLE001 - symbol() is optional in ERC-20
        symbol = ""
    return TokenMeta(contract.address, symbol, decimals)


def ranges_json(ranges: Any) -> list[dict[str, int]]:
    out = []
    for r in ranges:
        start, length = (r.start, r.length) if hasattr(r, "start") else (r[0], r[1])
        out.append({"start": int(start), "length": int(length)})
    return out


def order_json(order: Any, token: TokenMeta, ranges: Any = ()) -> dict[str, Any]:
    """An order (chain.escrow.Order) with amounts in token units."""
    delivered = order.delivered_at != 0
    return {
        "order_id": order.order_id,
        "status": STATUS_NAMES[int(order.status)],
        "buyer": order.buyer,
        "supplier": order.supplier,
        "token": token.to_json(),
        "quantity": order.quantity,
        "unit_price": token.money(order.unit_price),
        "amount": token.money(order.amount),
        "fee_bps": order.fee_bps,
        "delivery_deadline": order.delivery_deadline,
        "dispute_window": order.dispute_window,
        "delivered_at": order.delivered_at or None,
        "dispute_window_end": order.dispute_window_end,
        #: The time after which an open dispute settles by the default outcome (None: never disputed).
        "dispute_deadline": getattr(order, "dispute_deadline", 0) or None,
        "delivery": {"batch_id": "0x" + bytes(order.batch_id).hex(), "ranges": ranges_json(ranges),
                     "sealed_hash": "0x" + bytes(order.sealed_hash).hex() if order.sealed_hash else None}
        if delivered else None,
        #: The registry product ordered (SKU, face value, currency: see the registry's product(id)).
        "product_id": getattr(order, "product_id", 0) or None,
        #: The earliest expiry the cards may have (None: any; not kept on chain after delivery).
        "min_expiry": getattr(order, "min_expiry", 0) or None,
        "membership_dispute": bool(getattr(order, "membership_dispute", False)),
        "proven_cards": getattr(order, "proven_count", 0),
    }


_RANGE = re.compile(r"\s*(\d{1,10})\s*:\s*(\d{1,10})\s*")


def parse_ranges(texts: list[str] | None, *, what: str = "--range") -> list[tuple[int, int]]:
    """Card ranges typed as START:COUNT (COUNT > 0); ValueError with a one-line message otherwise."""
    out = []
    for text in texts or []:
        m = _RANGE.fullmatch(text)
        if not m or int(m.group(2)) == 0:
            raise ValueError(f"{what}: {text!r} is not START:COUNT with COUNT > 0 (like 0:10)")
        out.append((int(m.group(1)), int(m.group(2))))
    if not out:
        raise ValueError(f"give the delivered cards with {what} START:COUNT (repeatable)")
    return out
