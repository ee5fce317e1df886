"""Commitments to secret card codes (leaf version 2), the openings that open them, and batch keys.

A leaf carries ``codeCommitment = SHA-256(CODE_DOMAIN || opening || canonical_code)``:

* ``opening`` is 16 random-looking bytes (128 bits) per card, derived from the batch secret:
  ``HMAC-SHA256(open_key, OPENING_DOMAIN || uint32_be(index))[:16]``. It travels with the code (export,
  print files, deliveries), so the holder of a code can open the commitment alone, with no key that
  anybody else holds. Because the opening has 128 bits, the published commitment allows no offline
  guessing of the code, however little entropy the code has (an imported 10-digit PIN).
* ``canonical_code`` is the UTF-8 of the code in the leaf's ``codeForm``: ``CODE_FORM_EXACT`` (0) strips
  surrounding white space only; ``CODE_FORM_FOLDED`` (1) also drops spaces, tabs and dashes and upper-cases
  the ASCII letters a-z (generated codes: a cashier types what they see). Only ASCII is folded, so that every
  runtime (Python, browsers) folds alike whatever its Unicode version.
* SHA-256, not keccak: a browser checks a typed code with WebCrypto, and a contract with the precompile.

``open_key`` and ``enc_key`` (which encrypts the codes at rest) come from one batch secret by HKDF-SHA256.

An opening is shown to people as 26 Crockford base32 symbols in groups of 4 (``format_opening``); parsing
ignores case, dashes and spaces, and reads ``I``/``L`` as ``1`` and ``O`` as ``0``.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import InvalidCode, InvalidKey
from .leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED
from .serial import ALPHABET

__all__ = [
    "CODE_DOMAIN",
    "ENC_INFO",
    "MIN_KEY_BYTES",
    "OPEN_INFO",
    "OPENING_BYTES",
    "OPENING_DOMAIN",
    "OPENING_SYMBOLS",
    "canonical_code",
    "code_commitment",
    "derive_batch_keys",
    "derive_opening",
    "format_opening",
    "openings",
    "opens",
    "parse_opening",
]

CODE_DOMAIN = b"cardproof/code/v2\x00"
OPENING_DOMAIN = b"cardproof/opening/v2\x00"
OPEN_INFO = b"cardproof/open/v2"
ENC_INFO = b"cardproof/enc/v1"
MIN_KEY_BYTES = 16
"""Shortest opening key or batch secret accepted (128 bits)."""
OPENING_BYTES = 16
OPENING_SYMBOLS = 26
"""128 bits in Crockford base32 (the first symbol carries 3 bits)."""

_FOLD_DROP = str.maketrans("", "", " -\t")
_FOLD = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", " -\t")
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_VALUE.update({"I": 1, "L": 1, "O": 0})


def _check_key(key: object, what: str) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise InvalidKey(f"{what} must be bytes")
    key = bytes(key)
    if len(key) < MIN_KEY_BYTES:
        raise InvalidKey(f"{what} must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key


def canonical_code(code: object, code_form: int) -> bytes:
    """The bytes of ``code`` that are committed, in ``code_form``. InvalidCode if empty, not a str, or not
    encodable as UTF-8 (a lone surrogate), never with the code in the error."""
    if not isinstance(code, str):
        raise InvalidCode("code must be a str", "type")
    text = code.strip()
    if code_form == CODE_FORM_FOLDED:
        # ASCII letters only: str.upper() follows the Unicode version of each runtime (browsers differ).
        text = text.translate(_FOLD)
    elif code_form != CODE_FORM_EXACT:
        raise InvalidCode(f"unknown code form {code_form!r}", "form")
    if not text:
        raise InvalidCode("code is empty", "empty")
    return _utf8(text)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    # Raised here, outside the handler: a UnicodeEncodeError carries the whole code (its ``object``), and
    # would ride along as ``__context__``.
    raise InvalidCode("code is not valid Unicode text (it has a lone surrogate)", "encoding")


def _check_opening(opening: object) -> bytes:
    if not isinstance(opening, (bytes, bytearray, memoryview)) or len(opening) != OPENING_BYTES:
        raise InvalidKey(f"an opening must be {OPENING_BYTES} bytes")
    return bytes(opening)


def code_commitment(opening: bytes, code: str, code_form: int) -> bytes:
    """SHA-256(CODE_DOMAIN || opening || canonical_code(code, code_form)), 32 bytes."""
    return hashlib.sha256(CODE_DOMAIN + _check_opening(opening) + canonical_code(code, code_form)).digest()


def opens(code: str, opening: bytes, code_form: int, commitment: bytes) -> bool:
    """Whether ``code`` with ``opening`` opens ``commitment`` (constant-time compare). An empty code is False."""
    if not isinstance(commitment, (bytes, bytearray, memoryview)) or len(commitment) != 32:
        raise InvalidKey("a commitment must be 32 bytes")
    try:
        mine = code_commitment(opening, code, code_form)
    except InvalidCode:
        return False
    return hmac.compare_digest(mine, bytes(commitment))


def derive_batch_keys(batch_secret: bytes) -> tuple[bytes, bytes]:
    """``(open_key, enc_key)``, 32 bytes each, by HKDF-SHA256 (no salt) from the batch secret."""
    secret = _check_key(batch_secret, "batch secret")

    def hkdf(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)

    return hkdf(OPEN_INFO), hkdf(ENC_INFO)


def derive_opening(open_key: bytes, index: int) -> bytes:
    """The opening of card ``index``: HMAC-SHA256(open_key, OPENING_DOMAIN || uint32_be(index))[:16]."""
    key = _check_key(open_key, "opening key")
    if type(index) is not int or not 0 <= index <= 0xFFFFFFFF:
        raise InvalidKey("index must be an int in 0 .. 2**32 - 1")
    return hmac.new(key, OPENING_DOMAIN + index.to_bytes(4, "big"), hashlib.sha256).digest()[:OPENING_BYTES]


def _opening_mac(open_key: bytes) -> tuple["hashlib._Hash", "hashlib._Hash"]:
    """Keyed SHA-256 states for HMAC-SHA256(open_key, OPENING_DOMAIN + ...) (RFC 2104, pads precomputed;
    the domain prefix is absorbed once). Same bytes as ``issuer.core.commitment.derive_opening`` (tests
    check it), about twice as fast as ``hmac.HMAC.copy()`` per card."""
    open_key = _check_key(open_key, "opening key")
    key = hashlib.sha256(open_key).digest() if len(open_key) > 64 else open_key
    key = key.ljust(64, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(OPENING_DOMAIN)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


def openings(open_key: bytes, lo: int, hi: int) -> list[bytes]:
    """``[derive_opening(open_key, i) for i in range(lo, hi)]``, with precomputed HMAC pads."""
    if type(lo) is not int or type(hi) is not int or not 0 <= lo <= hi <= 1 << 32:
        raise InvalidKey("indices must be ints with 0 <= lo <= hi <= 2**32")
    inner, outer = _opening_mac(open_key)
    icopy, ocopy = inner.copy, outer.copy
    out: list[bytes] = []
    append = out.append
    for i in range(lo, hi):
        h = icopy()
        h.update(i.to_bytes(4, "big"))
        o = ocopy()
        o.update(h.digest())
        append(o.digest()[:OPENING_BYTES])
    return out


def format_opening(opening: bytes) -> str:
    """``XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XX``: 26 Crockford base32 symbols, most significant first."""
    value = int.from_bytes(_check_opening(opening), "big")
    symbols = "".join(ALPHABET[(value >> (5 * (OPENING_SYMBOLS - 1 - i))) & 31] for i in range(OPENING_SYMBOLS))
    return "-".join(symbols[i:i + 4] for i in range(0, OPENING_SYMBOLS, 4))


def parse_opening(text: object) -> bytes:
    """Inverse of :func:`format_opening`; also takes 32 hex digits (``0x`` optional). InvalidKey if malformed.

    The error never repeats the text (an opening is a secret of the card's holder)."""
    if not isinstance(text, str):
        raise InvalidKey("an opening must be text")
    t = text.strip().translate(_FOLD_DROP).upper()
    if len(t) in (32, 34) and all(c in "0123456789ABCDEF" for c in t.removeprefix("0X")):
        raw = bytes.fromhex(t.removeprefix("0X"))
        if len(raw) == OPENING_BYTES:
            return raw
    if len(t) != OPENING_SYMBOLS:
        raise InvalidKey(f"an opening is {OPENING_SYMBOLS} base32 symbols (XXXX-XXXX-...-XX)")
    value = 0
    for c in t:
        v = _VALUE.get(c)
        if v is None:
            raise InvalidKey("an opening holds only Crockford base32 symbols (0-9, A-Z without I L O U)")
        value = (value << 5) | v
    if value >> (8 * OPENING_BYTES):
        raise InvalidKey("an opening's first symbol is 0-7")
    return value.to_bytes(OPENING_BYTES, "big")
