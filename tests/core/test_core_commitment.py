"""Code commitments v2, openings and batch keys: known answers, independent recomputation, properties, no leaks.

The pinned constants were computed by tests/core/make_kats.mjs with node:crypto (HKDF, HMAC, SHA-256) and
BigInt base32, not by this code; each test also recomputes them here with hashlib/hmac/base64 directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.core import commitment as cm
from issuer.core.commitment import (
    CODE_DOMAIN,
    ENC_INFO,
    OPEN_INFO,
    OPENING_BYTES,
    OPENING_DOMAIN,
    OPENING_SYMBOLS,
    canonical_code,
    code_commitment,
    derive_batch_keys,
    derive_opening,
    format_opening,
    openings,
    opens,
    parse_opening,
)
from issuer.core.errors import CoreError, InvalidCode, InvalidKey
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED

SECRET = bytes(range(32))
KAT_OPEN_KEY = "fede0a40139d9543916cbf2afbaa380afb33e84a58a460633db6bb8ab609a42a"
KAT_ENC_KEY = "7a8f2406bc4bc8a1a60c6c8e2fd57956a2db362884f0b48c172296e0d41af4bd"  # unchanged from v1
KAT_OPENINGS = {
    0: "f52b824ef9334039a57354d5c47707d2",
    1: "bec74c754c55b7bee789f8aabbb510d1",
    255: "02016301998cf7c4c25df21ab93ebbed",
    0xFFFFFFFF: "9e9b3a30233df271d1ae6575c7cc2f3a",
}
KAT_FORMATTED = {
    0: "7N5E-14XY-9K80-WTAW-TMTQ-27E1-YJ",
    1: "5YRX-67AK-2NPY-ZEF2-FRNA-XVA4-6H",
    255: "0205-HG36-CCYZ-2C4Q-FJ3A-WKXE-ZD",
    0xFFFFFFFF: "4YKC-X308-SXY9-RX3B-K5EQ-3WRB-ST",
}
KAT_FORMATTED_ZERO = "0000-0000-0000-0000-0000-0000-00"
KAT_FORMATTED_MAX = "7ZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZ"
KAT_CODE = "ABCDE-FGHJK-MNPQR-STVWX"
# SHA-256("cardproof/code/v2\0" || opening(0) || "ABCDEFGHJKMNPQRSTVWX"), KAT_CODE folded:
KAT_COMMITMENT_FOLDED = "f537e231bb71a575f55eace9e0810bb62e89e882e02941bc150adbdfe992893e"
# ... || opening(0) || "ABCDE-FGHJK-MNPQR-STVWX", KAT_CODE exact:
KAT_COMMITMENT_EXACT = "1c1549336d64ce2eb98ba0b2c42432c60aba077e5519fdb433f398b7121bf04b"
# ... || opening(1) || utf8("héllo wörld"), from "  héllo wörld \n" exact:
KAT_COMMITMENT_UTF8 = "c6b225851ca38b5687c4d025dd3d4a0da8fdf23c695b90b1354b1c910906014f"

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
FORMS = (CODE_FORM_EXACT, CODE_FORM_FOLDED)


# -- independent references ------------------------------------------------------------------


def _rfc5869(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()  # no salt: HashLen zeros
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


def _opening(open_key: bytes, index: int) -> bytes:
    return hmac.new(open_key, b"cardproof/opening/v2\x00" + index.to_bytes(4, "big"), hashlib.sha256).digest()[:16]


def _commit(opening: bytes, canonical: bytes) -> bytes:
    return hashlib.sha256(b"cardproof/code/v2\x00" + opening + canonical).digest()


def _format(opening: bytes) -> str:
    """Crockford base32 via the standard library's RFC 4648 base32: 2 zero bits in front make 130 bits."""
    rfc = base64.b32encode((int.from_bytes(opening, "big") << 6).to_bytes(17, "big")).decode()[:26]
    body = rfc.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", CROCKFORD))
    return "-".join(body[i : i + 4] for i in range(0, 26, 4))


# -- constants and known answers -------------------------------------------------------------


def test_domain_tags_and_sizes():
    assert CODE_DOMAIN == b"cardproof/code/v2\x00"
    assert OPENING_DOMAIN == b"cardproof/opening/v2\x00"
    assert OPEN_INFO == b"cardproof/open/v2"
    assert ENC_INFO == b"cardproof/enc/v1"
    assert (OPENING_BYTES, OPENING_SYMBOLS) == (16, 26)
    assert cm.MIN_KEY_BYTES == 16
    assert not hasattr(cm, "check_code") and not hasattr(cm, "COMMIT_INFO")  # v1 is gone, not half-kept


def test_kat_batch_keys():
    open_key, enc_key = derive_batch_keys(SECRET)
    assert open_key.hex() == KAT_OPEN_KEY
    assert enc_key.hex() == KAT_ENC_KEY
    assert open_key == _rfc5869(SECRET, b"cardproof/open/v2")
    assert enc_key == _rfc5869(SECRET, b"cardproof/enc/v1")
    assert derive_batch_keys(bytearray(SECRET)) == derive_batch_keys(memoryview(SECRET)) == (open_key, enc_key)


@pytest.mark.parametrize("index", sorted(KAT_OPENINGS))
def test_kat_openings(index):
    open_key = bytes.fromhex(KAT_OPEN_KEY)
    opening = derive_opening(open_key, index)
    assert opening.hex() == KAT_OPENINGS[index]
    assert opening == _opening(open_key, index)
    assert format_opening(opening) == KAT_FORMATTED[index] == _format(opening)
    assert parse_opening(KAT_FORMATTED[index]) == opening


def test_kat_format_extremes():
    assert format_opening(bytes(16)) == KAT_FORMATTED_ZERO == _format(bytes(16))
    assert format_opening(b"\xff" * 16) == KAT_FORMATTED_MAX == _format(b"\xff" * 16)
    assert parse_opening(KAT_FORMATTED_ZERO) == bytes(16)
    assert parse_opening(KAT_FORMATTED_MAX) == b"\xff" * 16


def test_kat_commitments():
    op0, op1 = bytes.fromhex(KAT_OPENINGS[0]), bytes.fromhex(KAT_OPENINGS[1])
    assert code_commitment(op0, KAT_CODE, CODE_FORM_FOLDED).hex() == KAT_COMMITMENT_FOLDED
    assert _commit(op0, b"ABCDEFGHJKMNPQRSTVWX").hex() == KAT_COMMITMENT_FOLDED
    assert code_commitment(op0, KAT_CODE, CODE_FORM_EXACT).hex() == KAT_COMMITMENT_EXACT
    assert _commit(op0, KAT_CODE.encode()).hex() == KAT_COMMITMENT_EXACT
    assert code_commitment(op1, "  héllo wörld \n", CODE_FORM_EXACT).hex() == KAT_COMMITMENT_UTF8
    assert _commit(op1, "héllo wörld".encode()).hex() == KAT_COMMITMENT_UTF8
    # What a cashier might type opens the folded commitment; only the exact code opens the exact one.
    typed_forms = (
        "abcde-fghjk-mnpqr-stvwx", " ABCDE FGHJK MNPQR STVWX\n", "abcdefghjkmnpqrstvwx", "A-B-C-D-E\tFGHJKMNPQRSTVWX"
    )
    for typed in typed_forms:
        assert code_commitment(op0, typed, CODE_FORM_FOLDED).hex() == KAT_COMMITMENT_FOLDED
        assert not opens(typed, op0, CODE_FORM_EXACT, bytes.fromhex(KAT_COMMITMENT_EXACT))
    assert opens(f"\t{KAT_CODE}  ", op0, CODE_FORM_EXACT, bytes.fromhex(KAT_COMMITMENT_EXACT))


def test_canonical_code_examples():
    assert canonical_code(" abcde-fghjk mnpqr\tstvwx \n", CODE_FORM_FOLDED) == b"ABCDEFGHJKMNPQRSTVWX"
    assert canonical_code(" abcde-fghjk mnpqr\tstvwx \n", CODE_FORM_EXACT) == b"abcde-fghjk mnpqr\tstvwx"
    assert canonical_code("1234 5678", CODE_FORM_EXACT) == b"1234 5678"
    # Only ASCII a-z are upper-cased: the same bytes in every runtime, whatever its Unicode version.
    assert canonical_code("straße-é ı ǆ", CODE_FORM_FOLDED) == "STRAßEéıǆ".encode()
    assert canonical_code("Ωmega", CODE_FORM_FOLDED) == "ΩMEGA".encode()
    assert canonical_code("a_b.c", CODE_FORM_FOLDED) == b"A_B.C"  # only spaces, dashes and tabs are dropped
    for form in FORMS:
        for empty in ("", "   ", "\n\t", "\u3000"):
            with pytest.raises(InvalidCode) as info:
                canonical_code(empty, form)
            assert info.value.reason == "empty"
    for only_separators in (" - ", "---", "-\t-"):
        with pytest.raises(InvalidCode):
            canonical_code(only_separators, CODE_FORM_FOLDED)
        assert canonical_code(only_separators, CODE_FORM_EXACT) == only_separators.strip().encode()
    for bad_form in (2, -1, 255, None, "1"):
        with pytest.raises(InvalidCode) as info:
            canonical_code("ABC", bad_form)
        assert info.value.reason == "form"
    with pytest.raises(InvalidCode) as info:
        canonical_code(b"ABC", CODE_FORM_EXACT)
    assert info.value.reason == "type"


# -- opens -------------------------------------------------------------------------------------


def test_opens():
    open_key, _ = derive_batch_keys(SECRET)
    op = derive_opening(open_key, 7)
    for form in FORMS:
        c = code_commitment(op, KAT_CODE, form)
        assert opens(KAT_CODE, op, form, c)
        assert opens(" " + KAT_CODE + " ", op, form, c)
        assert opens(KAT_CODE, bytearray(op), form, memoryview(c))
        assert not opens(KAT_CODE[:-1] + "Y", op, form, c)  # another code
        assert not opens(KAT_CODE, derive_opening(open_key, 8), form, c)  # another card's opening
        assert not opens(KAT_CODE, derive_opening(derive_batch_keys(b"\x01" * 32)[0], 7), form, c)  # another batch
        assert not opens(KAT_CODE, op, 1 - form, c)  # the other code form
        assert not opens(KAT_CODE, op, 2, c)
        assert not opens("", op, form, c)
        assert not opens("   ", op, form, c)
        assert not opens("\ud800", op, form, c)  # not encodable: no commitment, no exception
        assert not opens(None, op, form, c)  # type: ignore[arg-type]
        for bad_commitment in (c[:31], c + b"\x00", c.hex(), None):
            with pytest.raises(InvalidKey):
                opens(KAT_CODE, op, form, bad_commitment)  # type: ignore[arg-type]
        for bad_opening in (op[:15], op + b"\x00", format_opening(op), None):
            with pytest.raises(InvalidKey):
                opens(KAT_CODE, bad_opening, form, c)  # type: ignore[arg-type]


# -- bad inputs and leaks ----------------------------------------------------------------------


@pytest.mark.parametrize("key", [b"", b"short", b"x" * 15, None, "a string key of some length!!!!!", 12345])
def test_bad_keys(key):
    with pytest.raises(InvalidKey):
        derive_batch_keys(key)
    with pytest.raises(InvalidKey):
        derive_opening(key, 0)


@pytest.mark.parametrize("index", [-1, 2**32, True, 1.0, "1", None])
def test_bad_indices(index):
    with pytest.raises(InvalidKey):
        derive_opening(b"k" * 32, index)


def test_openings_in_bulk():
    open_key = bytes.fromhex(KAT_OPEN_KEY)
    assert openings(open_key, 0, 2) == [bytes.fromhex(KAT_OPENINGS[0]), bytes.fromhex(KAT_OPENINGS[1])]
    assert openings(open_key, 255, 256) == [bytes.fromhex(KAT_OPENINGS[255])]
    assert openings(open_key, 2**32 - 1, 2**32) == [bytes.fromhex(KAT_OPENINGS[0xFFFFFFFF])]
    assert openings(open_key, 5, 5) == []
    for lo, hi in [(-1, 1), (2**32 - 1, 2**32 + 1), (3, 2), (True, 2), (0, 2.0)]:
        with pytest.raises(InvalidKey):
            openings(open_key, lo, hi)
    for key in (b"", b"short", None):
        with pytest.raises(InvalidKey):
            openings(key, 0, 1)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=200), st.integers(0, 2**32 - 1), st.integers(0, 40))
def test_bulk_openings_match_derive_opening(open_key, lo, n):
    """The precomputed-pad HMAC (keys over 64 bytes are hashed first, RFC 2104) is HMAC-SHA256."""
    hi = min(lo + n, 2**32)
    assert openings(open_key, lo, hi) == [derive_opening(open_key, i) for i in range(lo, hi)]
    assert openings(open_key, lo, hi) == [_opening(open_key, i) for i in range(lo, hi)]


@pytest.mark.parametrize("opening", [b"", b"x" * 15, b"x" * 17, b"x" * 32, "x" * 16, None, 7])
def test_bad_openings(opening):
    with pytest.raises(InvalidKey):
        code_commitment(opening, KAT_CODE, CODE_FORM_EXACT)
    with pytest.raises(InvalidKey):
        format_opening(opening)


SECRET_CODE = "SECRET-CODE-1234"


def test_errors_never_carry_the_code():
    op = bytes.fromhex(KAT_OPENINGS[0])
    for call in (
        lambda: code_commitment(b"short", SECRET_CODE, CODE_FORM_EXACT),
        lambda: opens(SECRET_CODE, op, CODE_FORM_EXACT, b"x"),
        lambda: opens(SECRET_CODE, b"x", CODE_FORM_EXACT, b"x" * 32),
        lambda: code_commitment(op, "   ", CODE_FORM_EXACT),
        lambda: code_commitment(op, 12345, CODE_FORM_EXACT),
        lambda: code_commitment(op, SECRET_CODE, 9),
        lambda: code_commitment(op, SECRET_CODE + "\ud800", CODE_FORM_EXACT),
        lambda: code_commitment(op, SECRET_CODE + "\udfff", CODE_FORM_FOLDED),
    ):
        with pytest.raises(CoreError) as info:
            call()
        err = info.value
        for text in (str(err), repr(err), repr(err.args)):
            assert "SECRET" not in text
        # Nor in the exception chain that a traceback or an error tracker would print.
        assert err.__cause__ is None and err.__context__ is None
    with pytest.raises(InvalidCode) as info:
        code_commitment(op, " \t ", CODE_FORM_EXACT)
    assert info.value.reason == "empty"
    with pytest.raises(InvalidCode) as info:
        code_commitment(op, "A\ud800B", CODE_FORM_EXACT)
    assert info.value.reason == "encoding"


def _known_parse_messages() -> set[str]:
    messages = set()
    for sample in ("", "Z" * 26, "U" * 26, 5):
        with pytest.raises(InvalidKey) as info:
            parse_opening(sample)
        messages.add(str(info.value))
    return messages


PARSE_MESSAGES = _known_parse_messages()


def test_parse_opening_forms():
    op = bytes.fromhex(KAT_OPENINGS[0])
    text = KAT_FORMATTED[0]
    for form in (
        text,
        text.lower(),
        text.replace("-", ""),
        text.replace("-", " "),
        f"  {text}\n",
        " ".join(text.replace("-", "")),
        op.hex(),
        op.hex().upper(),
        "0x" + op.hex(),
        "0X" + op.hex().upper(),
        "-".join(op.hex()[i : i + 4] for i in range(0, 32, 4)),
    ):
        assert parse_opening(form) == op, form
    # Crockford's aliases: I and L are 1, O is 0.
    assert parse_opening("0000-0000-0000-0000-0000-0000-01") == parse_opening("OOOO-OOOO-OOOO-OOOO-OOOO-OOOO-OI")
    assert parse_opening("0000-0000-0000-0000-0000-0000-01") == parse_opening("oooo-0000-0000-0000-0000-0000-0l")
    assert len(PARSE_MESSAGES) == 4


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        KAT_FORMATTED[0][:-1],  # 25 symbols
        KAT_FORMATTED[0] + "0",  # 27 symbols
        "8" + KAT_FORMATTED_ZERO[1:],  # more than 128 bits
        "Z" * 26,
        "U" * 26,  # U is no Crockford symbol
        "7N5E-14XY-9K80-WTAW-TMTQ-27E1-Y*",
        "0x" + "0" * 31,
        "0x" + "0" * 33,
        "0" * 31 + "g",
        "0x" + "0" * 30 + "zz",
        "7N5E_14XY_9K80_WTAW_TMTQ_27E1_YJ",
        None,
        b"7N5E14XY9K80WTAWTMTQ27E1YJ",
        16,
    ],
)
def test_parse_opening_rejects(bad):
    with pytest.raises(InvalidKey) as info:
        parse_opening(bad)
    assert str(info.value) in PARSE_MESSAGES


# -- properties --------------------------------------------------------------------------------

opening_values = st.binary(min_size=16, max_size=16)
ascii_codes = st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZabcdefghjkmnpqrstvwxyz", min_size=1, max_size=40)
any_codes = st.text(min_size=1, max_size=60)


def _committable(code: str, form: int) -> bool:
    try:
        canonical_code(code, form)
    except InvalidCode:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(opening_values)
def test_format_parse_round_trip(opening):
    text = format_opening(opening)
    assert len(text) == 32 and text.count("-") == 6 and text[0] in "01234567"
    assert [len(g) for g in text.split("-")] == [4, 4, 4, 4, 4, 4, 2]
    assert set(text.replace("-", "")) <= set(CROCKFORD)
    assert text == _format(opening)
    assert parse_opening(text) == opening
    assert parse_opening(text.lower().replace("-", "")) == opening
    assert parse_opening(text.replace("0", "O").replace("1", "l")) == opening
    assert parse_opening(opening.hex()) == opening == parse_opening("0x" + opening.hex().upper())


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=64), st.integers(0, 2**32 - 1))
def test_derivation_matches_the_independent_reference(secret, index):
    open_key, enc_key = derive_batch_keys(secret)
    assert (open_key, enc_key) == (_rfc5869(secret, OPEN_INFO), _rfc5869(secret, ENC_INFO))
    assert open_key != enc_key
    opening = derive_opening(open_key, index)
    assert opening == _opening(open_key, index)
    assert derive_opening(open_key, index ^ 1) != opening


@settings(max_examples=300, deadline=None)
@given(opening_values, ascii_codes, st.data())
def test_folded_form_ignores_case_dashes_and_spaces(opening, code, data):
    c = code_commitment(opening, code, CODE_FORM_FOLDED)
    assert c == _commit(opening, code.upper().encode())
    # Any change of case, and spaces, dashes or tabs anywhere, open the same commitment.
    typed = ""
    for ch in code:
        typed += data.draw(st.sampled_from(["", " ", "-", "--", "\t", " - "]))
        typed += ch.swapcase() if data.draw(st.booleans()) else ch
    typed += data.draw(st.sampled_from(["", " ", "-", "\n", " -"]))
    assert code_commitment(opening, typed, CODE_FORM_FOLDED) == c
    assert opens(typed, opening, CODE_FORM_FOLDED, c)


@settings(max_examples=300, deadline=None)
@given(opening_values, ascii_codes, st.integers(0, 40), st.sampled_from([" ", "-", "\t"]))
def test_exact_form_does_not(opening, code, at, sep):
    c = code_commitment(opening, code, CODE_FORM_EXACT)
    assert c == _commit(opening, code.encode())
    assert opens(f" {code}\t\n", opening, CODE_FORM_EXACT, c)  # surrounding white space is still stripped
    if code.swapcase() != code:
        assert not opens(code.swapcase(), opening, CODE_FORM_EXACT, c)
    at = 1 + at % len(code) if len(code) > 1 else None
    if at is not None and at < len(code):
        assert not opens(code[:at] + sep + code[at:], opening, CODE_FORM_EXACT, c)
    # The two forms never commit to the same thing for a code that folding changes.
    if canonical_code(code, CODE_FORM_FOLDED) != code.encode():
        assert code_commitment(opening, code, CODE_FORM_FOLDED) != c


@settings(max_examples=300, deadline=None)
@given(any_codes)
def test_folding_touches_only_ascii_letters_spaces_dashes_and_tabs(code):
    try:
        folded = canonical_code(code, CODE_FORM_FOLDED).decode()
    except InvalidCode:
        return
    want = "".join(c.upper() if "a" <= c <= "z" else c for c in code.strip() if c not in " -\t")
    assert folded == want
    assert all(not ("a" <= c <= "z") for c in folded)


@settings(max_examples=300, deadline=None)
@given(opening_values, opening_values, any_codes, any_codes, st.sampled_from(FORMS))
def test_only_its_code_and_opening_open_a_commitment(opening, other_opening, code, other_code, form):
    if not _committable(code, form):
        assert not opens(code, opening, form, b"\x00" * 32)
        return
    c = code_commitment(opening, code, form)
    assert c == _commit(opening, canonical_code(code, form))
    assert opens(code, opening, form, c)
    if other_opening != opening:
        assert not opens(code, other_opening, form, c)  # a wrong opening never opens
    if not _committable(other_code, form) or canonical_code(other_code, form) != canonical_code(code, form):
        assert not opens(other_code, opening, form, c)  # a wrong code never opens
    else:
        assert opens(other_code, opening, form, c)  # the same canonical code is the same code


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), st.text(alphabet=CROCKFORD + "ILOUilou-_ x0123456789abcdef*~", max_size=40)))
def test_parse_opening_never_echoes_its_input(text):
    try:
        raw = parse_opening(text)
    except InvalidKey as e:
        # The message is one of a few fixed sentences, whatever the text was, and nothing is chained to it.
        assert str(e) in PARSE_MESSAGES
        assert e.args == (str(e),) and e.__context__ is None
        fixed = "\n".join(repr(InvalidKey(m)) for m in PARSE_MESSAGES)
        if text.strip() and text.strip() not in fixed:
            assert text.strip() not in repr(e)
    else:
        assert len(raw) == 16
        assert parse_opening(format_opening(raw)) == raw
