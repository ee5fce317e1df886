"""Export of a batch: cards.csv (0600: serial, index, code, opening, url), one QR PNG per card holding only the
public URL, tree.json (public: no code, no opening)."""

from __future__ import annotations

import csv
import json
import stat

import pytest
import zxingcpp
from PIL import Image

from chain.registry import CardStatus
from issuer.anchoring import anchor_batch
from issuer.core.commitment import format_opening, opens, parse_opening
from issuer.core.dump import load_dump
from issuer.core.leaf import CODE_FORM_EXACT
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
    assert rows[0] == ["serial", "index", "code", "opening", "url"]
    stored = cards_of(sessions, master_key, res.batch_id)
    assert [r[0] for r in rows[1:]] == [format_serial(parse_serial(c["serial"])) for c in stored]
    assert [r[1] for r in rows[1:]] == [str(c["index"]) for c in stored] == [str(i) for i in range(7)]
    assert [r[2] for r in rows[1:]] == [c["code"] for c in stored]
    assert [parse_opening(r[3]) for r in rows[1:]] == [c["opening"] for c in stored]
    assert all(r[3] == format_opening(parse_opening(r[3])) for r in rows[1:])  # display form XXXX-...-XX
    assert len({r[3] for r in rows[1:]}) == 7
    assert all(r[4] == f"https://verify.example.test/c/{r[0]}" for r in rows[1:])
    assert not list(out.glob("*.part"))

    # One QR per card; it decodes to exactly the URL, and no code (nor opening) is in the image or its file.
    pngs = sorted((out / "qr").glob("*.png"))
    assert len(pngs) == 7
    codes = [c["code"] for c in stored]
    for serial, _index, _code, opening, url in rows[1:3]:
        png = out / "qr" / f"{serial}.png"
        decoded = zxingcpp.read_barcodes(Image.open(png))
        assert [b.text for b in decoded] == [url]
        assert decoded[0].format == zxingcpp.BarcodeFormat.QRCode
        raw = png.read_bytes()
        assert not any(form.encode() in raw for c in codes for form in code_forms(c))
        assert not any(c in decoded[0].text for c in codes) and opening not in decoded[0].text

    # tree.json: an OpenZeppelin standard-v1 dump with the anchored root; its proofs verify on chain.
    dump = load_dump((out / "tree.json").read_text())
    assert "0x" + dump.tree.root.hex() == anchored.root == res.root
    data = json.loads((out / "tree.json").read_text())
    assert data["format"] == "standard-v1" and len(data["values"]) == 7
    leaf = dump.leaves[4]
    proof = dump.tree.proof_for(4)
    assert issuer_env.registry.verify_card(leaf.as_tuple(), proof) == (True, CardStatus.VALID)
    assert sorted(format_serial(lf.serial) for lf in dump.leaves) == sorted(r[0] for r in rows[1:])
    # The dump is public: no code, no opening in it.
    text = (out / "tree.json").read_text()
    assert not any(r[2] in text or r[3] in text or parse_opening(r[3]).hex() in text for r in rows[1:])

    # Each row's (code, opening) opens its own card's leaf commitment, and only that one; the leaf is found
    # by the row's index and has the row's serial.
    by_index = {lf.index: lf for lf in dump.leaves}
    for serial, index, code, opening, _url in rows[1:]:
        leaf = by_index[int(index)]
        assert format_serial(leaf.serial) == serial
        assert opens(code, parse_opening(opening), leaf.code_form, leaf.code_commitment)
        assert opens(code.lower().replace("-", ""), parse_opening(opening), leaf.code_form, leaf.code_commitment)
    (_, i0, c0, o0, _), (_, i1, c1, o1, _) = rows[1], rows[2]
    leaf0 = by_index[int(i0)]
    assert not opens(c1, parse_opening(o1), leaf0.code_form, leaf0.code_commitment)  # another card's pair
    assert not opens(c0, parse_opening(o1), leaf0.code_form, leaf0.code_commitment)  # the wrong opening
    assert not opens(c1, parse_opening(o0), leaf0.code_form, leaf0.code_commitment)  # the wrong code


def test_export_of_imported_codes_opens_exactly(sessions, master_key, tmp_path):
    """Imported codes travel exactly as imported; their (code, opening) opens the leaf only in that exact form."""
    (tmp_path / "in.csv").write_text("code\nAbCd-0001-xyz\nÄÖÜ ünï-2\n", encoding="utf-8")
    res = mint(sessions, master_key, codes_csv=tmp_path / "in.csv")
    out = tmp_path / "imp"
    export_batch(sessions, master_key, res.batch_id, out, PUBLIC, qr=False)
    rows = read_csv(out / "cards.csv")[1:]
    assert [r[2] for r in rows] == ["AbCd-0001-xyz", "ÄÖÜ ünï-2"]
    leaves = {lf.index: lf for lf in load_dump((out / "tree.json").read_text()).leaves}
    for _serial, index, code, opening, _url in rows:
        leaf = leaves[int(index)]
        assert leaf.code_form == CODE_FORM_EXACT
        assert opens(code, parse_opening(opening), leaf.code_form, leaf.code_commitment)
        assert not opens(code.upper(), parse_opening(opening), leaf.code_form, leaf.code_commitment)
        assert not opens(code.replace("-", ""), parse_opening(opening), leaf.code_form, leaf.code_commitment)


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
