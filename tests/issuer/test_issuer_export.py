"""Export of a batch: cards.csv (0600), one QR PNG per card holding only the public URL, tree.json."""

from __future__ import annotations

import csv
import json
import stat

import pytest
import zxingcpp
from PIL import Image

from chain.registry import CardStatus
from issuer.anchoring import anchor_batch
from issuer.core.dump import load_dump
from issuer.core.serial import format_serial, parse_serial
from issuer.errors import BatchNotFound
from issuer.export import ExportError, card_url, export_batch
from tests.issuer.helpers import cards_of, code_forms, mint

PUBLIC = "https://verify.example.test/"


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_export_of_an_anchored_batch(issuer_env, sqlite_sessions, master_key, tmp_path):
    sessions = sqlite_sessions
    res = mint(sessions, master_key, issuer_env.address, count=7)
    anchored = anchor_batch(sessions, issuer_env.registry, res.batch_id)
    out = tmp_path / "export"
    result = export_batch(sessions, master_key, res.batch_id, out, PUBLIC)
    assert result.cards == 7 and result.batch_id == res.batch_id

    # cards.csv: header, one row per card in index order, private.
    cards_csv = out / "cards.csv"
    assert stat.S_IMODE(cards_csv.stat().st_mode) == 0o600
    rows = read_csv(cards_csv)
    assert rows[0] == ["serial", "code", "url"]
    stored = cards_of(sessions, master_key, res.batch_id)
    assert [r[0] for r in rows[1:]] == [format_serial(parse_serial(c["serial"])) for c in stored]
    assert [r[1] for r in rows[1:]] == [c["code"] for c in stored]
    assert all(r[2] == f"https://verify.example.test/c/{r[0]}" for r in rows[1:])
    assert not list(out.glob("*.part"))

    # One QR per card; it decodes to exactly the URL, and no code is in the image or its file.
    pngs = sorted((out / "qr").glob("*.png"))
    assert len(pngs) == 7
    codes = [c["code"] for c in stored]
    for serial, _code, url in rows[1:3]:
        png = out / "qr" / f"{serial}.png"
        decoded = zxingcpp.read_barcodes(Image.open(png))
        assert [b.text for b in decoded] == [url]
        assert decoded[0].format == zxingcpp.BarcodeFormat.QRCode
        raw = png.read_bytes()
        assert not any(form.encode() in raw for c in codes for form in code_forms(c))
        assert not any(c in decoded[0].text for c in codes)

    # tree.json: an OpenZeppelin standard-v1 dump with the anchored root; its proofs verify on chain.
    dump = load_dump((out / "tree.json").read_text())
    assert "0x" + dump.tree.root.hex() == anchored.root == res.root
    data = json.loads((out / "tree.json").read_text())
    assert data["format"] == "standard-v1" and len(data["values"]) == 7
    leaf = dump.leaves[4]
    proof = dump.tree.proof_for(4)
    assert issuer_env.registry.verify_card(leaf.as_tuple(), proof) == (True, CardStatus.VALID)
    assert sorted(format_serial(lf.serial) for lf in dump.leaves) == sorted(r[0] for r in rows[1:])


def test_export_without_qr_and_existing_export(sessions, master_key, tmp_path):
    res = mint(sessions, master_key, count=3)
    out = tmp_path / "x"
    result = export_batch(sessions, master_key, res.batch_id, out, PUBLIC, qr=False)
    assert result.qr_dir is None and not (out / "qr").exists()
    assert len(read_csv(out / "cards.csv")) == 4
    with pytest.raises(ExportError, match="already holds an export"):
        export_batch(sessions, master_key, res.batch_id, out, PUBLIC, qr=False)
    (out / "cards.csv").chmod(0o644)
    export_batch(sessions, master_key, res.batch_id, out, PUBLIC, qr=False, force=True)
    assert stat.S_IMODE((out / "cards.csv").stat().st_mode) == 0o600


def test_export_keeps_the_file_private_even_over_a_stale_part_file(sessions, master_key, tmp_path):
    res = mint(sessions, master_key, count=2)
    out = tmp_path / "y"
    out.mkdir()
    (out / "cards.csv.part").write_text("stale")
    (out / "cards.csv.part").chmod(0o644)
    export_batch(sessions, master_key, res.batch_id, out, PUBLIC, qr=False)
    assert stat.S_IMODE((out / "cards.csv").stat().st_mode) == 0o600


def test_export_errors(sessions, master_key, tmp_path):
    with pytest.raises(BatchNotFound):
        export_batch(sessions, master_key, "0x" + "12" * 32, tmp_path / "z", PUBLIC)
    res = mint(sessions, master_key, count=1)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError) as err:
        export_batch(sessions, master_key, res.batch_id, blocker / "sub", PUBLIC)
    assert "\n" not in str(err.value)


def test_card_url():
    assert card_url("https://a.test/", "XXXX") == "https://a.test/c/XXXX"
    assert card_url("https://a.test", "XXXX") == "https://a.test/c/XXXX"
