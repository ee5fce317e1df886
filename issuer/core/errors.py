"""Errors of the consensus-critical core.

Every error is a :class:`CoreError`, itself a :class:`ValueError`, so callers may catch either.

Messages name the problem (a field, a position, a length) and never the secret it was about:
no message, ``repr`` or ``args`` of these errors carries a card's secret code. Public data
(a serial, a leaf field, a hash) may appear.
"""

from __future__ import annotations

__all__ = [
    "CoreError",
    "InvalidCode",
    "InvalidKey",
    "InvalidLeaf",
    "InvalidProof",
    "InvalidSealedDelivery",
    "InvalidSerial",
    "InvalidTree",
    "InvalidTreeDump",
    "SealedDeliveryUnreadable",
]


class CoreError(ValueError):
    """Base class of the errors raised by ``issuer.core``."""


class InvalidSerial(CoreError):
    """A card serial is malformed: wrong length, a symbol outside the alphabet, or a bad check symbol."""


class InvalidLeaf(CoreError):
    """A card leaf field is out of range, of the wrong length, or of the wrong type."""


class InvalidProof(CoreError):
    """A Merkle proof does not lead from the leaf to the expected root, or is malformed."""


class InvalidTree(CoreError):
    """Leaf hashes or tree nodes handed to the Merkle code are malformed (empty, wrong length)."""


class InvalidTreeDump(CoreError):
    """An OpenZeppelin ``standard-v1`` tree dump is malformed or does not recompute."""


class InvalidSealedDelivery(CoreError):
    """A delivery payload is malformed: bad framing, version, length, field, or compressed stream."""


class SealedDeliveryUnreadable(CoreError):
    """A sealed delivery does not open with this key: wrong key, or a blob that was altered or cut."""


class InvalidKey(CoreError):
    """A key or batch secret has the wrong type or length."""


class InvalidCode(CoreError):
    """A secret code is unusable (empty, too long, control characters).

    ``reason`` is a short machine-readable word (``"empty"``, ``"too_long"``, ``"control_char"``,
    ``"type"``, ``"encoding"`` for text that is not valid Unicode, ``"form"`` for an unknown code form);
    the message explains it without quoting the code.
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason
