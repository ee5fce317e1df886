"""Keyed commitments to secret card codes, and the per-batch keys they use.

A leaf carries ``codeCommitment = HMAC-SHA256(commit_key, b"cardproof/code/v1\\x00" + code)``
where ``code`` is the code with surrounding white space stripped, UTF-8 encoded (no other
normalisation: callers that want case-insensitive codes must canonicalise before committing
and before checking). The commit key and the encryption key of a batch are derived from one
batch secret with HKDF-SHA256.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import InvalidCode, InvalidKey

__all__ = [
    "CODE_DOMAIN",
    "COMMIT_INFO",
    "ENC_INFO",
    "MIN_KEY_BYTES",
    "check_code",
    "code_commitment",
    "derive_batch_keys",
]

CODE_DOMAIN = b"cardproof/code/v1\x00"
COMMIT_INFO = b"cardproof/commit/v1"
ENC_INFO = b"cardproof/enc/v1"
MIN_KEY_BYTES = 16
"""Shortest commit key or batch secret accepted (128 bits)."""


def _check_key(key: object, what: str) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise InvalidKey(f"{what} must be bytes")
    key = bytes(key)
    if len(key) < MIN_KEY_BYTES:
        raise InvalidKey(f"{what} must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key


def _code_bytes(code: object) -> bytes:
    if not isinstance(code, str):
        raise InvalidCode("code must be a str", "type")
    raw = code.strip().encode("utf-8")
    if not raw:
        raise InvalidCode("code is empty", "empty")
    return raw


def code_commitment(commit_key: bytes, code: str) -> bytes:
    """HMAC-SHA256(commit_key, CODE_DOMAIN + code.strip().encode("utf-8")), 32 bytes."""
    key = _check_key(commit_key, "commit key")
    return hmac.new(key, CODE_DOMAIN + _code_bytes(code), hashlib.sha256).digest()


def check_code(commit_key: bytes, code: str, commitment: bytes) -> bool:
    """Whether ``code`` opens ``commitment`` (constant-time compare). An empty code is False."""
    if not isinstance(commitment, (bytes, bytearray, memoryview)) or len(commitment) != 32:
        raise InvalidKey("commitment must be 32 bytes")
    try:
        mine = code_commitment(commit_key, code)
    except InvalidCode:
        return False
    return hmac.compare_digest(mine, bytes(commitment))


def derive_batch_keys(batch_secret: bytes) -> tuple[bytes, bytes]:
    """``(commit_key, enc_key)``, 32 bytes each, by HKDF-SHA256 (no salt) from the batch secret."""
    secret = _check_key(batch_secret, "batch secret")

    def hkdf(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)

    return hkdf(COMMIT_INFO), hkdf(ENC_INFO)
