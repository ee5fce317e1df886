"""Codes as a cashier types them (issue 12): a generated code is read the way its alphabet intends (case, white
space, dashes and Crockford's aliases ignored), by the rule recorded with its batch; an imported code stays exact
unless the import asked for `--codes-normalize`; `echo CODE | cardproof redeem SERIAL` reads the pipe quietly."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from chain.client import dev_account_for, shared_in_process_web3
from issuer.anchoring import anchor_batch
from issuer.codes import DEFAULT_FORMAT, CodeFormat, generate_codes, typed_code
from issuer.core.commitment import code_commitment
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED
from issuer.errors import DuplicateCode, InvalidCsv, WrongCode
from issuer.lookup import check_code
from issuer.redemption import redeem_card
from issuer.secrets_store import MasterKey
from issuer.storage.models import Batch
from tests.clikit import in_process_cli
from tests.issuer.helpers import cards_of, mint

ROOT = Path(__file__).resolve().parents[2]
_ALIAS = {"1": "IiLl", "0": "Oo"}


def typed_variants(code: str, rnd: random.Random) -> list[str]:
    """Ways a person may type ``code`` (display form of the default format)."""
    bare = code.replace("-", "")
    aliased = "".join(rnd.choice(_ALIAS[c]) if c in _ALIAS else c for c in bare)
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in bare)  # what an East Asian IME gives
    return [code, code.lower(), bare, bare.lower(), code.replace("-", " "), code.replace("-", "\u2013"),
            " ".join(bare[i:i + 4] for i in range(0, len(bare), 4)).lower(), f"\t{code}\n", aliased, aliased.lower(),
            full_width, "".join(c.lower() if rnd.random() < 0.5 else c for c in code)]


def test_every_typed_variant_reads_to_exactly_the_generated_code():
    rnd = random.Random(12)
    codes = generate_codes(500)
    for code in codes:
        assert DEFAULT_FORMAT.read(code) == code  # the one canonical form is the generated one
        for variant in typed_variants(code, rnd):
            assert DEFAULT_FORMAT.read(variant) == code, (code, variant)
    # Nothing merges two codes: every symbol reads as itself, and a symbol of another code stays another code.
    for code in codes[:50]:
        i = rnd.randrange(20)
        pos = i + i // 5
        other = code[:pos] + next(c for c in DEFAULT_FORMAT.alphabet if c != code[pos]) + code[pos + 1:]
        assert DEFAULT_FORMAT.read(other) == other != code
    for junk in ["", "   ", "-----", codes[0][:-1], codes[0] + "X", codes[0].replace(codes[0][0], "U", 1), "é" * 20,
                 "x" * 5000]:
        assert DEFAULT_FORMAT.read(junk) is None or DEFAULT_FORMAT.read(junk) != codes[0]


def test_an_alphabet_with_lower_case_letters_keeps_case_and_aliases():
    fmt = CodeFormat(alphabet="abcdefghijklmnopqrstuvwxyzO01", length=8, group_size=4)
    assert fmt.code_form == CODE_FORM_EXACT
    assert fmt.read("abcd-O01a") == "abcd-O01a"
    assert fmt.read("ABCD-O01A") is None  # upper-case is another symbol here, and O is not 0
    assert fmt.read("abcd O01a") == "abcd-O01a"
    stored = fmt.to_json()
    assert CodeFormat.from_json(stored) == fmt and typed_code("abcd O01a", stored) == "abcd-O01a"
    assert typed_code("AnyThing", None) == "AnyThing"  # imported: as typed, the code form decides


def _code_with_aliases(cards: list[dict]) -> dict:
    return next(c for c in cards if set(c["code"]) & {"0", "1"})


def test_typed_generated_code_redeems_and_the_rule_is_recorded(issuer_env, sessions, master_key):
    res = mint(sessions, master_key, issuer_env.address, count=8)
    anchor_batch(sessions, issuer_env.registry, res.batch_id)
    with sessions() as s:
        stored = s.scalar(sa.select(Batch.code_format).where(Batch.batch_id == res.batch_id))
    assert CodeFormat.from_json(stored) == DEFAULT_FORMAT
    cards = cards_of(sessions, master_key, res.batch_id)
    card = _code_with_aliases(cards)
    # As a cashier reads it off a receipt: lower case, spaced, an O for a 0 and an l for a 1.
    typed = " ".join(card["code"].split("-")).lower().replace("0", "o").replace("1", "l")
    assert typed != card["code"].lower()
    with sessions() as s:
        assert check_code(s, master_key, card["serial"], typed)
        assert check_code(s, master_key, card["serial"], card["code"].replace("-", "\u2014"))
        assert not check_code(s, master_key, card["serial"], typed_variants(cards[cards.index(card) - 1]["code"],
                                                                             random.Random(1))[1])
    out = redeem_card(sessions, master_key, issuer_env.registry, card["serial"], typed, "till-1")
    assert out.index == card["index"]
    assert issuer_env.registry.is_redeemed(bytes.fromhex(res.batch_id[2:]), card["index"])
    # The commitment is the core's, untouched: the generated code committed folded.
    assert card["commitment"] == code_commitment(card["opening"], card["code"], CODE_FORM_FOLDED)


def test_imported_codes_stay_exact_and_normalize_only_when_asked(issuer_env, sessions, master_key, tmp_path):
    (tmp_path / "exact.csv").write_text("code\nHeLLo-Wor1d\n")
    exact = mint(sessions, master_key, issuer_env.address, codes_csv=tmp_path / "exact.csv")
    (tmp_path / "folded.csv").write_text("code\nHeLLo-Wor1d-2\n")
    folded = mint(sessions, master_key, issuer_env.address, codes_csv=tmp_path / "folded.csv",
                  imported_code_form=CODE_FORM_FOLDED)
    with sessions() as s:
        rows = dict(s.execute(sa.select(Batch.batch_id, Batch.code_format)
                              .where(Batch.batch_id.in_([exact.batch_id, folded.batch_id]))).all())
    assert rows == {exact.batch_id: None, folded.batch_id: None}  # imported: no generated format
    for res in (exact, folded):
        anchor_batch(sessions, issuer_env.registry, res.batch_id)
    e, f = cards_of(sessions, master_key, exact.batch_id)[0], cards_of(sessions, master_key, folded.batch_id)[0]
    with pytest.raises(WrongCode):
        redeem_card(sessions, master_key, issuer_env.registry, e["serial"], "hello world", "till")
    # Folded imports ignore case, spaces and dashes, but read no Crockford alias: O is not 0 in "HeLLo".
    with pytest.raises(WrongCode):
        redeem_card(sessions, master_key, issuer_env.registry, f["serial"], "HELL0 W0RLD 2", "till")
    assert redeem_card(sessions, master_key, issuer_env.registry, f["serial"], "hello wor1d 2", "till").index == 0
    assert redeem_card(sessions, master_key, issuer_env.registry, e["serial"], "HeLLo-Wor1d", "till").index == 0


def test_a_normalized_import_refuses_codes_that_fold_alike(sessions, master_key, tmp_path):
    (tmp_path / "twins.csv").write_text("code\nab-12\nXY-9\nAB12\n")
    before = _batches(sessions)
    with pytest.raises(DuplicateCode) as err:
        mint(sessions, master_key, codes_csv=tmp_path / "twins.csv", imported_code_form=CODE_FORM_FOLDED)
    assert "line 4" in str(err.value) and "line 2" in str(err.value) and "ab" not in str(err.value).lower()
    (tmp_path / "empty.csv").write_text("code\nA-1\n- -\n")
    with pytest.raises(InvalidCsv) as err:
        mint(sessions, master_key, codes_csv=tmp_path / "empty.csv", imported_code_form=CODE_FORM_FOLDED)
    assert "line 3" in str(err.value)
    assert _batches(sessions) == before == 0
    # Exactly as imported, they are three codes.
    assert mint(sessions, master_key, codes_csv=tmp_path / "twins.csv").count == 3


def _batches(sessions) -> int:
    with sessions() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(Batch))


# ------------------------------------------------------------------------------------------------ the console


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    with in_process_cli(tmp_path, monkeypatch, capsys, CARDPROOF_PUBLIC_URL="https://cards.example.test") as c:
        c.ok("deploy", "--json")
        _, w3 = shared_in_process_web3()
        c.ok("issuer", "add", "--name", "Acme", "--address", dev_account_for(w3, w3.eth.chain_id).address)
        yield c


def _exported(cli, batch_id: str, out: Path) -> list[dict]:
    import csv

    cli.ok("export", batch_id, "--out", out, "--no-qr")
    with open(out / "cards.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_cli_codes_normalize_and_typed_redeem(cli, tmp_path, monkeypatch):
    import io

    (tmp_path / "codes.csv").write_text("code\nAbCd-1234\n")
    base = ["mint", "--sku", "GC", "--face-value", "5", "--currency", "EUR", "--codes-from", tmp_path / "codes.csv"]
    exact = cli.ok(*base, "--json").json
    assert exact["code_form"] == CODE_FORM_EXACT
    cli.fails("mint", "--sku", "GC", "--face-value", "5", "--currency", "EUR", "--count", "1", "--codes-normalize",
              rc=2, match="--codes-from")
    (tmp_path / "codes2.csv").write_text("code\nWxYz-5678\n")
    folded = cli.ok(*base[:-1], tmp_path / "codes2.csv", "--codes-normalize", "--json").json
    assert folded["code_form"] == CODE_FORM_FOLDED
    generated = cli.ok("mint", "--sku", "GC", "--face-value", "5", "--currency", "EUR", "--count", "2", "--json").json
    rows = {}
    for name, minted in (("exact", exact), ("folded", folded), ("generated", generated)):
        cli.ok("anchor", minted["batch_id"])
        rows[name] = _exported(cli, minted["batch_id"], tmp_path / name)[0]

    def redeem(serial: str, typed: str):
        monkeypatch.setattr("sys.stdin", io.StringIO(typed + "\n"))
        return cli("redeem", serial, "--code", "-", "--json")

    cli.fails("redeem", rows["exact"]["serial"], "--code", "abcd1234", rc=1, match="does not match")
    assert redeem(rows["exact"]["serial"], "AbCd-1234").rc == 0
    assert redeem(rows["folded"]["serial"], "wxyz 5678").rc == 0
    g = rows["generated"]["code"]
    assert redeem(rows["generated"]["serial"], g.lower().replace("-", " ").replace("0", "o").replace("1", "i")).rc == 0
    r = redeem(rows["generated"]["serial"], g)
    assert r.rc == 1 and "already" in r.err and g not in r.err


# ------------------------------------------------------------------------------------------- a piped code


def test_a_piped_code_is_read_without_warning(issuer_env, engine, sessions, tmp_path):
    """`echo CODE | cardproof redeem SERIAL` in a real process with no terminal: no getpass warning, exit 0."""
    if issuer_env.backend != "anvil":
        pytest.skip("needs a node in another process (anvil)")
    key = MasterKey.from_text("5a" * 32)
    res = mint(sessions, key, issuer_env.address, count=2)
    anchor_batch(sessions, issuer_env.registry, res.batch_id)
    card = cards_of(sessions, key, res.batch_id)[1]
    home = tmp_path / "cli-home"
    home.mkdir()
    shutil.copy(issuer_env.chain.home / "deployments.json", home / "deployments.json")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CARDPROOF_")},
        "CARDPROOF_HOME": str(home),
        "CARDPROOF_RPC_URL": issuer_env.chain.extra["node"].url,
        "CARDPROOF_PRIVATE_KEY": "0x" + bytes(issuer_env.chain.accounts["issuer"].key).hex(),
        "CARDPROOF_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "CARDPROOF_MASTER_KEY": "5a" * 32,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run([sys.executable, "-m", "cardproof", "redeem", card["serial"]],
                          input=card["code"].lower() + "\n", capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120, start_new_session=True)  # no controlling terminal, as under cron or ssh -T
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("redeemed ") and card["code"] not in proc.stdout
    assert issuer_env.registry.is_redeemed(bytes.fromhex(res.batch_id[2:]), 1)


def test_the_migration_gives_batches_minted_before_their_rule(tmp_path):
    """0008: a batch committed folded before it (generated) gets the default format; an exact one (imported) none."""
    from issuer.storage.db import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0007_erp")
    engine = sa.create_engine(url)
    columns = ("batch_id, issuer_address, sku, face_value, currency, card_count, root, manifest_hash, state, "
               "secret_ct, code_form, revoked, created_at, updated_at")
    with engine.begin() as conn:
        for n, form in ((1, CODE_FORM_FOLDED), (2, CODE_FORM_EXACT)):
            conn.execute(sa.text(f"INSERT INTO batches ({columns}) VALUES (:b, :i, 'GC', 1, 'USD', 1, :r, :r, "
                                 "'minted', :s, :f, 0, '2026-01-01', '2026-01-01')"),
                         {"b": "0x" + f"{n:064x}", "i": "0x" + "ab" * 20, "r": "0x" + "00" * 32, "s": b"x", "f": form})
    upgrade(url)
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT code_form, code_format FROM batches")).all())
    engine.dispose()
    assert CodeFormat.from_json(rows[CODE_FORM_FOLDED]) == DEFAULT_FORMAT and rows[CODE_FORM_EXACT] is None
