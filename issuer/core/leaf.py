"""The card leaf: the one Python definition of what every batch root commits to.

``LEAF_FIELDS`` mirrors ``struct CardLeaf`` in ``contracts/ICardRegistry.sol`` field for field
(docs/leaf.md is checked against it by the tests). The leaf hash is OpenZeppelin
StandardMerkleTree's: ``keccak256(keccak256(abi.encode(leaf)))``, with
``LEAF_ENCODING`` as the tree's ``leafEncoding``.

The JSON form of a leaf (``CardLeaf.to_json``) is the ``value`` array stored in an OpenZeppelin
``standard-v1`` dump: ``bytesN`` as lower-case ``"0x"`` hex of exactly N bytes, ``uintN`` as
decimal strings (StandardMerkleTree.dump stores the values exactly as they were handed to
``StandardMerkleTree.of``; these are the forms cardproof hands it, and that @metamask/abi-utils
encodes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Iterable, Sequence

from .errors import InvalidLeaf
from .keccak import keccak256_factory

__all__ = [
    "CODE_FORM_EXACT",
    "CODE_FORM_FOLDED",
    "LEAF_ATTRS",
    "LEAF_ENCODING",
    "LEAF_FIELDS",
    "LEAF_FIELD_DOCS",
    "LEAF_VERSION",
    "CardLeaf",
    "bytes32_to_sku",
    "currency_to_bytes3",
    "bytes3_to_currency",
    "encode_leaf",
    "leaf_fields_markdown",
    "leaf_hash",
    "leaf_hashes",
    "leaf_hashes_from_json",
    "sku_to_bytes32",
]

# Consensus-critical: order and types are those of `struct CardLeaf` in contracts/ICardRegistry.sol.
LEAF_FIELDS: tuple[tuple[str, str], ...] = (
    ("version", "uint16"),
    ("batchId", "bytes32"),
    ("index", "uint32"),
    ("serial", "uint80"),
    ("sku", "bytes32"),
    ("faceValue", "uint128"),
    ("currency", "bytes3"),
    ("expiry", "uint64"),
    ("codeForm", "uint8"),
    ("codeCommitment", "bytes32"),
)
LEAF_ENCODING: list[str] = [t for _, t in LEAF_FIELDS]
"""The ``leafEncoding`` of the OpenZeppelin StandardMerkleTree."""


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


LEAF_ATTRS: tuple[str, ...] = tuple(_snake(name) for name, _ in LEAF_FIELDS)
"""Python attribute of each field of ``LEAF_FIELDS``, in the same order."""

LEAF_VERSION = 2
"""The leaf format this code writes and reads (``version`` field). A leaf of any other version is refused:
a new format gets a new number here, a new ``struct``, and code that knows both."""

LEAF_FIELD_DOCS: dict[str, str] = {
    "version": "Leaf format version, 2. Any change to the leaf or the commitment needs a new number.",
    "batchId": "Batch id; its first 20 bytes are the issuer's address.",
    "index": "Position of the card in its batch, 0-based; indexes the on-chain bitmaps.",
    "serial": "The card's public serial: 80 random bits, shown as Crockford base32 with a check symbol.",
    "sku": "Product SKU, printable ASCII (1-32 chars), right-padded with zero bytes.",
    "faceValue": "Face value in the currency's minor units.",
    "currency": "ISO 4217 alphabetic currency code, 3 upper-case ASCII letters.",
    "expiry": "Unix time after which the card is expired; 0 means it never expires.",
    "codeForm": "How a typed code is canonicalised before it is committed: 0 exact, 1 case- and dash-insensitive.",
    "codeCommitment": "SHA-256 over a domain tag, the card's 128-bit opening and the canonical code; never the code.",
}


def _bits(abi_type: str) -> int:
    return int(abi_type[4:])


def _nbytes(abi_type: str) -> int:
    return int(abi_type[5:])


_BYTES_LEN = {name: _nbytes(t) for name, t in LEAF_FIELDS if t.startswith("bytes")}
_ZERO29 = bytes(29)
_CURRENCY_RE = re.compile(rb"[A-Z]{3}")
_SKU_RE = re.compile(rb"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def sku_to_bytes32(sku: str) -> bytes:
    """``"GC-100-EUR"`` -> 32 bytes, ASCII right-padded with zero bytes.

    A SKU is 1 to 32 printable ASCII characters, without leading or trailing spaces.
    """
    if not isinstance(sku, str):
        raise InvalidLeaf("sku must be a str")
    try:
        raw = sku.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidLeaf("sku must be printable ASCII") from None
    if not 1 <= len(raw) <= 32:
        raise InvalidLeaf(f"sku must be 1 to 32 characters, got {len(raw)}")
    if _SKU_RE.fullmatch(raw) is None:
        raise InvalidLeaf("sku must be printable ASCII without leading or trailing spaces")
    return raw.ljust(32, b"\x00")


def bytes32_to_sku(value: bytes) -> str:
    """Inverse of :func:`sku_to_bytes32`; raises InvalidLeaf unless ``value`` is such a padded SKU."""
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise InvalidLeaf("sku must be 32 bytes")
    raw = bytes(value).rstrip(b"\x00")
    if _SKU_RE.fullmatch(raw) is None:
        raise InvalidLeaf("sku must be printable ASCII right-padded with zero bytes")
    return raw.decode("ascii")


def currency_to_bytes3(code: str) -> bytes:
    """``"EUR"`` -> ``b"EUR"``; an ISO 4217 alphabetic code (lower case is upper-cased)."""
    if not isinstance(code, str):
        raise InvalidLeaf("currency must be a str")
    try:
        raw = code.upper().encode("ascii")
    except UnicodeEncodeError:
        raise InvalidLeaf("currency must be 3 ASCII letters") from None
    if _CURRENCY_RE.fullmatch(raw) is None:
        raise InvalidLeaf("currency must be 3 ASCII letters")
    return raw


def bytes3_to_currency(value: bytes) -> str:
    """``b"EUR"`` -> ``"EUR"``."""
    if not isinstance(value, (bytes, bytearray)) or _CURRENCY_RE.fullmatch(bytes(value)) is None:
        raise InvalidLeaf("currency must be 3 upper-case ASCII letters")
    return bytes(value).decode("ascii")


@dataclass(frozen=True, slots=True, init=False)
class CardLeaf:
    """One card as committed to by its batch root. Field order is ``LEAF_FIELDS``'s.

    Validated on construction: ``bytes32``/``bytes3`` fields are ``bytes`` of exactly that length
    (``bytearray``/``memoryview`` are copied to ``bytes``), ``uintN`` fields are ``int`` (not ``bool``)
    in ``0 .. 2**N - 1``, ``sku`` is a padded printable-ASCII SKU, ``currency`` three letters A-Z.
    """

    version: int
    batch_id: bytes
    index: int
    serial: int
    sku: bytes
    face_value: int
    currency: bytes
    expiry: int
    code_form: int
    code_commitment: bytes

    def __init__(
        self,
        version: int,
        batch_id: bytes,
        index: int,
        serial: int,
        sku: bytes,
        face_value: int,
        currency: bytes,
        expiry: int,
        code_form: int,
        code_commitment: bytes,
    ) -> None:
        # Written out (not a loop over LEAF_FIELDS) for speed: batches have a million leaves.
        # _CHECKS below is derived from LEAF_FIELDS and the tests compare the two.
        if version != LEAF_VERSION or type(version) is not int:
            version = _version_arg(version)
        if type(batch_id) is not bytes or len(batch_id) != 32:
            batch_id = _bytes_arg(batch_id, "batchId", 32)
        if type(index) is not int or not 0 <= index <= 0xFFFFFFFF:
            index = _uint_arg(index, "index", 32)
        if type(serial) is not int or not 0 <= serial <= 0xFFFFFFFFFFFFFFFFFFFF:
            serial = _uint_arg(serial, "serial", 80)
        if type(sku) is not bytes or sku not in _GOOD_SKUS:
            sku = _sku_arg(sku)
        if type(face_value) is not int or not 0 <= face_value <= 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF:
            face_value = _uint_arg(face_value, "faceValue", 128)
        if type(currency) is not bytes or currency not in _GOOD_CURRENCIES:
            currency = _currency_arg(currency)
        if type(expiry) is not int or not 0 <= expiry <= 0xFFFFFFFFFFFFFFFF:
            expiry = _uint_arg(expiry, "expiry", 64)
        if type(code_form) is not int or code_form not in _CODE_FORMS:
            code_form = _code_form_arg(code_form)
        if type(code_commitment) is not bytes or len(code_commitment) != 32:
            code_commitment = _bytes_arg(code_commitment, "codeCommitment", 32)
        _set = object.__setattr__
        _set(self, "version", version)
        _set(self, "batch_id", batch_id)
        _set(self, "index", index)
        _set(self, "serial", serial)
        _set(self, "sku", sku)
        _set(self, "face_value", face_value)
        _set(self, "currency", currency)
        _set(self, "expiry", expiry)
        _set(self, "code_form", code_form)
        _set(self, "code_commitment", code_commitment)

    # -- conversions -------------------------------------------------------------------------

    def as_tuple(self) -> tuple:
        """The fields in ``LEAF_FIELDS`` order, as web3 takes a ``CardLeaf`` struct argument."""
        return (
            self.version,
            self.batch_id,
            self.index,
            self.serial,
            self.sku,
            self.face_value,
            self.currency,
            self.expiry,
            self.code_form,
            self.code_commitment,
        )

    def to_json(self) -> list[str]:
        """The OpenZeppelin dump ``value``: ``"0x"`` lower-case hex for bytesN, decimal strings for uintN."""
        return [
            str(self.version),
            "0x" + self.batch_id.hex(),
            str(self.index),
            str(self.serial),
            "0x" + self.sku.hex(),
            str(self.face_value),
            "0x" + self.currency.hex(),
            str(self.expiry),
            str(self.code_form),
            "0x" + self.code_commitment.hex(),
        ]

    @classmethod
    def from_json(cls, value: Sequence[Any]) -> "CardLeaf":
        """Parse a dump ``value`` array (the inverse of :meth:`to_json`).

        Also takes what @metamask/abi-utils takes for the same leaf: uints as ``int``, decimal
        strings or ``"0x"`` hex strings; bytesN as ``"0x"`` hex of exactly N bytes in either case.
        """
        fields_ = _parse_json_fast(value)
        if fields_ is None:
            fields_ = _parse_json_slow(value)
        return cls(*fields_)

    def with_index(self, index: int) -> "CardLeaf":
        """A copy at another ``index``."""
        return CardLeaf(
            self.version, self.batch_id, index, self.serial, self.sku, self.face_value, self.currency,
            self.expiry, self.code_form, self.code_commitment,
        )

    @property
    def sku_str(self) -> str:
        return bytes32_to_sku(self.sku)

    @property
    def currency_str(self) -> str:
        return self.currency.decode("ascii")


CODE_FORM_EXACT = 0
"""``codeForm`` 0: the code is committed as typed, surrounding white space stripped (imported codes)."""
CODE_FORM_FOLDED = 1
"""``codeForm`` 1: upper-cased, spaces and dashes dropped before committing (generated codes)."""
_CODE_FORMS = frozenset((CODE_FORM_EXACT, CODE_FORM_FOLDED))

_GOOD_SKUS: set[bytes] = set()
_GOOD_CURRENCIES: set[bytes] = set()


def _bytes_arg(v: Any, name: str, n: int) -> bytes:
    if type(v) is not bytes:
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise InvalidLeaf(f"{name} must be bytes, got {type(v).__name__}")
        v = bytes(v)
    if len(v) != n:
        raise InvalidLeaf(f"{name} must be {n} bytes, got {len(v)}")
    return v


def _uint_arg(v: Any, name: str, bits: int) -> int:
    if type(v) is not int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise InvalidLeaf(f"{name} must be an int, got {type(v).__name__}")
        v = int(v)
    if not 0 <= v < 1 << bits:
        raise InvalidLeaf(f"{name} is out of range for uint{bits}")
    return v


def _version_arg(v: Any) -> int:
    v = _uint_arg(v, "version", 16)
    if v != LEAF_VERSION:
        raise InvalidLeaf(f"leaf version {v} is not supported (this is version {LEAF_VERSION})")
    return v


def _code_form_arg(v: Any) -> int:
    v = _uint_arg(v, "codeForm", 8)
    if v not in _CODE_FORMS:
        raise InvalidLeaf(f"codeForm {v} is not defined (0 exact, 1 folded)")
    return v


def _sku_arg(v: Any) -> bytes:
    v = _bytes_arg(v, "sku", 32)
    bytes32_to_sku(v)
    if len(_GOOD_SKUS) < 4096:
        _GOOD_SKUS.add(v)
    return v


def _currency_arg(v: Any) -> bytes:
    v = _bytes_arg(v, "currency", 3)
    if _CURRENCY_RE.fullmatch(v) is None:
        raise InvalidLeaf("currency must be 3 upper-case ASCII letters")
    if len(_GOOD_CURRENCIES) < 4096:
        _GOOD_CURRENCIES.add(v)
    return v


# (attribute, Solidity name, byte size or 0 for uint, bits for uint or 0), from LEAF_FIELDS;
# the tests check CardLeaf.__init__ against it.
_CHECKS = tuple(
    (attr, name, _nbytes(t) if t.startswith("bytes") else 0, _bits(t) if t.startswith("uint") else 0)
    for (name, t), attr in zip(LEAF_FIELDS, LEAF_ATTRS)
)
# The hand-unrolled code in this module (as_tuple, to_json, from_json, encode_leaf, leaf_hashes)
# follows this order and these types; refuse to import if they drift apart.
if tuple(f.name for f in fields(CardLeaf)) != LEAF_ATTRS or LEAF_ENCODING != [
    "uint16", "bytes32", "uint32", "uint80", "bytes32", "uint128", "bytes3", "uint64", "uint8", "bytes32"
]:  # pragma: no cover
    raise ImportError("CardLeaf and its hand-written encoders disagree with LEAF_FIELDS")


_HEX_RE = re.compile(r"0x[0-9a-fA-F]+")


def _parse_json_fast(value: Any) -> tuple | None:
    """The common case of :meth:`CardLeaf.from_json` (decimal-string uints, exact-length hex
    bytes) in a few C calls; None for anything else, which ``_parse_json_slow`` then handles
    (and, for bad input, explains). Ranges and SKU/currency rules are left to CardLeaf()."""
    if type(value) is not list and type(value) is not tuple:
        return None
    try:
        v, b, i, s, k, f, c, e, m, h = value
        if (
            len(b) == 66 and len(k) == 66 and len(c) == 8 and len(h) == 66
            and b[:2] == k[:2] == c[:2] == h[:2] == "0x"
        ):
            digits = v + i + s + f + e + m
            if digits.isdigit() and digits.isascii():
                raw = bytes.fromhex(b[2:] + k[2:] + c[2:] + h[2:])
                if len(raw) == 99:
                    return (int(v), raw[:32], int(i), int(s), raw[32:64], int(f), raw[64:67], int(e), int(m),
                            raw[67:])
    except (TypeError, ValueError):
        pass
    return None


def _parse_json_slow(value: Any) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidLeaf(f"a leaf value must be an array of {len(LEAF_FIELDS)} items")
    if len(value) != len(LEAF_FIELDS):
        raise InvalidLeaf(f"a leaf value must have {len(LEAF_FIELDS)} items, got {len(value)}")
    v, b, i, s, k, f, c, e, m, h = value
    return (
        _json_uint(v, "version"),
        _json_bytes(b, "batchId", 32),
        _json_uint(i, "index"),
        _json_uint(s, "serial"),
        _json_bytes(k, "sku", 32),
        _json_uint(f, "faceValue"),
        _json_bytes(c, "currency", 3),
        _json_uint(e, "expiry"),
        _json_uint(m, "codeForm"),
        _json_bytes(h, "codeCommitment", 32),
    )


def _json_uint(v: Any, name: str) -> int:
    if type(v) is str:
        if v.isdigit() and v.isascii():
            return int(v)
        if _HEX_RE.fullmatch(v):
            return int(v, 16)
    elif type(v) is int:
        return v
    raise InvalidLeaf(f"{name} must be a decimal string, 0x-hex string or int")


def _json_bytes(v: Any, name: str, n: int) -> bytes:
    if type(v) is str and len(v) == 2 + 2 * n and v.startswith("0x"):
        try:
            out = bytes.fromhex(v[2:])
        except ValueError:
            pass
        else:
            if len(out) == n:
                return out
    raise InvalidLeaf(f"{name} must be a 0x-prefixed hex string of {n} bytes")


# -- encoding and hashing --------------------------------------------------------------------


def encode_leaf(leaf: CardLeaf) -> bytes:
    """``abi.encode(leaf)``: 10 static words of 32 bytes; bytesN left-aligned, uintN big-endian."""
    return b"".join(
        (
            leaf.version.to_bytes(32, "big"),
            leaf.batch_id,
            leaf.index.to_bytes(32, "big"),
            leaf.serial.to_bytes(32, "big"),
            leaf.sku,
            leaf.face_value.to_bytes(32, "big"),
            leaf.currency + _ZERO29,
            leaf.expiry.to_bytes(32, "big"),
            leaf.code_form.to_bytes(32, "big"),
            leaf.code_commitment,
        )
    )


def leaf_hash(leaf: CardLeaf) -> bytes:
    """OpenZeppelin StandardMerkleTree leaf hash: ``keccak256(keccak256(abi.encode(leaf)))``."""
    k = keccak256_factory
    return k(k(encode_leaf(leaf)).digest()).digest()


PARALLEL_MIN_LEAVES = 1 << 15
"""Below this many leaves ``workers > 1`` is ignored: forking costs more than it saves."""


def leaf_hashes(leaves: Iterable[CardLeaf], *, workers: int = 1) -> list[bytes]:
    """``[leaf_hash(l) for l in leaves]``, inlined for speed (about 3 µs a leaf here).

    ``workers=2`` hashes the second half in a forked process (big batches; not in threaded servers).
    """
    if workers > 1:
        from ._fork import split_hashes

        return split_hashes(leaf_hashes, list(leaves), workers, PARALLEL_MIN_LEAVES)
    k = keccak256_factory
    z = _ZERO29
    join = b"".join
    return [
        k(
            k(
                join(
                    (
                        leaf.version.to_bytes(32, "big"),
                        leaf.batch_id,
                        leaf.index.to_bytes(32, "big"),
                        leaf.serial.to_bytes(32, "big"),
                        leaf.sku,
                        leaf.face_value.to_bytes(32, "big"),
                        leaf.currency + z,
                        leaf.expiry.to_bytes(32, "big"),
                        leaf.code_form.to_bytes(32, "big"),
                        leaf.code_commitment,
                    )
                )
            ).digest()
        ).digest()
        for leaf in leaves
    ]


def leaf_hashes_from_json(values: Iterable[Sequence[Any]], *, workers: int = 1) -> list[bytes]:
    """``leaf_hashes([CardLeaf.from_json(v) for v in values])`` without building the CardLeaf
    objects: the bulk path for values in dump form. Same validation, same InvalidLeaf.
    ``workers`` as in :func:`leaf_hashes`."""
    if workers > 1:
        from ._fork import split_hashes

        return split_hashes(leaf_hashes_from_json, list(values), workers, PARALLEL_MIN_LEAVES)
    k = keccak256_factory
    join = b"".join
    # Leaves of a batch share version and batchId, and mostly sku, faceValue, currency, expiry and
    # codeForm. The words of those, keyed by their exact JSON strings, are cached once a leaf with
    # those strings has passed CardLeaf.from_json (parsing is a function of the strings alone), so
    # most leaves only parse index, serial and codeCommitment.
    shared: dict[tuple, tuple[bytes, bytes]] = {}
    out = []
    append = out.append
    for value in values:
        try:
            v, b, i, s, sk, f, c, e, m, h = value
            pre = shared.get((v, b, sk, f, c, e, m))
            if (
                pre is not None
                and (type(value) is list or type(value) is tuple)
                and type(i) is str
                and type(s) is str
                and type(h) is str
            ):
                digits = i + s
                if digits.isdigit() and digits.isascii() and len(h) == 66 and h.startswith("0x"):
                    ii, ss, hh = int(i), int(s), bytes.fromhex(h[2:])
                    if ii <= 0xFFFFFFFF and ss <= 0xFFFFFFFFFFFFFFFFFFFF and len(hh) == 32:
                        enc = join((pre[0], ii.to_bytes(32, "big"), ss.to_bytes(32, "big"), pre[1], hh))
                        append(k(k(enc).digest()).digest())
                        continue
        except (TypeError, ValueError):
            pass
        leaf = CardLeaf.from_json(value)  # validates, or raises InvalidLeaf
        append(leaf_hash(leaf))
        if len(value) == 10 and len(shared) < 4096:
            key = (value[0], value[1], value[4], value[5], value[6], value[7], value[8])
            if all(type(x) is str for x in key):
                shared[key] = (
                    leaf.version.to_bytes(32, "big") + leaf.batch_id,
                    leaf.sku + leaf.face_value.to_bytes(32, "big") + leaf.currency + _ZERO29
                    + leaf.expiry.to_bytes(32, "big") + leaf.code_form.to_bytes(32, "big"),
                )
    return out


# -- documentation ---------------------------------------------------------------------------

_JSON_FORM = {"bytes": '`"0x"` + {hexlen} lower-case hex digits', "uint": "decimal string"}


def leaf_fields_markdown() -> str:
    """The field table of docs/leaf.md, generated from ``LEAF_FIELDS`` (the tests compare them)."""
    lines = [
        "| # | Solidity field | ABI type | Python attribute | dump JSON form | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for i, ((name, abi_type), attr) in enumerate(zip(LEAF_FIELDS, LEAF_ATTRS)):
        if abi_type.startswith("bytes"):
            form = _JSON_FORM["bytes"].format(hexlen=2 * _nbytes(abi_type))
        else:
            form = _JSON_FORM["uint"]
        lines.append(f"| {i} | `{name}` | `{abi_type}` | `{attr}` | {form} | {LEAF_FIELD_DOCS[name]} |")
    return "\n".join(lines) + "\n"
