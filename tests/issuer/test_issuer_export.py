"""Export of a batch: cards.csv (0600: serial, index, code, opening, url), one QR image per card (PNG or SVG, written
by worker processes or not: the same files) holding only the public URL, tree.json (public: no code, no opening)."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import re
import signal
import stat
from xml.etree import ElementTree

import pytest
import zxingcpp
from PIL import Image, ImageDraw

from chain.registry import CardStatus
from issuer.anchoring import anchor_batch
from issuer.core.commitment import format_opening, opens, parse_opening
from issuer.core.dump import load_dump
from issuer.core.leaf import CODE_FORM_EXACT
from issuer.core.serial import format_serial, parse_serial
from issuer.errors import BatchNotFound
from issuer.export import ExportError, card_url, export_batch
from issuer.export_qr import QrError, QrWorkerError
from issuer.export_url import PublicUrlError, qr_public_url
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


# --- print-shop scale: parallel QR writing, SVG, the public URL of the QR codes --------------------------------


def svg_raster(svg_text: str) -> Image.Image:
    """The SVG of a QR code (a white background and one path of rectangles ``Mx yhWvHh-WZ``) drawn with Pillow, at
    one pixel a user unit. Every part of the path must be such a rectangle."""
    root = ElementTree.fromstring(svg_text)  # well-formed XML, an <svg> root
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    width, height = int(root.get("width")), int(root.get("height"))
    paths = root.findall(".//{http://www.w3.org/2000/svg}path")
    assert len(paths) == 1
    d = paths[0].get("d")
    rects = re.findall(r"M(\d+) (\d+)h(\d+)v(\d+)h-(\d+)Z", d)
    assert "".join(f"M{x} {y}h{w}v{h}h-{w2}Z" for x, y, w, h, w2 in rects) == d
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for x, y, w, h, w2 in rects:
        assert w == w2
        draw.rectangle((int(x), int(y), int(x) + int(w) - 1, int(y) + int(h) - 1), fill=0)
    return image


def export_files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_parallel_export_writes_the_same_files_as_serial(sessions, master_key, tmp_path, fmt):
    res = mint(sessions, master_key, count=7)
    serial_run = export_batch(sessions, master_key, res.batch_id, tmp_path / "one", PUBLIC, qr_format=fmt,
                              workers=1, chunk=2)
    parallel_run = export_batch(sessions, master_key, res.batch_id, tmp_path / "two", PUBLIC, qr_format=fmt,
                                workers=2, chunk=2)
    assert (serial_run.workers, parallel_run.workers, parallel_run.qr_format) == (1, 2, fmt)
    one, two = export_files(tmp_path / "one"), export_files(tmp_path / "two")
    assert len([name for name in two if name.startswith("qr/")]) == 7
    assert one == two  # cards.csv, tree.json and every image, byte for byte
    rows = read_csv(tmp_path / "two" / "cards.csv")[1:]
    assert [r[1] for r in rows] == [str(i) for i in range(7)]
    codes = [r[2] for r in rows]
    for serial, _index, _code, opening, url in rows:
        data = two[f"qr/{serial}.{fmt}"]
        image = Image.open(io.BytesIO(data)) if fmt == "png" else svg_raster(data.decode())
        decoded = zxingcpp.read_barcodes(image)
        assert [b.text for b in decoded] == [url] and decoded[0].ec_level == "M"
        assert not any(form.encode() in data for c in codes for form in code_forms(c)) and opening.encode() not in data


def test_svg_export_holds_the_same_qr_code_as_the_png(sessions, master_key, tmp_path):
    res = mint(sessions, master_key, count=3)
    export_batch(sessions, master_key, res.batch_id, tmp_path / "png", PUBLIC)
    result = export_batch(sessions, master_key, res.batch_id, tmp_path / "svg", PUBLIC, qr_format="svg")
    assert result.qr_format == "svg" and result.public_url == PUBLIC
    assert not list((tmp_path / "svg" / "qr").glob("*.png"))
    for serial, _index, _code, _opening, url in read_csv(tmp_path / "svg" / "cards.csv")[1:]:
        svg = svg_raster((tmp_path / "svg" / "qr" / f"{serial}.svg").read_text())
        png = Image.open(tmp_path / "png" / "qr" / f"{serial}.png").convert("L")
        assert svg.size == png.size and svg.tobytes() == png.tobytes()  # the same modules, same quiet zone
        assert [b.text for b in zxingcpp.read_barcodes(svg)] == [url]


def test_png_qr_code_keeps_its_geometry(sessions, master_key, tmp_path):
    """8 pixels a module and a quiet zone of 4 modules, level M, as before the encoder changed."""
    res = mint(sessions, master_key, count=1)
    export_batch(sessions, master_key, res.batch_id, tmp_path / "e", PUBLIC)
    serial, _index, _code, _opening, url = read_csv(tmp_path / "e" / "cards.csv")[1]
    image = Image.open(tmp_path / "e" / "qr" / f"{serial}.png")
    (barcode,) = zxingcpp.read_barcodes(image)
    assert barcode.text == url and barcode.ec_level == "M"
    side = image.size[0]
    assert image.size == (side, side) and side % 8 == 0 and (side // 8 - 8 - 17) % 4 == 0  # a QR version's size
    pixels = image.convert("L").load()
    assert all(pixels[x, y] == 255 for x in range(side) for y in range(32))  # 4 white modules on top
    assert all(pixels[x, 32] == 0 for x in range(32, 88)) and pixels[88, 32] == 255  # the finder: 7 modules of 8 px


def test_unknown_qr_format_is_refused_before_anything_is_written(sessions, master_key, tmp_path):
    res = mint(sessions, master_key, count=1)
    with pytest.raises(QrError, match="unknown QR image format 'jpg'"):
        export_batch(sessions, master_key, res.batch_id, tmp_path / "e", PUBLIC, qr_format="jpg")
    assert not (tmp_path / "e").exists()


def test_export_reports_the_total_first_then_progress(sessions, master_key, tmp_path):
    res = mint(sessions, master_key, count=7)
    calls = []
    export_batch(sessions, master_key, res.batch_id, tmp_path / "e", PUBLIC, workers=2, chunk=3,
                 progress=lambda *a: calls.append(a))
    assert calls[0] == ("export", 0, 7) and calls[-1] == ("export", 7, 7)
    done = [c[1] for c in calls]
    assert done == sorted(done) and {c[2] for c in calls} == {7} and 3 in done


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.0.0.5/", "http://localhost:8000",
                                 "https://LOCALHOST.", "http://app.localhost", "http://[::1]:8000", "http://0.0.0.0",
                                 "http://[::]:80"])
def test_a_loopback_public_url_is_refused_unless_allowed(url):
    with pytest.raises(PublicUrlError, match="loopback address no buyer can reach") as err:
        qr_public_url(url)
    assert "--allow-loopback" in str(err.value) and "\n" not in str(err.value)
    assert qr_public_url(url, allow_loopback=True) == url.rstrip("/")


@pytest.mark.parametrize("url", [None, "", "   ", "verify.example.test", "ftp://verify.example.test",
                                 "https://", "https://v.example/?q=1", "https://v.example/#x", "http://[::1"])
def test_a_missing_or_malformed_public_url_is_refused(url):
    with pytest.raises(PublicUrlError) as err:
        qr_public_url(url, allow_loopback=True)
    assert "\n" not in str(err.value)


def test_a_public_url_is_kept_as_given():
    assert qr_public_url("https://verify.example.test/") == "https://verify.example.test"
    assert qr_public_url("https://cards.example/shop/") == "https://cards.example/shop"
    assert qr_public_url("http://10.0.0.7:8000") == "http://10.0.0.7:8000"  # a LAN address is the user's choice


def test_a_failing_qr_worker_fails_the_export_with_one_line_and_no_csv(sessions, master_key, tmp_path):
    res = mint(sessions, master_key, count=6)
    serials = [format_serial(parse_serial(c["serial"])) for c in cards_of(sessions, master_key, res.batch_id)]
    out = tmp_path / "e"
    (out / "qr" / f"{serials[4]}.png").mkdir(parents=True)  # a folder where a worker must write a file
    with pytest.raises(ExportError, match="cannot write the export") as err:
        export_batch(sessions, master_key, res.batch_id, out, PUBLIC, workers=2, chunk=2)
    assert "\n" not in str(err.value) and not any(c["code"] in str(err.value)
                                                  for c in cards_of(sessions, master_key, res.batch_id))
    assert not (out / "cards.csv").exists() and not list(out.glob("*.part")) and not (out / "tree.json").exists()


def test_a_killed_qr_worker_fails_the_export_with_one_line_and_no_csv(sessions, master_key, tmp_path):
    res = mint(sessions, master_key, count=40)
    killed = []

    def kill_the_workers(_phase, done, _total):
        if done and not killed:
            killed.extend(multiprocessing.active_children())
            for worker in killed:
                os.kill(worker.pid, signal.SIGKILL)

    out = tmp_path / "e"
    with pytest.raises(QrWorkerError, match="ended unexpectedly") as err:
        export_batch(sessions, master_key, res.batch_id, out, PUBLIC, workers=2, chunk=2, progress=kill_the_workers)
    assert killed and "\n" not in str(err.value)
    assert not (out / "cards.csv").exists() and not list(out.glob("*.part")) and not (out / "tree.json").exists()
