"""Card serials: 80 random bits, shown as 16 Crockford base32 symbols plus a check symbol.

Display form: ``XXXX-XXXX-XXXX-XXXX-C``. The 16 symbols are the 80 bits, most significant
first, in Crockford's alphabet ``0-9 A-Z`` without ``I L O U``. ``C`` is Crockford's check
symbol: the value mod 37 in that alphabet extended with ``* ~ $ = U`` for 32..36. Because 37 is
prime and does not divide any power of 32, every single-symbol substitution and every
transposition of two adjacent data symbols changes the check.

Parsing accepts lower case, missing or extra dashes and spaces, and Crockford's aliases
(``I``/``L`` read as ``1``, ``O`` as ``0``).
"""

from __future__ import annotations

import secrets

from .errors import InvalidSerial

__all__ = [
    "ALPHABET",
    "CHECK_ALPHABET",
    "SERIAL_BITS",
    "SERIAL_SYMBOLS",
    "canonical_serial",
    "check_symbol",
    "format_serial",
    "new_serial_value",
    "parse_serial",
]

SERIAL_BITS = 80
SERIAL_SYMBOLS = SERIAL_BITS // 5  # 16
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CHECK_ALPHABET = ALPHABET + "*~$=U"
_MAX = (1 << SERIAL_BITS) - 1

_DATA_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_DATA_VALUE.update({"I": 1, "L": 1, "O": 0})
_CHECK_VALUE = {c: i for i, c in enumerate(CHECK_ALPHABET)}
_CHECK_VALUE.update({"I": 1, "L": 1, "O": 0})
_DROP = str.maketrans("", "", "- \t")


def new_serial_value() -> int:
    """A fresh serial: 80 bits from the OS CSPRNG."""
    return secrets.randbits(SERIAL_BITS)


def _check_value(value: int) -> int:
    if type(value) is not int or not 0 <= value <= _MAX:
        raise InvalidSerial(f"a serial is an int in 0 .. 2**{SERIAL_BITS} - 1")
    return value


def check_symbol(value: int) -> str:
    """Crockford check symbol of ``value`` (value mod 37)."""
    return CHECK_ALPHABET[_check_value(value) % 37]


def format_serial(value: int) -> str:
    """``0x0123...`` -> ``"XXXX-XXXX-XXXX-XXXX-C"``."""
    _check_value(value)
    s = "".join(ALPHABET[(value >> (5 * i)) & 31] for i in range(SERIAL_SYMBOLS - 1, -1, -1))
    return f"{s[0:4]}-{s[4:8]}-{s[8:12]}-{s[12:16]}-{CHECK_ALPHABET[value % 37]}"


def parse_serial(text: str) -> int:
    """Read a serial as people type it; raise InvalidSerial on a bad length, symbol or check."""
    if not isinstance(text, str):
        raise InvalidSerial("a serial must be a str")
    s = text.strip().translate(_DROP).upper()
    if len(s) != SERIAL_SYMBOLS + 1:
        raise InvalidSerial(f"a serial has {SERIAL_SYMBOLS} symbols and a check symbol, got {len(s)} symbols")
    value = 0
    for pos, c in enumerate(s[:SERIAL_SYMBOLS]):
        d = _DATA_VALUE.get(c)
        if d is None:
            raise InvalidSerial(f"invalid serial symbol at position {pos + 1}")
        value = (value << 5) | d
    check = _CHECK_VALUE.get(s[SERIAL_SYMBOLS])
    if check is None:
        raise InvalidSerial("invalid serial check symbol")
    if value % 37 != check:
        raise InvalidSerial("serial check symbol does not match (mistyped serial?)")
    return value


def canonical_serial(text: str) -> str:
    """The display form of a typed serial (validated)."""
    return format_serial(parse_serial(text))
