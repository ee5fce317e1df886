"""`cardproof export` through the console: the public URL of the QR codes (a loopback one refused unless allowed,
shown in the output), the QR image format, worker processes, and a progress bar with the total."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
import zxingcpp
from PIL import Image
from rich.console import Console

from tests.clikit import in_process_cli


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """A console with no CARDPROOF_PUBLIC_URL: the settings' default, http://127.0.0.1:8000."""
    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        yield c


def minted(cli, count: int = 3) -> str:
    return cli.ok("mint", "--sku", "GC-20", "--face-value", "20.00", "--currency", "USD", "--count", str(count),
                  "--json").json["batch_id"]


def rows(folder) -> list[dict]:
    with open(folder / "cards.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def decoded(png) -> str:
    (barcode,) = zxingcpp.read_barcodes(Image.open(png))
    return barcode.text


def test_a_loopback_public_url_is_refused_for_qr_codes_unless_allowed(cli, tmp_path):
    batch = minted(cli)
    # The default public URL (no CARDPROOF_PUBLIC_URL) is loopback: refused, nothing written.
    cli.fails("export", batch, "--out", tmp_path / "a", rc=1, match="http://127.0.0.1:8000, a loopback address")
    cli.env("CARDPROOF_PUBLIC_URL", "http://localhost:8000/")
    cli.fails("export", batch, "--out", tmp_path / "a", match="--allow-loopback")
    cli.fails("export", batch, "--out", tmp_path / "a", "--public-url", "http://[::1]:8000", match="loopback")
    cli.fails("export", batch, "--out", tmp_path / "a", "--public-url", "verify.example", match="http(s) URL")
    assert not (tmp_path / "a").exists()

    # Allowed for a local test; the output says where the QR codes point.
    r = cli.ok("export", batch, "--out", tmp_path / "a", "--allow-loopback", "--workers", "1")
    assert "QR codes (png) point to http://localhost:8000/c/SERIAL" in r.out
    card = rows(tmp_path / "a")[0]
    assert decoded(tmp_path / "a" / "qr" / f"{card['serial']}.png") == card["url"]
    assert card["url"] == f"http://localhost:8000/c/{card['serial']}"

    # --public-url wins over CARDPROOF_PUBLIC_URL; --json carries the URL used.
    out = cli.ok("export", batch, "--out", tmp_path / "b", "--public-url", "https://cards.example.test/",
                 "--workers", "1", "--json").json
    assert out["public_url"] == "https://cards.example.test" and out["qr_format"] == "png"
    card = rows(tmp_path / "b")[1]
    assert card["index"] == "1" and card["url"] == f"https://cards.example.test/c/{card['serial']}"
    assert decoded(tmp_path / "b" / "qr" / f"{card['serial']}.png") == card["url"]

    # Without QR images there is nothing to print: the CSV alone is written.
    out = cli.ok("export", batch, "--out", tmp_path / "c", "--no-qr", "--json").json
    assert out["qr_dir"] is None and not (tmp_path / "c" / "qr").exists()


def test_export_formats_and_workers(cli, tmp_path):
    cli.env("CARDPROOF_PUBLIC_URL", "https://verify.example.test")
    batch = minted(cli, 5)
    cli.fails("export", batch, "--out", tmp_path / "x", "--format", "jpg", match="unknown QR image format 'jpg'")
    cli.fails("export", batch, "--out", tmp_path / "x", "--workers", "0")
    cli.fails("export", "0x" + "12" * 32, "--out", tmp_path / "x", rc=1, match="not found")
    assert not (tmp_path / "x").exists()
    out = cli.ok("export", batch, "--out", tmp_path / "svg", "--format", "svg", "--json").json
    assert out["qr_format"] == "svg" and out["workers"] >= 1 and out["cards"] == 5
    cards = rows(tmp_path / "svg")
    assert [c["index"] for c in cards] == ["0", "1", "2", "3", "4"]
    assert sorted(p.name for p in (tmp_path / "svg" / "qr").iterdir()) == sorted(f"{c['serial']}.svg" for c in cards)
    # Two workers or one: the same files.
    cli.ok("export", batch, "--out", tmp_path / "w1", "--workers", "1")
    cli.ok("export", batch, "--out", tmp_path / "w2", "--workers", "2")
    files = {p.relative_to(tmp_path / "w1"): p.read_bytes() for p in (tmp_path / "w1").rglob("*") if p.is_file()}
    assert files == {p.relative_to(tmp_path / "w2"): p.read_bytes() for p in (tmp_path / "w2").rglob("*")
                     if p.is_file()}
    assert len(files) == 5 + 2


def test_progress_bar_shows_the_total_and_an_eta(cli, tmp_path, monkeypatch):
    import chain.cli_output
    import issuer.cli

    cli.env("CARDPROOF_PUBLIC_URL", "https://verify.example.test")
    batch = minted(cli, 7)
    term = io.StringIO()
    fake = Console(file=term, force_terminal=True, width=120)
    monkeypatch.setattr(chain.cli_output, "err_console", fake)
    monkeypatch.setattr(issuer.cli, "err_console", fake)
    r = cli("export", batch, "--out", tmp_path / "e", "--workers", "1", "--json")
    assert r.rc == 0 and json.loads(r.out)["cards"] == 7
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.getvalue())  # the frames drawn, without colours
    assert "exporting" in shown and "/?" not in shown  # the total, not an unknown one
    assert re.search(r" 7/7 \d+:\d\d:\d\d", shown), shown  # done of the total, then the time remaining (ETA)
