"""Secret card codes: generation from the OS CSPRNG, and checks on imported codes.

Pure (no I/O but ``os.urandom``) and not consensus-critical: what is committed on chain is only
``issuer.core.commitment.code_commitment`` of the code, whatever format made it.

The default format is 20 Crockford base32 symbols in groups of 5 (``XXXXX-XXXXX-XXXXX-XXXXX``):
100 bits of entropy. No error message here ever contains a code.
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from dataclasses import asdict, dataclass

from issuer.core.errors import InvalidCode
from issuer.core.serial import ALPHABET

__all__ = [
    "CROCKFORD_ALPHABET",
    "DEFAULT_FORMAT",
    "MAX_IMPORTED_CODE_LENGTH",
    "MIN_DEFAULT_BITS",
    "CodeFormat",
    "InvalidCode",
    "generate_code",
    "generate_codes",
    "normalize_imported_code",
    "typed_code",
]

CROCKFORD_ALPHABET = ALPHABET  # the serials' alphabet (issuer.core.serial)
MAX_IMPORTED_CODE_LENGTH = 128
MIN_DEFAULT_BITS = 100
#: Longest typed code looked at (a cashier's typing, with spaces and dashes); longer is a wrong code.
MAX_TYPED_CODE_LENGTH = 1024

#: Dashes people (and word processors) type between groups: ASCII hyphen-minus, Unicode dashes and minus.
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"
#: Crockford's aliases, as serials read them (issuer.core.serial): I and L are 1, O is 0.
_ALIASES = {"I": "1", "L": "1", "O": "0"}
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class CodeFormat:
    """How generated codes look: ``length`` symbols of ``alphabet``, shown in groups of
    ``group_size`` (0: no grouping) joined by ``separator``."""

    alphabet: str = CROCKFORD_ALPHABET
    length: int = 20
    group_size: int = 5
    separator: str = "-"

    def __post_init__(self) -> None:
        a = self.alphabet
        if not isinstance(a, str) or not 2 <= len(a) <= 94:
            raise ValueError("alphabet must be a str of 2 to 94 symbols")
        if not all("\x21" <= c <= "\x7e" for c in a) or len(set(a)) != len(a):
            raise ValueError("alphabet must be distinct printable ASCII symbols (no space)")
        if type(self.length) is not int or not 1 <= self.length <= MAX_IMPORTED_CODE_LENGTH:
            raise ValueError(f"length must be 1 to {MAX_IMPORTED_CODE_LENGTH}")
        if type(self.group_size) is not int or self.group_size < 0:
            raise ValueError("group_size must be an int >= 0")
        s = self.separator
        if not isinstance(s, str) or not all("\x20" <= c <= "\x7e" for c in s) or set(s) & set(a):
            raise ValueError("separator must be printable ASCII (space allowed) not in the alphabet")
        if self.display_length > MAX_IMPORTED_CODE_LENGTH:
            raise ValueError(f"codes would be longer than {MAX_IMPORTED_CODE_LENGTH} characters")

    @property
    def code_form(self) -> int:
        """The leaf ``codeForm`` of these codes: folded (case, spaces and dashes ignored) when the alphabet
        has no lower-case letter and no dash, so that folding cannot merge two codes; else exact."""
        from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED

        a = self.alphabet
        return CODE_FORM_EXACT if (a != a.upper() or "-" in a) else CODE_FORM_FOLDED

    @property
    def entropy_bits(self) -> float:
        """Bits of entropy of one code: ``length * log2(len(alphabet))``."""
        return self.length * math.log2(len(self.alphabet))

    @property
    def n_groups(self) -> int:
        if not self.group_size or not self.separator:
            return 1
        return -(-self.length // self.group_size)

    @property
    def display_length(self) -> int:
        return self.length + (self.n_groups - 1) * len(self.separator)

    @property
    def capacity(self) -> int:
        """Number of distinct codes of this format."""
        return len(self.alphabet) ** self.length

    def group(self, raw: str) -> str:
        """``raw`` symbols in display form."""
        if self.n_groups == 1:
            return raw
        g = self.group_size
        return self.separator.join(raw[i : i + g] for i in range(0, len(raw), g))

    def ungroup(self, code: str) -> str:
        """Display form back to the bare symbols (separators and white space dropped)."""
        out = "".join(code.split())
        for c in self.separator:
            out = out.replace(c, "")
        return out

    def read(self, typed: str) -> str | None:
        """A code of this format as a person typed it, in its one display form (what was generated), or None
        when it cannot be a code of this format (then it is a wrong code).

        Read the way the alphabet intends, like serials (``issuer.core.serial``): white space, dashes and the
        separator are ignored, full-width and other compatibility forms read as ASCII (NFKC), and for an
        alphabet without lower-case letters case is ignored and Crockford's aliases are read (``I``/``L`` as
        ``1``, ``O`` as ``0``) where the alphabet lacks the alias and holds its value. Never merges two codes of
        the format: every symbol of the alphabet reads as itself."""
        if not isinstance(typed, str) or len(typed) > MAX_TYPED_CODE_LENGTH:
            return None
        a = self.alphabet
        s = unicodedata.normalize("NFKC", typed)
        s = "".join(s.split())
        for c in set(_DASHES + self.separator) - set(a):
            s = s.replace(c, "")
        if a == a.upper():  # no lower-case letter: case carries nothing
            s = s.translate(_UPPER)
            s = "".join(_ALIASES[c] if c in _ALIASES and c not in a and _ALIASES[c] in a else c for c in s)
        if len(s) != self.length or not set(s) <= set(a):
            return None
        return self.group(s)

    def to_json(self) -> str:
        """This format as stored with a batch (``batches.code_format``)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CodeFormat:
        """The format stored with a batch; ValueError if it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != {"alphabet", "length", "group_size", "separator"}:
            raise ValueError("not a stored code format")
        return cls(**data)


DEFAULT_FORMAT = CodeFormat()
if DEFAULT_FORMAT.entropy_bits < MIN_DEFAULT_BITS:  # pragma: no cover - guards edits of the default
    raise AssertionError("the default code format must carry at least 100 bits of entropy")


def _random_symbols(count: int, alphabet: bytes) -> bytes:
    """``count`` symbols drawn uniformly from ``alphabet`` (rejection sampling on urandom bytes)."""
    m = len(alphabet)
    limit = 256 - 256 % m  # bytes >= limit would bias the draw
    table = bytes(alphabet[b % m] if b < limit else 0 for b in range(256))
    reject = bytes(range(limit, 256))
    out = bytearray()
    while len(out) < count:
        need = count - len(out)
        out += os.urandom(need * 256 // limit + 16).translate(table, reject)
    return bytes(out[:count])


def generate_codes(n: int, fmt: CodeFormat = DEFAULT_FORMAT, *, unique: bool = True) -> list[str]:
    """``n`` fresh codes in ``fmt`` from the OS CSPRNG; distinct unless ``unique=False``.

    About a second for a million default codes here: symbols come from one urandom draw mapped by
    ``bytes.translate`` and grouped with strided slice assignments.
    """
    if type(n) is not int or n < 0:
        raise ValueError("n must be an int >= 0")
    if unique and n > fmt.capacity:
        raise ValueError("more codes asked for than the format has")
    codes = _generate(n, fmt)
    if unique:
        seen = set(codes)
        if len(seen) < n:  # a collision: only with weak formats
            codes = list(dict.fromkeys(codes))
            while len(codes) < n:
                for c in _generate(n - len(codes), fmt):
                    if c not in seen:
                        seen.add(c)
                        codes.append(c)
    return codes


def generate_code(fmt: CodeFormat = DEFAULT_FORMAT) -> str:
    """One fresh code."""
    return _generate(1, fmt)[0]


def _generate(n: int, fmt: CodeFormat) -> list[str]:
    if n == 0:
        return []
    L = fmt.length
    raw = _random_symbols(n * L, fmt.alphabet.encode("ascii"))
    W = fmt.display_length
    R = W + 1  # one code and a newline
    out = bytearray(n * R)
    sep = fmt.separator.encode("ascii")
    g = fmt.group_size if fmt.n_groups > 1 else L
    for c in range(L):
        d = c + (c // g) * len(sep)
        out[d::R] = raw[c::L]
    for k in range(1, fmt.n_groups):
        off = k * g + (k - 1) * len(sep)
        for j in range(len(sep)):
            out[off + j :: R] = sep[j : j + 1] * n
    out[W::R] = b"\n" * n
    return out[:-1].decode("ascii").split("\n")


def typed_code(typed: str, stored_format: str | None) -> str:
    """A code as typed, read by the rule of its batch: ``stored_format`` (``batches.code_format``, the format
    of its generated codes) gives their one display form (:meth:`CodeFormat.read`); None (imported codes) keeps
    the text, which the batch's ``codeForm`` compares exactly or folded (``issuer.core.commitment``). A text
    that cannot be a code of the format is returned as it is: it opens no commitment of the batch."""
    if stored_format is None or not isinstance(typed, str):
        return typed
    try:
        fmt = CodeFormat.from_json(stored_format)
    except (ValueError, TypeError):
        return typed
    return fmt.read(typed) or typed


_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def normalize_imported_code(code: str) -> str:
    """An imported (issuer-supplied) code, stripped of surrounding white space, or InvalidCode if
    it is empty, longer than 128 characters, or holds control or invisible characters."""
    if not isinstance(code, str):
        raise InvalidCode("imported code must be a string", "type")
    s = code.strip()
    if not s:
        raise InvalidCode("imported code is empty", "empty")
    if len(s) > MAX_IMPORTED_CODE_LENGTH:
        raise InvalidCode(
            f"imported code is too long: {len(s)} characters, at most {MAX_IMPORTED_CODE_LENGTH}", "too_long"
        )
    if not (s.isascii() and s.isprintable()):
        for i, ch in enumerate(s):
            if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
                raise InvalidCode(
                    f"imported code has a control or invisible character at position {i + 1}", "control_char"
                )
    return s
