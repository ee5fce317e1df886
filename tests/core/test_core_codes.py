"""Secret code generation and imported-code checks (issuer/codes.py)."""

from __future__ import annotations

import math
import re
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.codes import (
    CROCKFORD_ALPHABET,
    DEFAULT_FORMAT,
    CodeFormat,
    generate_code,
    generate_codes,
    normalize_imported_code,
)
from issuer.core.commitment import canonical_code
from issuer.core.errors import CoreError, InvalidCode
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED


def test_default_format_has_100_bits():
    assert DEFAULT_FORMAT == CodeFormat(CROCKFORD_ALPHABET, 20, 5, "-")
    assert DEFAULT_FORMAT.entropy_bits >= 100
    assert DEFAULT_FORMAT.entropy_bits == 100.0
    assert DEFAULT_FORMAT.display_length == 23
    code = generate_code()
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){3}", code)


@pytest.mark.parametrize(
    "fmt, bits",
    [
        (CodeFormat("0123456789", 16, 4, " "), 16 * math.log2(10)),
        (CodeFormat("0123456789", 16, 4, ""), 16 * math.log2(10)),
        (CodeFormat("ABCDEFGHJKLMNPQRSTUVWXYZ23456789", 25, 5, "-"), 125),
        (CodeFormat("01", 8, 0, "-"), 8),
    ],
)
def test_entropy_bits(fmt, bits):
    assert fmt.entropy_bits == pytest.approx(bits)


def test_generate_million_default_codes_fast_and_distinct():
    t = time.perf_counter()
    codes = generate_codes(1_000_000)
    elapsed = time.perf_counter() - t
    assert len(codes) == 1_000_000 and len(set(codes)) == 1_000_000
    assert all(len(c) == 23 for c in codes[:1000])
    assert elapsed < 10, elapsed  # about 0.5 s here; generous for loaded machines
    counts = Counter("".join(codes[:20000]).replace("-", ""))
    assert set(counts) == set(CROCKFORD_ALPHABET)
    expected = 20000 * 20 / 32
    assert all(abs(c - expected) < 0.1 * expected for c in counts.values())


@pytest.mark.parametrize(
    "fmt, pattern",
    [
        (CodeFormat("0123456789", 16, 4, " "), r"\d{4}( \d{4}){3}"),
        (CodeFormat("0123456789", 10, 3, "--"), r"\d{3}--\d{3}--\d{3}--\d"),
        (CodeFormat("ABC", 7, 0, "-"), r"[ABC]{7}"),
        (CodeFormat("ABC", 7, 7, "-"), r"[ABC]{7}"),
        (CodeFormat("abcdefghijklmnopqrstuvwxyz", 12, 4, ""), r"[a-z]{12}"),
    ],
)
def test_custom_formats(fmt, pattern):
    codes = generate_codes(2000, fmt)
    assert len(set(codes)) == 2000
    assert all(re.fullmatch(pattern, c) for c in codes)
    assert all(len(c) == fmt.display_length for c in codes)
    assert fmt.group(fmt.ungroup(codes[0])) == codes[0]


def test_unbiased_for_alphabets_that_do_not_divide_256():
    fmt = CodeFormat("ABCDEFG", 10, 0, "")  # 256 % 7 != 0: rejection sampling
    counts = Counter("".join(generate_codes(20000, fmt)))
    expected = 200000 / 7
    assert all(abs(c - expected) < 0.03 * expected for c in counts.values())


def test_small_format_exhaustion():
    fmt = CodeFormat("01", 3, 0, "")
    assert sorted(generate_codes(8, fmt)) == ["000", "001", "010", "011", "100", "101", "110", "111"]
    with pytest.raises(ValueError):
        generate_codes(9, fmt)
    assert len(generate_codes(50, fmt, unique=False)) == 50
    assert generate_codes(0) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alphabet": "A"},
        {"alphabet": "AAB"},
        {"alphabet": "AB C"},
        {"alphabet": "ABÉ"},
        {"length": 0},
        {"length": 200},
        {"group_size": -1},
        {"separator": "A"},
        {"separator": "\t"},
        {"separator": "\n"},
        {"alphabet": "0123456789", "length": 100, "group_size": 1, "separator": "-"},  # too long shown
    ],
)
def test_bad_formats(kwargs):
    with pytest.raises(ValueError):
        CodeFormat(**kwargs)


def test_normalize_imported_code():
    assert normalize_imported_code("  ABCD-1234 \n") == "ABCD-1234"
    assert normalize_imported_code("héllo wörld") == "héllo wörld"
    assert normalize_imported_code("x" * 128) == "x" * 128
    assert normalize_imported_code("A\u00a0B") == "A\u00a0B"  # no-break space is printable enough


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("", "empty"),
        (" \t\n ", "empty"),
        ("S3CR3T" * 22, "too_long"),
        ("S3CR3T\x00X", "control_char"),
        ("S3CR3T\tX", "control_char"),
        ("S3CR3T\u200bX", "control_char"),  # zero-width space
        ("S3CR3T\u202eX", "control_char"),  # right-to-left override
        ("S3CR3T\u2028X", "control_char"),
        ("S3CR3T\x7fX", "control_char"),
        (None, "type"),
        (b"S3CR3T", "type"),
    ],
)
def test_normalize_rejects_without_leaking(bad, reason):
    with pytest.raises(InvalidCode) as info:
        normalize_imported_code(bad)
    err = info.value
    assert isinstance(err, CoreError) and isinstance(err, ValueError)
    assert err.reason == reason
    assert "S3CR3T" not in str(err) and "S3CR3T" not in repr(err)


# -- the leaf codeForm of generated codes --------------------------------------------------


@pytest.mark.parametrize(
    "fmt, form",
    [
        (DEFAULT_FORMAT, CODE_FORM_FOLDED),
        (CodeFormat("0123456789", 16, 4, " "), CODE_FORM_FOLDED),
        (CodeFormat("ABC", 7, 0, "-"), CODE_FORM_FOLDED),
        (CodeFormat("ABC_", 8, 4, "."), CODE_FORM_FOLDED),
        (CodeFormat("abcdefghijklmnopqrstuvwxyz", 12, 4, ""), CODE_FORM_EXACT),
        (CodeFormat("ABCabc", 12, 4, " "), CODE_FORM_EXACT),
        (CodeFormat("AB-", 12, 4, " "), CODE_FORM_EXACT),
    ],
)
def test_code_form_of_a_format(fmt, form):
    assert fmt.code_form == form


def _format_or_none(**kw):
    try:
        return CodeFormat(**kw)
    except ValueError:  # a separator symbol in the alphabet, and the like
        return None


_FORMATS = st.builds(
    _format_or_none,
    alphabet=st.sets(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=2, max_size=12).map("".join),
    length=st.integers(1, 12),
    group_size=st.integers(0, 5),
    separator=st.sampled_from(["", "-", " ", "--", " - ", ".", "_"]),
).filter(lambda f: f is not None)


@settings(max_examples=150, deadline=None)
@given(_FORMATS)
def test_folding_never_merges_two_generated_codes(fmt):
    codes = generate_codes(min(40, len(fmt.alphabet) ** fmt.length), fmt)
    form = fmt.code_form
    canon = {canonical_code(c, form) for c in codes}
    assert len(canon) == len(codes)  # distinct codes stay distinct once canonical
    if form == CODE_FORM_FOLDED:
        # What a cashier types (any case, separators anywhere) is the same code.
        c = codes[0]
        assert canonical_code(c.lower().replace("-", " "), form) == canonical_code(c, form)
