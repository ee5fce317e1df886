"""The issuer commands through the `cardproof` console: --json shapes, quiet output when piped, and one
line on stderr with a non-zero exit (never a traceback) for every kind of bad input."""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path

import pytest
from eth_account import Account
from rich.console import Console

from chain.client import dev_account_for, shared_in_process_web3
from chain.local_node import free_port
from issuer.core.serial import format_serial
from tests.clikit import in_process_cli

@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    with in_process_cli(tmp_path, monkeypatch, capsys, CARDPROOF_PUBLIC_URL="https://cards.example.test") as c:
        yield c


@pytest.fixture
def deployed(cli):
    """Registry deployed on the in-process chain; its dev account is an issuer."""
    cli.ok("deploy", "--json")
    _, w3 = shared_in_process_web3()
    dev = dev_account_for(w3, w3.eth.chain_id).address
    added = cli.ok("issuer", "add", "--name", "Acme  Games", "--address", dev.lower(), "--json").json
    assert added == {"address": dev, "name": "Acme Games", "granted": True, "registry": added["registry"]}
    return dev


def mint_json(cli, *extra: str) -> dict:
    return cli.ok("mint", "--sku", "GC-20", "--face-value", "20.00", "--currency", "USD", *extra, "--json").json


def exported_rows(path: Path) -> list[dict]:
    with open(path / "cards.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_full_flow_with_json(cli, deployed, tmp_path):
    minted = mint_json(cli, "--count", "5", "--expires", "2099-06-30")
    assert {"batch_id", "count", "root"} <= set(minted)
    assert minted["count"] == 5 and minted["issuer"] == deployed and minted["face_value"] == 2000
    assert minted["batch_id"].startswith("0x") and len(minted["root"]) == 66

    (tmp_path / "in.csv").write_text("sku,code\nx,IMPORTED-AAAA-0001\nx,IMPORTED-AAAA-0002\n")
    imported = mint_json(cli, "--codes-from", tmp_path / "in.csv")
    assert imported["count"] == 2

    rows = cli.ok("batches", "--json").json
    assert [r["batch_id"] for r in rows] == [minted["batch_id"], imported["batch_id"]]
    for r in rows:
        assert {"batch_id", "state", "root", "anchor_tx"} <= set(r)
        assert r["state"] == "minted" and r["anchor_tx"] is None
    assert rows[0]["root"] == minted["root"] and rows[0]["face_value"] == "20.00"

    anchored = cli.ok("anchor", minted["batch_id"], "--json").json
    assert anchored["state"] == "anchored" and anchored["anchor_tx"].startswith("0x") and not anchored["already"]
    assert cli.ok("anchor", minted["batch_id"], "--json").json["already"] is True
    rows = {r["batch_id"]: r for r in cli.ok("batches", "--json").json}
    assert rows[minted["batch_id"]]["state"] == "anchored"
    assert rows[minted["batch_id"]]["anchor_tx"] == anchored["anchor_tx"]
    assert rows[imported["batch_id"]]["state"] == "minted"

    out = tmp_path / "export"
    exported = cli.ok("export", minted["batch_id"], "--out", out, "--json").json
    assert exported["cards"] == 5 and Path(exported["cards_csv"]) == out / "cards.csv"
    assert stat.S_IMODE((out / "cards.csv").stat().st_mode) == 0o600
    cards = exported_rows(out)
    assert len(cards) == 5 and len(list((out / "qr").glob("*.png"))) == 5
    assert cards[0]["url"] == f"https://cards.example.test/c/{cards[0]['serial']}"

    redeemed = cli.ok("redeem", cards[0]["serial"], "--code", cards[0]["code"], "--json").json
    assert redeemed["serial"] == cards[0]["serial"] and redeemed["tx_hash"].startswith("0x")
    assert redeemed["redeemed_by"] == deployed
    cli.fails("redeem", cards[0]["serial"], "--code", cards[0]["code"], match="already redeemed")

    revoked = cli.ok("revoke", cards[1]["serial"], cards[2]["serial"].lower(), "--reason", "leaked", "--json").json
    assert len(revoked) == 1 and revoked[0]["indices"] == [1, 2] and revoked[0]["reason"] == 1
    cli.fails("redeem", cards[1]["serial"], "--code", cards[1]["code"], match="revoked")

    issuers = cli.ok("issuer", "list", "--json").json
    assert issuers[0]["address"] == deployed and issuers[0]["batches"] == 2 and issuers[0]["cards"] == 7

    # No command printed a code except the export's file.
    everything = json.dumps([minted, imported, rows, anchored, exported, redeemed, revoked, issuers])
    assert not any(c["code"] in everything for c in cards) and "IMPORTED-AAAA" not in everything


def test_human_output_is_short(cli, deployed, tmp_path):
    r = cli.ok("mint", "--sku", "GC", "--face-value", "5", "--currency", "EUR", "--count", "2")
    assert r.out.startswith("minted batch 0x") and "cardproof anchor" in r.out
    batch_id = r.out.split()[2].rstrip(":")
    assert "no batches" not in cli.ok("batches").out
    assert cli.ok("anchor", batch_id).out.startswith(f"batch {batch_id} anchored in block")
    assert "was already anchored" in cli.ok("anchor", batch_id).out


def test_redeem_reads_the_code_from_stdin(cli, deployed, tmp_path, monkeypatch):
    batch_id = mint_json(cli, "--count", "1")["batch_id"]
    cli.ok("anchor", batch_id)
    cli.ok("export", batch_id, "--out", tmp_path / "e", "--no-qr")
    card = exported_rows(tmp_path / "e")[0]
    monkeypatch.setattr("sys.stdin", io.StringIO(card["code"] + "\n"))
    assert cli.ok("redeem", card["serial"], "--code", "-", "--json").json["serial"] == card["serial"]


def test_progress_bar_on_a_terminal(cli, deployed, monkeypatch):
    import chain.cli_output
    import issuer.cli

    term = io.StringIO()
    fake = Console(file=term, force_terminal=True, width=100)
    monkeypatch.setattr(chain.cli_output, "err_console", fake)
    monkeypatch.setattr(issuer.cli, "err_console", fake)
    r = cli("mint", "--sku", "GC", "--face-value", "5", "--currency", "EUR", "--count", "3", "--json")
    assert r.rc == 0 and json.loads(r.out)["count"] == 3
    assert "minting" in term.getvalue()


def test_mint_works_offline_with_a_configured_key(cli, tmp_path):
    key = Account.create()
    cli.env("CARDPROOF_RPC_URL", f"http://127.0.0.1:{free_port()}")
    cli.env("CARDPROOF_PRIVATE_KEY", key.key.hex())
    minted = mint_json(cli, "--count", "2")
    assert minted["issuer"] == key.address and minted["batch_id"].startswith("0x" + key.address[2:].lower())
    cli.fails("anchor", minted["batch_id"], match="does not answer")


# --- bad input: one line on stderr, non-zero exit ----------------------------------------------------


BAD_MINT = [
    (["--currency", "XXX", "--count", "1"], "unsupported currency"),
    (["--currency", "usdollar", "--count", "1"], "unsupported currency"),
    (["--count", "0"], "invalid card count"),
    (["--count", "-3"], "invalid card count"),
    (["--count", "10000001"], "invalid card count"),
    (["--face-value", "abc", "--count", "1"], "face value"),
    (["--face-value", "0", "--count", "1"], "face value"),
    (["--face-value", "1.001", "--count", "1"], "decimals"),
    (["--sku", "", "--count", "1"], "SKU"),
    (["--expires", "2001-01-01", "--count", "1"], "in the past"),
    (["--expires", "someday", "--count", "1"], "expiry"),
]


@pytest.mark.parametrize("args,words", BAD_MINT)
def test_bad_mint_input(cli, args, words):
    base = {"--sku": "GC", "--face-value": "20.00", "--currency": "USD"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["mint", *[x for kv in base.items() for x in kv], "--json"]
    cli.fails(*argv, rc=1, match=words)
    assert not (cli.home / "cardproof.db").exists() or cli.ok("batches", "--json").json == []


@pytest.mark.parametrize("content,words", [
    (b"", "CSV file: the file is empty"),
    (b"code\n", "no codes"),
    (b"serial\n1\n", "CSV line 1: the header row has no 'code' column"),
    (b"code\nA-1\n\"B-2\n", "CSV line 3: malformed"),
    (b"code\nA-1\nB\xff\n", "CSV line 3: the file is not UTF-8"),
    (b"code\nSECRET-1\nA-2\nSECRET-1\n", "CSV line 4: duplicate code: same code as line 2"),
    (b"code\n" + b"S" * 200 + b"\n", "CSV line 2: invalid code: imported code is too long"),
])
def test_bad_csv(cli, tmp_path, content, words):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    r = cli.fails("mint", "--sku", "GC", "--face-value", "1", "--currency", "USD", "--codes-from", path, rc=1,
                  match=words)
    assert "SECRET" not in r.err and "SSSSSSSS" not in r.err


def test_csv_errors_without_file_or_count(cli, tmp_path):
    cli.fails("mint", "--sku", "GC", "--face-value", "1", "--currency", "USD", "--codes-from", tmp_path / "no.csv",
              rc=1, match="no such file")
    (tmp_path / "two.csv").write_text("code\nA-1\nB-2\n")
    cli.fails("mint", "--sku", "GC", "--face-value", "1", "--currency", "USD", "--codes-from", tmp_path / "two.csv",
              "--count", "3", rc=1, match="invalid card count")
    cli.fails("mint", "--sku", "GC", "--face-value", "1", "--currency", "USD", rc=2, match="--count")
    cli.fails("mint", "--sku", "GC", "--face-value", "1", "--currency", "USD", "--count", "many", rc=2)


def test_unknown_things(cli, deployed, tmp_path):
    batch_id = mint_json(cli, "--count", "2")["batch_id"]
    cli.ok("export", batch_id, "--out", tmp_path / "e", "--no-qr")
    card = exported_rows(tmp_path / "e")[0]
    cli.fails("redeem", card["serial"], "--code", card["code"], rc=1, match="is minted")  # not anchored yet
    cli.ok("anchor", batch_id)
    unknown_batch = "0x" + "00" * 32
    cli.fails("anchor", unknown_batch, rc=1, match="not found")
    cli.fails("anchor", "0xnotabatch", rc=1, match="not found")
    cli.fails("export", unknown_batch, "--out", tmp_path / "u", rc=1, match="not found")
    cli.fails("export", batch_id, "--out", tmp_path / "e", rc=1, match="already holds an export")
    unknown_serial = format_serial(424242)
    cli.fails("redeem", unknown_serial, "--code", "x", rc=1, match="not found")
    cli.fails("redeem", "NOT-A-SERIAL", "--code", "x", rc=1, match="serial")
    cli.fails("redeem", card["serial"][:-1] + ("0" if card["serial"][-1] != "0" else "1"), "--code", "x", rc=1,
              match="check symbol")
    r = cli.fails("redeem", card["serial"], "--code", "WRONG-SECRET-CODE", rc=1, match="does not match")
    assert "WRONG-SECRET" not in r.err
    cli.fails("revoke", unknown_serial, "--reason", "leaked", rc=1, match="not found")
    cli.fails("revoke", card["serial"], "--reason", "stolen", rc=1, match="unknown revocation reason")
    cli.fails("issuer", "add", "--name", "X", "--address", "0x1234", rc=1, match="not an account address")
    cli.fails("issuer", "add", "--name", "", "--address", "0x" + "12" * 20, rc=1, match="name")


@pytest.mark.parametrize("argv", [
    ["anchor", "0x" + "00" * 32],
    ["redeem", format_serial(5), "--code", "x"],
    ["revoke", format_serial(5), "--reason", "leaked"],
    ["issuer", "add", "--name", "X", "--address", "0x" + "12" * 20],
    ["mint", "--sku", "GC", "--face-value", "1", "--currency", "USD", "--count", "1"],
])
def test_unreachable_chain(cli, argv):
    cli.env("CARDPROOF_RPC_URL", f"http://127.0.0.1:{free_port()}")
    cli.fails(*argv, rc=1, match="does not answer")


def test_misconfigured_chain(cli):
    cli.env("CARDPROOF_RPC_URL", "ftp://nowhere")
    cli.fails("anchor", "0x" + "00" * 32, rc=1, match="CARDPROOF_RPC_URL")
    cli.env("CARDPROOF_RPC_URL", "eth-tester")
    cli.fails("anchor", "0x" + "00" * 32, rc=1, match="cardproof deploy")  # registry not deployed yet


def test_wrong_master_key(cli, deployed):
    batch_id = mint_json(cli, "--count", "1")["batch_id"]
    cli.env("CARDPROOF_MASTER_KEY", "11" * 32)
    cli.fails("export", batch_id, "--out", cli.home / "x", rc=1, match="wrong master key")
    cli.env("CARDPROOF_MASTER_KEY", "not-a-key")
    cli.fails("export", batch_id, "--out", cli.home / "y", rc=1, match="CARDPROOF_MASTER_KEY")


def test_redeemer_commands(cli, deployed):
    shop = Account.create().address
    added = cli.ok("redeemer", "add", shop.lower(), "--json").json
    assert added == {"issuer": deployed, "redeemer": shop, "allowed": True, "registry": added["registry"]}
    assert cli.ok("redeemer", "remove", shop, "--json").json["allowed"] is False
    assert cli.ok("redeemer", "add", shop).out.startswith(f"{shop} may now redeem cards of {deployed}")
    cli.fails("redeemer", "add", "0xbad", rc=1, match="not an account address")


def test_master_key_file_or_environment(cli, deployed):
    mint_json(cli, "--count", "1")
    key_file = cli.home / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_file.chmod(0o644)  # an unsafe key file is refused, in one line
    cli.fails("mint", "--sku", "GC", "--face-value", "1", "--currency", "USD", "--count", "1", rc=1,
              match="master key")
    key_file.chmod(0o600)
    other_home = cli.home.parent / "home2"
    cli.env("CARDPROOF_HOME", str(other_home))
    cli.env("CARDPROOF_MASTER_KEY", "ab" * 32)
    cli.ok("deploy")
    cli.ok("issuer", "add", "--name", "Acme Games", "--address", deployed.lower())  # this home's new registry
    assert mint_json(cli, "--count", "1")["count"] == 1
    assert not (other_home / "master.key").exists()


def test_cli_on_postgresql(cli, deployed, request):
    from tests import dbutil

    url = dbutil.create_schema(request.getfixturevalue("pg_database_url"), prefix="cli")
    try:
        cli.env("CARDPROOF_DATABASE_URL", url)
        minted = mint_json(cli, "--count", "3")
        assert [r["batch_id"] for r in cli.ok("batches", "--json").json] == [minted["batch_id"]]
        assert cli.ok("anchor", minted["batch_id"], "--json").json["state"] == "anchored"
        assert cli.ok("batches", "--json").json[0]["state"] == "anchored"
        cli.env("CARDPROOF_DATABASE_URL", None)
        assert cli.ok("batches", "--json").json == []  # nothing went to the default SQLite file
    finally:
        dbutil.drop_schema(url)


# --- publish: the supplier sends the public dump to a public service ---------------------------------


@pytest.fixture
def public_service(cli, deployed):
    """`cardproof serve`'s app on a live loopback server, on the same in-process chain and its own database
    (CARDPROOF_PUBLIC_DATABASE_URL unset: $CARDPROOF_HOME/public.db)."""
    from chain.settings import get_settings
    from tests.api.world import LiveServer
    from verify_api.app import create_app

    cli.env("CARDPROOF_PUBLIC_DATABASE_URL", None)
    with LiveServer(create_app(get_settings())) as server:
        yield server


def public_rows(home: Path) -> dict[str, list[dict]]:
    import sqlalchemy as sa

    from issuer.storage.db import make_engine
    from verify_api.storage.models import import_all_models

    eng = make_engine(f"sqlite:///{home / 'public.db'}")
    try:
        with eng.connect() as conn:
            return {t.name: [dict(r) for r in conn.execute(sa.select(t)).mappings()]
                    for t in import_all_models().sorted_tables}
    finally:
        eng.dispose()


def test_publish_end_to_end(cli, deployed, public_service, tmp_path):
    import httpx

    from issuer.core.commitment import opens, parse_opening
    from issuer.core.leaf import CardLeaf

    minted = mint_json(cli, "--count", "4")
    cli.ok("anchor", minted["batch_id"])
    cli.ok("export", minted["batch_id"], "--out", tmp_path / "e", "--no-qr")
    cards = exported_rows(tmp_path / "e")
    serial = cards[1]["serial"]
    assert httpx.get(f"{public_service.url}/v1/cards/{serial}").json()["verdict"] == "unknown"  # not yet

    published = cli.ok("publish", minted["batch_id"], "--api", public_service.url, "--json").json
    assert published["batch_id"] == minted["batch_id"] and published["cards"] == 4
    assert published["root"] == minted["root"] and published["stored"] is True
    assert published["api"] == public_service.url
    # Again: harmless, nothing stored twice.
    again = cli.ok("publish", minted["batch_id"], "--api", public_service.url + "/")
    assert again.out.startswith(f"{minted['batch_id']}: already published at {public_service.url}")

    # The public service stored the batch in its own database, and answers for its cards from it.
    rows = public_rows(cli.home)
    assert [b["batch_id"] for b in rows["pub_batches"]] == [minted["batch_id"]]
    assert len(rows["pub_cards"]) == 4
    answer = httpx.get(f"{public_service.url}/v1/cards/{serial}").json()
    assert answer["verdict"] == "authentic"
    assert answer["issuer"]["address"] == deployed
    # The holder's code and opening open the leaf the public side serves; the public side holds neither.
    leaf = CardLeaf.from_json(answer["proof"]["value"])
    assert leaf.index == int(cards[1]["index"]) and format_serial(leaf.serial) == serial
    assert opens(cards[1]["code"], parse_opening(cards[1]["opening"]), leaf.code_form, leaf.code_commitment)
    assert not opens(cards[2]["code"], parse_opening(cards[2]["opening"]), leaf.code_form, leaf.code_commitment)
    stored = json.dumps(rows, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))
    for c in cards:
        assert c["code"] not in stored and c["opening"] not in stored
        assert parse_opening(c["opening"]).hex() not in stored
    # The supplier's database holds no public table, the public one no supplier table.
    import sqlalchemy as sa

    for db, absent in (("cardproof.db", "pub_batches"), ("public.db", "cards")):
        eng = sa.create_engine(f"sqlite:///{cli.home / db}")
        try:
            assert absent not in sa.inspect(eng).get_table_names()
        finally:
            eng.dispose()


def test_publish_refusals_are_one_line(cli, deployed, public_service):
    minted = mint_json(cli, "--count", "2")
    # Not anchored: refused before anything is sent.
    cli.fails("publish", minted["batch_id"], "--api", public_service.url, rc=1, match="anchor it first")
    cli.ok("anchor", minted["batch_id"])
    # Unreachable service.
    dead = f"http://127.0.0.1:{free_port()}"
    r = cli.fails("publish", minted["batch_id"], "--api", dead, rc=1, match="cannot reach the public service")
    assert dead in r.err
    cli.fails("publish", "0x" + "00" * 32, "--api", public_service.url, rc=1, match="not found")
    assert public_rows(cli.home)["pub_batches"] == []
    # The default service is CARDPROOF_PUBLIC_URL.
    cli.env("CARDPROOF_PUBLIC_URL", public_service.url)
    assert cli.ok("publish", minted["batch_id"], "--json").json["stored"] is True
