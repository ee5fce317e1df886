"""issuer.secrets_store: master key handling, AES-GCM wrapping, code encryption, fingerprints."""

from __future__ import annotations

import base64
import os
import stat
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.settings import get_settings
from issuer.errors import DecryptionError, IssuerError, MasterKeyError
from issuer.secrets_store import (
    CodeCipher,
    MasterKey,
    code_fingerprint,
    code_fingerprints,
    load_master_key,
    loose_code_form,
    parse_master_key,
)

BATCH = bytes.fromhex("ab" * 20) + b"\x00" * 11 + b"\x01"
OTHER_BATCH = bytes.fromhex("ab" * 20) + b"\x00" * 11 + b"\x02"


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch):
    monkeypatch.delenv("CARDPROOF_MASTER_KEY", raising=False)
    monkeypatch.delenv("CARDPROOF_HOME", raising=False)


def key_file_text(home) -> str:
    return (home / "master.key").read_text()


# --------------------------------------------------------------------------- master key


def test_key_file_created_0600_and_reused(tmp_path):
    home = tmp_path / "missing" / "home"
    settings = get_settings(home=home)
    k1 = load_master_key(settings)
    path = home / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert k1.source == f"file:{path}"
    assert [p.name for p in home.iterdir()] == ["master.key"]  # no temp file left behind
    k2 = load_master_key(get_settings(home=home))
    assert k1 == k2 and k1.key_id == k2.key_id
    # the file holds the key in a form parse_master_key accepts
    assert MasterKey(parse_master_key(key_file_text(home))) == k1


def test_key_file_mode_under_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        load_master_key(get_settings(home=tmp_path))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_with_group_or_other_access_is_refused(tmp_path, mode):
    key = load_master_key(get_settings(home=tmp_path))
    path = tmp_path / "master.key"
    secret_hex = key_file_text(tmp_path).strip()
    path.chmod(mode)
    with pytest.raises(MasterKeyError) as ei:
        load_master_key(get_settings(home=tmp_path))
    msg = str(ei.value)
    assert "chmod 600" in msg and str(path) in msg and "\n" not in msg
    assert secret_hex not in msg and secret_hex not in repr(ei.value)
    path.chmod(0o600)
    assert load_master_key(get_settings(home=tmp_path)) == key


def test_no_create(tmp_path):
    with pytest.raises(MasterKeyError, match="no master key"):
        load_master_key(get_settings(home=tmp_path), create=False)
    assert not (tmp_path / "master.key").exists()


@pytest.mark.parametrize("content", ["", "not a key", "ab" * 31, "zz" * 32, "00" * 32])
def test_bad_key_file(tmp_path, content):
    path = tmp_path / "master.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content.encode())
    os.close(fd)
    with pytest.raises(MasterKeyError) as ei:
        load_master_key(get_settings(home=tmp_path))
    if content.strip():
        assert content not in str(ei.value)


def test_concurrent_first_use_yields_one_key(tmp_path):
    settings = get_settings(home=tmp_path / "h")
    keys: list[MasterKey] = []
    barrier = threading.Barrier(8)

    def run():
        barrier.wait()
        keys.append(load_master_key(settings))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and all(k == keys[0] for k in keys)
    assert [p.name for p in (tmp_path / "h").iterdir()] == ["master.key"]


def test_env_key_hex_and_base64_take_precedence(tmp_path, monkeypatch):
    raw = os.urandom(32)
    file_key = load_master_key(get_settings(home=tmp_path))
    for text in (raw.hex(), raw.hex().upper(), "0x" + raw.hex(),
                 base64.urlsafe_b64encode(raw).decode(),
                 base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        monkeypatch.setenv("CARDPROOF_MASTER_KEY", text)
        k = load_master_key(get_settings(home=tmp_path))
        assert k == MasterKey(raw) and k != file_key and k.source == "env"


@pytest.mark.parametrize("bad", ["abc", "ab" * 33, "g" * 64, base64.urlsafe_b64encode(b"x" * 31).decode(),
                                 "SuperSecretPassphrase!!"])
def test_bad_env_key(tmp_path, monkeypatch, bad):
    monkeypatch.setenv("CARDPROOF_MASTER_KEY", bad)
    with pytest.raises(MasterKeyError) as ei:
        load_master_key(get_settings(home=tmp_path))
    assert bad not in str(ei.value) and bad not in repr(ei.value)
    assert "CARDPROOF_MASTER_KEY" in str(ei.value)
    assert not (tmp_path / "master.key").exists()


def test_master_key_repr_hides_key():
    raw = os.urandom(32)
    k = MasterKey(raw)
    text = repr(k) + str(k)
    assert raw.hex() not in text and base64.urlsafe_b64encode(raw).decode() not in text
    assert k.key_id in text and len(k.key_id) == 16
    with pytest.raises(TypeError):
        __import__("pickle").dumps(k)


# --------------------------------------------------------------------------- batch secrets


def test_wrap_unwrap_and_failures():
    mk = MasterKey.generate()
    secret = os.urandom(32)
    blob = mk.wrap_batch_secret(BATCH, secret)
    assert blob[0] == 1 and len(blob) == 1 + 12 + 32 + 16
    assert mk.unwrap_batch_secret(BATCH, blob) == secret
    assert mk.wrap_batch_secret(BATCH, secret) != blob  # random nonce
    with pytest.raises(MasterKeyError):
        mk.unwrap_batch_secret(OTHER_BATCH, blob)  # AAD binds the batch id
    with pytest.raises(MasterKeyError, match="wrong master key"):
        MasterKey.generate().unwrap_batch_secret(BATCH, blob)
    for pos in (0, 1, 12, 13, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[pos] ^= 0x01
        with pytest.raises(MasterKeyError):
            mk.unwrap_batch_secret(BATCH, bytes(tampered))
    with pytest.raises(MasterKeyError):
        mk.unwrap_batch_secret(BATCH, blob[:20])
    with pytest.raises(ValueError):
        mk.wrap_batch_secret(b"short", secret)


def test_fingerprint_key_is_derived_and_stable():
    raw = os.urandom(32)
    k1, k2 = MasterKey(raw), MasterKey(raw)
    assert k1.fingerprint_key() == k2.fingerprint_key()
    assert len(k1.fingerprint_key()) == 32 and k1.fingerprint_key() != raw
    assert MasterKey.generate().fingerprint_key() != k1.fingerprint_key()


# --------------------------------------------------------------------------- codes


def test_code_round_trip_and_aad_binding():
    c = CodeCipher(os.urandom(32))
    blob = c.encrypt(BATCH, 7, "ABCD-EFGH-1234")
    assert c.decrypt(BATCH, 7, blob) == "ABCD-EFGH-1234"
    with pytest.raises(DecryptionError):
        c.decrypt(BATCH, 8, blob)  # moved to another row of the batch
    with pytest.raises(DecryptionError):
        c.decrypt(OTHER_BATCH, 7, blob)  # moved to another batch
    with pytest.raises(DecryptionError):
        CodeCipher(os.urandom(32)).decrypt(BATCH, 7, blob)
    for pos in range(len(blob)):
        tampered = bytearray(blob)
        tampered[pos] ^= 0x80
        with pytest.raises(DecryptionError):
            c.decrypt(BATCH, 7, bytes(tampered))
    with pytest.raises(DecryptionError):
        c.decrypt(BATCH, 7, b"")


def test_swapping_ciphertexts_between_rows_fails():
    c = CodeCipher(os.urandom(32))
    a, b = c.encrypt_many(BATCH, ["code-A-0001", "code-B-0002"], start_index=10)
    assert c.decrypt(BATCH, 10, a) == "code-A-0001" and c.decrypt(BATCH, 11, b) == "code-B-0002"
    with pytest.raises(DecryptionError):
        c.decrypt(BATCH, 10, b)
    with pytest.raises(DecryptionError):
        c.decrypt(BATCH, 11, a)


def test_encrypt_many_matches_decrypt_and_nonces_unique():
    c = CodeCipher.for_batch_secret(os.urandom(32))
    codes = [f"CODE-{i:06d}-é" for i in range(2000)]
    blobs = c.encrypt_many(BATCH, codes, start_index=5)
    assert [c.decrypt(BATCH, 5 + i, b) for i, b in enumerate(blobs)] == codes
    assert len({b[1:13] for b in blobs}) == len(blobs)
    assert c.encrypt_many(BATCH, []) == []
    with pytest.raises(ValueError):
        c.encrypt_many(BATCH, ["x"], start_index=2**32)
    with pytest.raises(TypeError):
        c.encrypt_many(BATCH, [b"bytes"])  # type: ignore[list-item]


def test_invalid_arguments():
    with pytest.raises(ValueError):
        CodeCipher(b"short")
    c = CodeCipher(os.urandom(32))
    with pytest.raises(ValueError):
        c.encrypt(BATCH, -1, "x")
    with pytest.raises(ValueError):
        c.encrypt(b"\x00" * 31, 0, "x")
    with pytest.raises(TypeError):
        c.encrypt(BATCH, 0, b"x")  # type: ignore[arg-type]
    assert "key" in repr(c) and len(repr(c)) < 40


CODES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=8, max_size=64
).filter(lambda s: s.strip() and len(s.strip()) >= 8)


def _error_texts(code: str, index: int) -> list[str]:
    """str/repr/args of every error a misuse involving ``code`` raises."""
    c = CodeCipher(b"\x11" * 32)
    blob = c.encrypt(BATCH, index, code)
    assert code.encode() not in blob
    assert c.decrypt(BATCH, index, blob) == code
    attempts = [
        lambda: c.decrypt(BATCH, (index + 1) % 2**32, blob),
        lambda: c.decrypt(OTHER_BATCH, index, blob),
        lambda: c.decrypt(BATCH, index, blob[:-1] + bytes([blob[-1] ^ 1])),
        lambda: c.decrypt(BATCH, index, blob[:5]),
        lambda: c.encrypt(BATCH, -1, code),
        lambda: c.encrypt(b"bad", index, code),
        lambda: c.encrypt_many(BATCH, [code, code], start_index=2**32 - 1),
        lambda: code_fingerprint(b"short", code),
        lambda: MasterKey.from_text(code + "!"),
        lambda: parse_master_key(code + "!", source="CARDPROOF_MASTER_KEY"),
    ]
    texts: list[str] = []
    for attempt in attempts:
        with pytest.raises(Exception) as ei:
            attempt()
        exc = ei.value
        if isinstance(exc, IssuerError):
            assert "\n" not in str(exc)
        texts.append(f"{exc}|{exc!r}|{exc.args!r}")
    return texts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=CODES, index=st.integers(0, 2**32 - 1))
def test_no_code_plaintext_in_any_error(code, index):
    texts = _error_texts(code, index)
    # The messages do not depend on the code at all ...
    assert texts == _error_texts("SENTINEL-0000-CODE", index)
    # ... so the code shows up in none (unless it is a piece of the fixed wording).
    fixed = "\n".join(_error_texts("SENTINEL-0000-CODE", index))
    if code not in fixed:
        assert all(code not in t for t in texts)


@settings(max_examples=100, deadline=None)
@given(code=CODES)
def test_fingerprint_is_of_the_committed_form(code):
    fp_key = b"\x22" * 32
    fp = code_fingerprint(fp_key, code)
    assert len(fp) == 32
    assert code_fingerprint(fp_key, f"  {code}\t\n") == fp  # white space around: same code
    assert code_fingerprints(fp_key, [code, " " + code]) == [fp, fp]
    assert code_fingerprint(b"\x33" * 32, code) != fp
    if code.strip().swapcase() != code.strip():
        assert code_fingerprint(fp_key, code.swapcase()) != fp  # codes are case-sensitive
    assert code_fingerprint(fp_key, code, normalize=loose_code_form) == code_fingerprint(
        fp_key, code.upper(), normalize=loose_code_form
    ) or not loose_code_form(code)


def test_fingerprint_examples():
    k = os.urandom(32)
    a = code_fingerprint(k, "ABCD-EFGH-IJKL")
    assert a == code_fingerprint(k, " ABCD-EFGH-IJKL\n")
    assert a != code_fingerprint(k, "abcd-efgh-ijkl") and a != code_fingerprint(k, "ABCDEFGHIJKL")
    assert code_fingerprints(k, ["ABCD-EFGH-IJKL", "x1"]) == [a, code_fingerprint(k, "x1")]
    loose = code_fingerprint(k, "abcd-efgh-ijkl", normalize=loose_code_form)
    assert loose == code_fingerprint(k, "ABCD EFGH IJKL", normalize=loose_code_form)
    assert loose == code_fingerprint(k, "ＡＢＣＤ—ＥＦＧＨ—ＩＪＫＬ", normalize=loose_code_form)
    assert loose_code_form("ab-c_d\u3000e\u2013f ") == "ABCDEF"
    for empty in ("", "   \n"):
        with pytest.raises(ValueError):
            code_fingerprint(k, empty)
    with pytest.raises(ValueError):
        code_fingerprint(k, " - ", normalize=loose_code_form)


def test_for_batch_secret_uses_the_core_derivation():
    from issuer.core.commitment import derive_batch_keys

    secret = os.urandom(32)
    blob = CodeCipher.for_batch_secret(secret).encrypt(BATCH, 3, "CODE-1")
    assert CodeCipher(derive_batch_keys(secret)[1]).decrypt(BATCH, 3, blob) == "CODE-1"


def test_encryption_speed(capsys):
    c = CodeCipher(os.urandom(32))
    codes = [f"ABCD-EFGH-{i:08d}" for i in range(1_000_000)]
    t0 = time.perf_counter()
    blobs = c.encrypt_many(BATCH, codes)
    t1 = time.perf_counter()
    fps = code_fingerprints(os.urandom(32), codes[:200_000])
    t2 = time.perf_counter()
    assert len(blobs) == 1_000_000 and len(fps) == 200_000
    with capsys.disabled():
        print(f"\n[CodeCipher.encrypt_many] 1,000,000 codes in {t1 - t0:.2f} s; "
              f"[code_fingerprints] 200,000 in {t2 - t1:.2f} s")
