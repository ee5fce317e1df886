"""Private keys typed by people (CARDPROOF_PRIVATE_KEY, key files): checked, never echoed.

A secp256k1 private key is 32 bytes, written as 64 hex digits with or without ``0x``, whose value lies in
1 .. n-1 (n: the curve's order). Every refusal is one line that names where the key came from and what is
wrong with it (its length, its range) but never shows the key or any part of it.
"""

from __future__ import annotations

import re

from chain.errors import AccountError

__all__ = ["SECP256K1_N", "PrivateKeyError", "parse_private_key"]

#: The order of secp256k1: a private key is in 1 .. SECP256K1_N - 1.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

_HEX = re.compile(r"^[0-9a-fA-F]*$")


class PrivateKeyError(AccountError):
    """A private key that is not 32 bytes of hex in the secp256k1 range. Never carries the key.

    Not a ValueError on purpose: raised inside a pydantic validator (chain/settings.py) it must reach the user as
    this one line, not as a ValidationError, whose text would repeat the input (the key)."""

    code = "invalid_private_key"


def parse_private_key(text: str | bytes, what: str = "private key") -> bytes:
    """The 32 bytes of the key ``text`` (hex, ``0x`` optional); :class:`PrivateKeyError` otherwise."""
    if isinstance(text, bytes | bytearray):
        key = bytes(text)
    else:
        raw = str(text).strip()
        raw = raw[2:] if raw[:2] in ("0x", "0X") else raw
        if not raw:
            raise PrivateKeyError(f"{what} is empty: a private key is 32 bytes as 64 hex digits (0x optional)")
        if not _HEX.match(raw):
            raise PrivateKeyError(f"{what} is not hex: a private key is 32 bytes as 64 hex digits (0x optional)")
        if len(raw) % 2:
            raise PrivateKeyError(f"{what} has an odd number of hex digits ({len(raw)}): a private key is 32 "
                                  "bytes as 64 hex digits (0x optional)")
        key = bytes.fromhex(raw)
    if len(key) != 32:
        raise PrivateKeyError(f"{what} is {len(key)} bytes long ({2 * len(key)} hex digits): a private key is "
                              "32 bytes as 64 hex digits (0x optional)")
    if not 0 < int.from_bytes(key, "big") < SECP256K1_N:
        raise PrivateKeyError(f"{what} is outside the secp256k1 range (1 to n-1): not a usable private key")
    return key
