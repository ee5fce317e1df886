"""Sealed delivery of an escrow order: the cards, their openings and a multiproof, encrypted to the buyer.

Payload (``encode_payload``), version 1, integers big-endian::

    b"CPSD" || u8 version (1) || zlib(body)
    body = u64 chainId || escrow (20 bytes) || u256 orderId || batchId (32) || root (32)
        || u32 nCards || u32 nProof || u32 nFlags
        || nCards x card record (156 bytes): the CardLeaf, packed (u16 version, batchId 32, u32 index,
           u80 serial, sku 32, u128 faceValue, currency 3, u64 expiry, u8 codeForm, codeCommitment 32) || opening 16
        || nCards x u16 code length || the codes, UTF-8, concatenated
        || nProof x 32-byte proof node
        || flags, one bit each, first flag in the top bit of the first byte, zero padding bits

The cards are in the multiproof's leaf order (:mod:`issuer.core.multiproof`), so ``(leaf_hash(card.leaf)
for card in cards), proof, flags`` is the OpenZeppelin multiproof of the order under ``root``. The body is
canonical (fixed widths, strict UTF-8, no padding bits, nothing after it, counts that add up, every card of
``batchId``); the zlib stream around it is not (any valid stream of the body is read), and a body over
``MAX_BODY_BYTES`` is refused either way. :func:`decode_payload` raises :class:`InvalidSealedDelivery`.
Decoding checks form, not truth: the receiver still verifies the multiproof against the root anchored on
chain (:func:`~issuer.core.multiproof.verify_multiproof`) and each card's code (:meth:`DeliveryCard.opens`).

Sealing (``seal``) is ECIES on secp256k1 by ``eciespy`` with a fixed configuration (the library's, and
``eciesjs``'s, defaults): ``blob = ephemeral public key (65 bytes, uncompressed) || nonce (16) || tag (16)
|| AES-256-GCM ciphertext``, the AES key being ``HKDF-SHA256(ephemeral point || shared point)``, both
points uncompressed, no salt or info. A fresh ephemeral key per blob, so that AES key (the *evidence key*)
opens that one blob only: a buyer who hands it to an arbiter reveals one delivery and nothing of the
private key. ``sealed_hash`` (keccak256 of the blob) is what an escrow contract records.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from ecies import decrypt as _ecies_decrypt
from ecies import encrypt as _ecies_encrypt
from ecies.config import Config
from ecies.keys import PrivateKey, PublicKey
from ecies.utils import sym_decrypt

from .commitment import OPENING_BYTES, canonical_code, opens
from .errors import CoreError, InvalidKey, InvalidSealedDelivery, SealedDeliveryUnreadable
from .keccak import keccak256
from .leaf import CardLeaf

__all__ = [
    "DeliveryCard",
    "DeliveryPayload",
    "EPHEMERAL_KEY_BYTES",
    "MAGIC",
    "MAX_BODY_BYTES",
    "PAYLOAD_VERSION",
    "SEALED_OVERHEAD",
    "decode_payload",
    "encode_payload",
    "evidence_key",
    "open_sealed",
    "open_with_evidence",
    "public_key_of",
    "seal",
    "sealed_hash",
]

MAGIC = b"CPSD"
PAYLOAD_VERSION = 1
MAX_BODY_BYTES = 64 << 20
"""Largest body encoded or decoded (a bound on decompression): 65,535 cards with codes of up to ~850 bytes."""

_CURVE = "secp256k1"
_CONFIG = Config(
    elliptic_curve=_CURVE,
    is_ephemeral_key_compressed=False,
    is_hkdf_key_compressed=False,
    symmetric_algorithm="aes-256-gcm",
    symmetric_nonce_length=16,
)  # ours, not the library's mutable ECIES_CONFIG: the blob format must not change under us
EPHEMERAL_KEY_BYTES = 65
SEALED_OVERHEAD = EPHEMERAL_KEY_BYTES + 16 + 16
"""Bytes of a blob besides the ciphertext: ephemeral key, nonce, tag."""
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141  # secp256k1 group order

_HEAD = struct.Struct(">Q20s32s32s32sIII")
_CARD = struct.Struct(">H32sI10s32s16s3sQB32s16s")


# -- the payload -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryCard:
    """One delivered card: its leaf, its secret code (as issued) and the opening of its commitment."""

    leaf: CardLeaf
    code: str = field(repr=False)
    opening: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if type(self.leaf) is not CardLeaf:
            raise InvalidSealedDelivery("a card needs a CardLeaf")
        if type(self.opening) is not bytes or len(self.opening) != OPENING_BYTES:
            raise InvalidSealedDelivery(f"card {self.leaf.index}: the opening must be {OPENING_BYTES} bytes")
        try:
            canonical_code(self.code, self.leaf.code_form)
        except CoreError as e:
            raise InvalidSealedDelivery(f"card {self.leaf.index}: {e}") from None

    @property
    def index(self) -> int:
        return self.leaf.index

    @property
    def serial(self) -> int:
        return self.leaf.serial

    def opens(self) -> bool:
        """Whether ``code`` and ``opening`` open the leaf's ``codeCommitment``."""
        return opens(self.code, self.opening, self.leaf.code_form, self.leaf.code_commitment)


@dataclass(frozen=True)
class DeliveryPayload:
    """What the buyer of an escrow order receives. Validated on construction (InvalidSealedDelivery)."""

    chain_id: int
    escrow: str
    """The escrow contract, EIP-55 checksummed."""
    order_id: int
    batch_id: bytes
    root: bytes
    cards: tuple[DeliveryCard, ...]
    """In the multiproof's leaf order."""
    proof: tuple[bytes, ...]
    flags: tuple[bool, ...]
    version: int = PAYLOAD_VERSION

    def __post_init__(self) -> None:
        _set = object.__setattr__
        for name in ("cards", "proof", "flags"):
            if not isinstance(getattr(self, name), (tuple, list)):
                raise InvalidSealedDelivery(f"{name} must be a tuple")
            _set(self, name, tuple(getattr(self, name)))
        if self.version != PAYLOAD_VERSION or type(self.version) is not int:
            raise InvalidSealedDelivery(f"payload version must be {PAYLOAD_VERSION}")
        _uint(self.chain_id, "chain_id", 64)
        if self.chain_id == 0:
            raise InvalidSealedDelivery("chain_id must not be 0")
        _uint(self.order_id, "order_id", 256)
        if type(self.escrow) is not str or _address_bytes(self.escrow) is None:
            raise InvalidSealedDelivery("escrow must be an EIP-55 checksummed address")
        for name in ("batch_id", "root"):
            if type(getattr(self, name)) is not bytes or len(getattr(self, name)) != 32:
                raise InvalidSealedDelivery(f"{name} must be 32 bytes")
        if not self.cards:
            raise InvalidSealedDelivery("a delivery has at least one card")
        for c in self.cards:
            if type(c) is not DeliveryCard:
                raise InvalidSealedDelivery("cards must be DeliveryCards")
            if c.leaf.batch_id != self.batch_id:
                raise InvalidSealedDelivery(f"card {c.leaf.index} is not of batch_id")
        if not all(type(p) is bytes and len(p) == 32 for p in self.proof):
            raise InvalidSealedDelivery("proof nodes must be 32 bytes")
        if not all(type(f) is bool for f in self.flags):
            raise InvalidSealedDelivery("flags must be bools")
        if len(self.cards) + len(self.proof) != len(self.flags) + 1:
            raise InvalidSealedDelivery("cards + proof != flags + 1: not a multiproof")


def _uint(v: object, name: str, bits: int) -> None:
    if type(v) is not int or not 0 <= v < 1 << bits:
        raise InvalidSealedDelivery(f"{name} must be an int in uint{bits}")


def _checksum(addr: bytes) -> str:
    """EIP-55: hex digit i upper-cased where nibble i of keccak256(lower-case hex) is >= 8."""
    low = addr.hex()
    h = keccak256(low.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(low, h))


def _address_bytes(text: str) -> bytes | None:
    if len(text) != 42 or not text.startswith("0x"):
        return None
    try:
        raw = bytes.fromhex(text[2:])
    except ValueError:
        return None
    return raw if _checksum(raw) == text else None


def encode_payload(p: DeliveryPayload) -> bytes:
    """The canonical bytes of ``p`` (see the module docstring). InvalidSealedDelivery if too big."""
    if type(p) is not DeliveryPayload:
        raise InvalidSealedDelivery("not a DeliveryPayload")
    cards = p.cards
    codes = [c.code.encode("utf-8") for c in cards]
    if any(len(c) > 0xFFFF for c in codes):
        raise InvalidSealedDelivery("a code is longer than 65535 UTF-8 bytes")
    pack = _CARD.pack
    nf = len(p.flags)
    flag_bytes = b""
    if nf:
        bits = "".join(["1" if f else "0" for f in p.flags]) + "0" * (-nf % 8)
        flag_bytes = int(bits, 2).to_bytes(len(bits) // 8, "big")
    body = b"".join([
        _HEAD.pack(p.chain_id, _address_bytes(p.escrow), p.order_id.to_bytes(32, "big"), p.batch_id, p.root,
                   len(cards), len(p.proof), nf),
        *[pack(lf.version, lf.batch_id, lf.index, lf.serial.to_bytes(10, "big"), lf.sku,
               lf.face_value.to_bytes(16, "big"), lf.currency, lf.expiry, lf.code_form, lf.code_commitment,
               c.opening) for c in cards for lf in (c.leaf,)],
        struct.pack(f">{len(codes)}H", *map(len, codes)),
        *codes,
        *p.proof,
        flag_bytes,
    ])
    if len(body) > MAX_BODY_BYTES:
        raise InvalidSealedDelivery(f"payload body exceeds {MAX_BODY_BYTES} bytes")
    return MAGIC + bytes([PAYLOAD_VERSION]) + zlib.compress(body, 6)


def decode_payload(b: bytes) -> DeliveryPayload:
    """The payload encoded in ``b``; InvalidSealedDelivery for anything but a well-formed version-1 payload."""
    if not isinstance(b, (bytes, bytearray, memoryview)):
        raise InvalidSealedDelivery("a payload is bytes")
    b = bytes(b)
    if len(b) < 5 or b[:4] != MAGIC:
        raise InvalidSealedDelivery("not a cardproof delivery payload")
    if b[4] != PAYLOAD_VERSION:
        raise InvalidSealedDelivery(f"payload version {b[4]} is not supported")
    d = zlib.decompressobj()
    try:
        body = d.decompress(b[5:], MAX_BODY_BYTES + 1)
    except zlib.error:
        raise InvalidSealedDelivery("payload is not a valid zlib stream") from None
    if len(body) > MAX_BODY_BYTES:
        raise InvalidSealedDelivery(f"payload body exceeds {MAX_BODY_BYTES} bytes")
    if not d.eof or d.unused_data:
        raise InvalidSealedDelivery("payload zlib stream is truncated or followed by other bytes")
    try:
        return _parse_body(body)
    except InvalidSealedDelivery:
        raise
    except (CoreError, ValueError, struct.error, IndexError):
        raise InvalidSealedDelivery("payload body is malformed") from None


def _parse_body(body: bytes) -> DeliveryPayload:
    mv = memoryview(body)
    if len(body) < _HEAD.size:
        raise InvalidSealedDelivery("payload body is truncated")
    chain_id, escrow, order_id, batch_id, root, nc, np_, nf = _HEAD.unpack_from(body)
    off = _HEAD.size
    ends = off + nc * (_CARD.size + 2)
    if ends > len(body):
        raise InvalidSealedDelivery("payload body is truncated")
    records = _CARD.iter_unpack(mv[off : off + nc * _CARD.size])
    off += nc * _CARD.size
    lens = struct.unpack_from(f">{nc}H", body, off)
    off += 2 * nc
    if off + sum(lens) + 32 * np_ + (nf + 7) // 8 != len(body):
        raise InvalidSealedDelivery("payload body length does not match its counts")
    cards = []
    frm = int.from_bytes
    for i, (r, n) in enumerate(zip(records, lens)):
        try:
            leaf = CardLeaf(r[0], r[1], r[2], frm(r[3], "big"), r[4], frm(r[5], "big"), r[6], r[7], r[8], r[9])
            code = body[off : off + n].decode("utf-8")
        except (CoreError, UnicodeDecodeError) as e:
            why = "its code is not UTF-8" if isinstance(e, UnicodeDecodeError) else str(e)
            raise InvalidSealedDelivery(f"card record {i} is malformed: {why}") from None
        off += n
        cards.append(DeliveryCard(leaf, code, r[10]))
    proof = tuple(body[j : j + 32] for j in range(off, off + 32 * np_, 32))
    off += 32 * np_
    flags: tuple[bool, ...] = ()
    if nf:
        nbytes = (nf + 7) // 8
        bits = format(frm(body[off : off + nbytes], "big"), f"0{8 * nbytes}b")
        if "1" in bits[nf:]:
            raise InvalidSealedDelivery("payload flag padding bits are not zero")
        flags = tuple([c == "1" for c in bits[:nf]])
    return DeliveryPayload(
        chain_id=chain_id, escrow=_checksum(escrow), order_id=frm(order_id, "big"), batch_id=batch_id, root=root,
        cards=tuple(cards), proof=proof, flags=flags,
    )


# -- sealing ---------------------------------------------------------------------------------


def _private_key(private_key: object) -> PrivateKey:
    if type(private_key) is not bytes or len(private_key) != 32 or not 0 < int.from_bytes(private_key, "big") < _N:
        raise InvalidKey("a secp256k1 private key is 32 bytes, between 1 and the group order")
    return PrivateKey(_CURVE, private_key)


def _blob(blob: object) -> bytes:
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise SealedDeliveryUnreadable("a sealed delivery is bytes")
    blob = bytes(blob)
    if len(blob) <= SEALED_OVERHEAD:
        raise SealedDeliveryUnreadable("sealed delivery is too short")
    return blob


def public_key_of(private_key: bytes) -> bytes:
    """The 33-byte compressed secp256k1 public key of ``private_key`` (32 bytes)."""
    return _private_key(private_key).public_key.to_bytes(True)


def seal(payload: DeliveryPayload, recipient_public_key: bytes) -> bytes:
    """``payload`` encrypted to ``recipient_public_key`` (33-byte compressed or 65-byte uncompressed
    secp256k1) under a fresh ephemeral key: ``ephemeral key || nonce || tag || ciphertext``."""
    pk = recipient_public_key
    if type(pk) is not bytes or (len(pk), pk[:1]) not in ((33, b"\x02"), (33, b"\x03"), (65, b"\x04")):
        raise InvalidKey("recipient key must be a 33-byte compressed or 65-byte uncompressed secp256k1 key")
    plain = encode_payload(payload)
    try:
        PublicKey(_CURVE, pk)
    except Exception:  # coincurve: not a point of the curve
        raise InvalidKey("recipient key is not a secp256k1 point") from None
    return _ecies_encrypt(pk, plain, _CONFIG)


def sealed_hash(blob: bytes) -> bytes:
    """keccak256 of the sealed blob, as recorded on chain."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise InvalidSealedDelivery("a sealed delivery is bytes")
    return keccak256(bytes(blob))


def open_sealed(blob: bytes, private_key: bytes) -> DeliveryPayload:
    """Decrypt and decode ``blob``. SealedDeliveryUnreadable if it does not open with ``private_key``,
    InvalidSealedDelivery if it opens to a malformed payload, InvalidKey for a malformed key."""
    sk = _private_key(private_key).secret
    blob = _blob(blob)
    try:
        plain = _ecies_decrypt(sk, blob, _CONFIG)
    except Exception:  # bad ephemeral point, failed tag check: nothing of it is worth passing on
        raise SealedDeliveryUnreadable("sealed delivery does not open with this key") from None
    return decode_payload(plain)


def evidence_key(blob: bytes, private_key: bytes) -> bytes:
    """The 32-byte AES key of ``blob``, checked to open it (its tag verifies; the payload is not decoded,
    so a malformed one can still be shown). It opens this blob only and reveals nothing of ``private_key``.

    It authenticates nonce, tag and ciphertext, not the ephemeral key in front of them: whoever judges
    with it checks ``sealed_hash(blob)`` against the recorded hash first."""
    sk = _private_key(private_key)
    blob = _blob(blob)
    try:
        key = PublicKey(_CURVE, blob[:EPHEMERAL_KEY_BYTES]).decapsulate(sk, _CONFIG.is_hkdf_key_compressed)
        _sym_open(key, blob)
    except Exception:
        raise SealedDeliveryUnreadable("sealed delivery does not open with this key") from None
    return key


def open_with_evidence(blob: bytes, key: bytes) -> DeliveryPayload:
    """Decrypt and decode ``blob`` with its evidence key (from :func:`evidence_key`)."""
    if type(key) is not bytes or len(key) != 32:
        raise InvalidKey("an evidence key is 32 bytes")
    blob = _blob(blob)
    try:
        plain = _sym_open(key, blob)
    except Exception:
        raise SealedDeliveryUnreadable("sealed delivery does not open with this key") from None
    return decode_payload(plain)


def _sym_open(key: bytes, blob: bytes) -> bytes:
    return sym_decrypt(key, blob[EPHEMERAL_KEY_BYTES:], _CONFIG.symmetric_algorithm, _CONFIG.symmetric_nonce_length)
