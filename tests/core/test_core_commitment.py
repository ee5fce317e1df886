"""Code commitments and batch key derivation: known answers, an independent HKDF, no leaks."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.core.commitment import CODE_DOMAIN, check_code, code_commitment, derive_batch_keys
from issuer.core.errors import CoreError, InvalidCode, InvalidKey

SECRET = bytes(range(32))
KAT_COMMIT_KEY = "b9e561d2a5f6b89c4eee765e91669c2643d6c759a5ec3a2784a1d737dcbc248b"
KAT_ENC_KEY = "7a8f2406bc4bc8a1a60c6c8e2fd57956a2db362884f0b48c172296e0d41af4bd"
KAT_CODE = "ABCDE-FGHJK-MNPQR-STVWX"
KAT_COMMITMENT = "9d1191b292845af8bdf4b9023147d5bf3b97c5c439a28d5e3a199594493a45bf"
KAT_COMMITMENT_UTF8 = "8950b1ee6b0b9fb08d9f64045bcd21bc80bfce056003de04b668d647496d7eea"  # key b"k"*32


def _rfc5869(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()  # no salt: HashLen zeros
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


def test_kat_batch_keys():
    commit_key, enc_key = derive_batch_keys(SECRET)
    assert commit_key.hex() == KAT_COMMIT_KEY
    assert enc_key.hex() == KAT_ENC_KEY
    assert commit_key == _rfc5869(SECRET, b"cardproof/commit/v1")
    assert enc_key == _rfc5869(SECRET, b"cardproof/enc/v1")


def test_kat_commitment():
    key = bytes.fromhex(KAT_COMMIT_KEY)
    assert code_commitment(key, KAT_CODE).hex() == KAT_COMMITMENT
    assert code_commitment(key, f"  {KAT_CODE}\n").hex() == KAT_COMMITMENT  # stripped
    assert CODE_DOMAIN == b"cardproof/code/v1\x00"
    want = hmac.new(key, b"cardproof/code/v1\x00" + KAT_CODE.encode(), hashlib.sha256).hexdigest()
    assert want == KAT_COMMITMENT
    assert code_commitment(b"k" * 32, "  héllo wörld \n").hex() == KAT_COMMITMENT_UTF8


def test_no_normalisation_beyond_strip():
    key = bytes.fromhex(KAT_COMMIT_KEY)
    assert code_commitment(key, KAT_CODE.lower()) != code_commitment(key, KAT_CODE)
    assert code_commitment(key, "A B") != code_commitment(key, "AB")


def test_check_code():
    key, _ = derive_batch_keys(SECRET)
    c = code_commitment(key, KAT_CODE)
    assert check_code(key, KAT_CODE, c)
    assert check_code(key, " " + KAT_CODE + " ", c)
    assert not check_code(key, KAT_CODE[:-1] + "Y", c)
    assert not check_code(key, "", c)
    assert not check_code(key, "   ", c)
    assert not check_code(derive_batch_keys(b"\x01" * 32)[0], KAT_CODE, c)
    with pytest.raises(InvalidKey):
        check_code(key, KAT_CODE, c[:31])


@pytest.mark.parametrize("key", [b"", b"short", None, "a string key of some length!!!!!"])
def test_bad_keys(key):
    with pytest.raises(InvalidKey):
        code_commitment(key, KAT_CODE)
    with pytest.raises(InvalidKey):
        derive_batch_keys(key)


def test_errors_never_carry_the_code():
    key = bytes.fromhex(KAT_COMMIT_KEY)
    secret_code = "SECRET-CODE-1234"
    for call in (
        lambda: code_commitment(b"short", secret_code),
        lambda: check_code(key, secret_code, b"x"),
        lambda: code_commitment(key, "   "),
        lambda: code_commitment(key, 12345),
    ):
        with pytest.raises(CoreError) as info:
            call()
        assert "SECRET" not in str(info.value) and "SECRET" not in repr(info.value.args)
    with pytest.raises(InvalidCode) as info:
        code_commitment(key, " \t ")
    assert info.value.reason == "empty"


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=16, max_size=64), st.text(min_size=1).filter(lambda s: s.strip()))
def test_commitment_opens_only_with_its_code(secret, code):
    commit_key, enc_key = derive_batch_keys(secret)
    assert commit_key != enc_key and len(commit_key) == len(enc_key) == 32
    try:
        c = code_commitment(commit_key, code)
    except UnicodeEncodeError:  # lone surrogates cannot be committed to
        return
    assert check_code(commit_key, code, c)
    assert not check_code(commit_key, code.strip() + "x", c)
