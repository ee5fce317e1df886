"""Products on a card: SKU, face value in minor units, ISO 4217 currency, expiry.

Currency rules come from Babel's CLDR data: a currency is supported when it is legal tender in some
territory today (so historical, test and metal codes such as XXX, XTS, XAU are refused), and its minor
unit (2 for USD, 0 for JPY, 3 for KWD) converts a decimal face value into integer minor units.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from functools import cache

from babel.numbers import get_currency_precision, get_territory_currencies
from babel.core import get_global

from issuer.errors import IssuerError

#: Largest face value in minor units: batches.face_value is a signed 64-bit integer column.
MAX_FACE_VALUE_MINOR = 2**63 - 1

_SKU_RE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,30}[\x21-\x7e])?$")


class InvalidProduct(IssuerError, ValueError):
    """A product field (SKU, face value, expiry) is invalid."""

    code = "invalid_product"


@cache
def supported_currencies() -> frozenset[str]:
    today = dt.date.today()
    codes: set[str] = set()
    for territory in get_global("territory_currencies"):
        codes.update(get_territory_currencies(territory, start_date=today, end_date=today, tender=True))
    return frozenset(codes)


def check_currency(code: str) -> str:
    from issuer.errors import UnsupportedCurrency

    normal = (code or "").strip().upper()
    if normal not in supported_currencies():
        raise UnsupportedCurrency(code)
    return normal


def minor_units(currency: str) -> int:
    return int(get_currency_precision(check_currency(currency)))


def parse_face_value(value: str | int | Decimal, currency: str) -> int:
    """'20.00' USD -> 2000; '500' JPY -> 500; more decimals than the currency has is an error."""
    exponent = minor_units(currency)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidProduct(f"face value {value!r} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise InvalidProduct(f"face value must be a positive amount, not {value!r}")
    minor = amount.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise InvalidProduct(f"face value {value!r} has more than {exponent} decimals for {currency.upper()}")
    result = int(minor)
    # The leaf holds a uint128, but batches.face_value is a signed 64-bit column on both databases.
    if result > MAX_FACE_VALUE_MINOR:
        raise InvalidProduct(f"face value is too large (at most {MAX_FACE_VALUE_MINOR} minor units)")
    return result


def format_face_value(minor: int, currency: str) -> str:
    """2000 USD -> '20.00'."""
    exponent = minor_units(currency)
    return f"{Decimal(minor).scaleb(-exponent):.{exponent}f}"


def check_sku(sku: str) -> str:
    s = (sku or "").strip()
    if not _SKU_RE.match(s):
        raise InvalidProduct(f"SKU must be 1-32 printable ASCII characters, not {sku!r}")
    return s


def parse_expiry(value: str | dt.date | dt.datetime | None, *, now: dt.datetime | None = None) -> int:
    """A date (end of that day, UTC) or an ISO datetime -> unix seconds; None -> 0 (never expires)."""
    if value is None or value == "":
        return 0
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    elif isinstance(value, dt.date):
        when = dt.datetime.combine(value, dt.time(23, 59, 59), tzinfo=dt.UTC)
    else:
        text = value.strip()
        try:
            if len(text) == 10:
                when = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(23, 59, 59), tzinfo=dt.UTC)
            else:
                when = dt.datetime.fromisoformat(text)
                when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        except ValueError:
            raise InvalidProduct(f"expiry {value!r} is not a date (YYYY-MM-DD) or ISO datetime") from None
    now = now or dt.datetime.now(dt.UTC)
    if when <= now:
        raise InvalidProduct(f"expiry {when.date().isoformat()} is in the past")
    return int(when.timestamp())
