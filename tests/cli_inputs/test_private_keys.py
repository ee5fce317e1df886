"""Private keys (issue 12): a key of the wrong length or outside the secp256k1 range is refused in one line that
never shows the key, wherever it comes from (CARDPROOF_PRIVATE_KEY, a key file)."""

from __future__ import annotations

import pytest

from chain.errors import AccountError
from chain.private_keys import SECP256K1_N, PrivateKeyError, parse_private_key
from chain.settings import get_settings

SHORT = "0x" + "5c" * 31  # 31 bytes
LONG = "5c" * 33  # 33 bytes, no 0x
ODD = "0x" + "5c" * 32 + "d"  # 65 hex digits
ZERO = "0x" + "00" * 32
ORDER = "0x" + f"{SECP256K1_N:064x}"  # n itself: out of range
TOP = "0x" + "ff" * 32


def body(key: str) -> str:
    return key.removeprefix("0x")


@pytest.mark.parametrize(("key", "why"), [(SHORT, "31 bytes"), (LONG, "33 bytes"), (ODD, "odd number of hex"),
                                          (ZERO, "secp256k1 range"), (ORDER, "secp256k1 range"),
                                          (TOP, "secp256k1 range"), ("0x" + "zz" * 32, "not hex")])
def test_the_parser_says_what_is_wrong_without_the_key(key, why):
    with pytest.raises(PrivateKeyError, match=why) as info:
        parse_private_key(key, "--key-file")
    text = str(info.value)
    assert text.startswith("--key-file ") and "\n" not in text and body(key)[:16] not in text
    assert isinstance(info.value, AccountError)


def test_a_good_key_with_or_without_0x():
    assert parse_private_key("0x" + "11" * 32) == b"\x11" * 32 == parse_private_key(" " + "11" * 32 + "\n")
    assert parse_private_key("0x" + f"{SECP256K1_N - 1:064x}") == (SECP256K1_N - 1).to_bytes(32, "big")


def test_settings_refuse_a_bad_private_key(tmp_path):
    with pytest.raises(PrivateKeyError, match="CARDPROOF_PRIVATE_KEY is 31 bytes long") as info:
        get_settings(home=tmp_path, private_key=SHORT)
    assert body(SHORT) not in str(info.value) and body(SHORT) not in repr(info.value.args)
    assert get_settings(home=tmp_path, private_key="0x" + "11" * 32).private_key is not None


@pytest.mark.parametrize(("key", "why"), [(SHORT, "31 bytes long (62 hex digits)"), (ODD, "odd number"),
                                          (TOP, "outside the secp256k1 range")])
def test_every_command_refuses_a_bad_environment_key_in_one_line(cli, key, why):
    cli.act_as(key)
    for args in (("order", "show", "1"), ("batches",), ("issuer", "list")):
        r = cli.fails(*args, match=why)
        assert r.err.startswith("cardproof: CARDPROOF_PRIVATE_KEY ") and ("32 bytes" in r.err or "range" in r.err)
        assert body(key)[:12] not in r.err + r.out


@pytest.mark.parametrize(("key", "why"), [(SHORT, "31 bytes long"), (ZERO, "outside the secp256k1 range"),
                                          (ORDER, "outside the secp256k1 range")])
def test_a_bad_seal_key_file_is_refused_without_showing_it(market, tmp_path, key, why):
    key_file = tmp_path / "seal.key"
    key_file.write_text(key + "\n")
    for args in (("order", "evidence", "1", "--seal-key-file", key_file),
                 ("order", "receive", "1", "--out", tmp_path / "cards.csv", "--seal-key-file", key_file)):
        r = market.cli.fails(*args, match=why)
        assert r.err.startswith(f"cardproof: --seal-key-file: the key in {key_file} "), r.err
        assert body(key)[:12] not in r.err
