"""Serials: known answers, round trips, what parsing forgives and what the check symbol catches."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.core.errors import InvalidSerial
from issuer.core.serial import (
    ALPHABET,
    CHECK_ALPHABET,
    canonical_serial,
    check_symbol,
    format_serial,
    new_serial_value,
    parse_serial,
)

KATS = {
    0: "0000-0000-0000-0000-0",
    1: "0000-0000-0000-0001-1",
    31: "0000-0000-0000-000Z-Z",
    32: "0000-0000-0000-0010-*",
    36: "0000-0000-0000-0014-U",
    37: "0000-0000-0000-0015-0",
    0x0123456789ABCDEF0123: "04HM-ASW9-NF6Y-Y093-B",
    2**80 - 1: "ZZZZ-ZZZZ-ZZZZ-ZZZZ-~",
}
serials = st.integers(0, 2**80 - 1)


def test_alphabets():
    assert ALPHABET == "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    assert CHECK_ALPHABET == ALPHABET + "*~$=U"


@pytest.mark.parametrize("value, text", sorted(KATS.items()))
def test_kat(value, text):
    assert format_serial(value) == text
    assert parse_serial(text) == value


def _independent(value: int) -> str:
    """Crockford base32 via the standard library's RFC 4648 base32 and a symbol map."""
    rfc = base64.b32encode(value.to_bytes(10, "big")).decode()
    body = rfc.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET))
    g = [body[i : i + 4] for i in range(0, 16, 4)]
    return "-".join(g) + "-" + "0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U"[value % 37]


@settings(max_examples=300)
@given(serials)
def test_round_trip(value):
    text = format_serial(value)
    assert text == _independent(value)
    assert parse_serial(text) == value
    assert parse_serial(text.lower()) == value
    assert parse_serial(text.replace("-", "")) == value
    assert parse_serial(" " + text.replace("-", " ") + "\t") == value
    assert canonical_serial(text.lower().replace("-", "")) == text
    assert check_symbol(value) == text[-1]


@settings(max_examples=100)
@given(serials)
def test_check_symbol_catches_every_single_substitution(value):
    text = format_serial(value).replace("-", "")
    for pos in range(17):
        choices = ALPHABET if pos < 16 else CHECK_ALPHABET
        for sym in choices:
            if sym == text[pos]:
                continue
            typo = text[:pos] + sym + text[pos + 1 :]
            with pytest.raises(InvalidSerial):
                parse_serial(typo)


@settings(max_examples=100)
@given(serials)
def test_check_symbol_catches_adjacent_transpositions(value):
    text = format_serial(value).replace("-", "")
    for pos in range(15):
        if text[pos] == text[pos + 1]:
            continue
        swapped = text[:pos] + text[pos + 1] + text[pos] + text[pos + 2 :]
        with pytest.raises(InvalidSerial):
            parse_serial(swapped)


def test_crockford_aliases():
    text = format_serial(0x0123456789ABCDEF0123)  # 04HM-ASW9-NF6Y-Y093-B
    assert parse_serial(text.replace("0", "O")) == 0x0123456789ABCDEF0123
    assert parse_serial(text.replace("0", "o")) == 0x0123456789ABCDEF0123
    one = format_serial(1)  # check symbol 1 too
    assert parse_serial(one.replace("1", "I")) == 1
    assert parse_serial(one.replace("1", "l")) == 1
    assert parse_serial(one.replace("1", "L")) == 1
    assert parse_serial(format_serial(36).lower()) == 36  # check symbol 'u'


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0000-0000-0000-0000",  # no check symbol
        "0000-0000-0000-0000-00",
        "0000-0000-0000-000U-0",  # U is a check symbol only
        "0000-0000-0000-000*-0",
        "0000-0000-0000-0000-#",
        "0000-0000-0000-0000-1",  # wrong check
        "0000_0000_0000_0000_0",
        "٠٠٠٠-٠٠٠٠-٠٠٠٠-٠٠٠٠-٠",
        None,
        12,
    ],
)
def test_parse_rejects(bad):
    with pytest.raises(InvalidSerial):
        parse_serial(bad)


@pytest.mark.parametrize("bad", [-1, 2**80, True, 1.0, "1"])
def test_format_rejects(bad):
    with pytest.raises(InvalidSerial):
        format_serial(bad)


def test_new_serial_values_look_random():
    values = {new_serial_value() for _ in range(2000)}
    assert len(values) == 2000
    assert all(0 <= v < 2**80 for v in values)
    assert max(values).bit_length() >= 78
    rng = random.Random(1)
    for v in rng.sample(sorted(values), 50):
        assert parse_serial(format_serial(v)) == v
