"""The QR landing page in headless Chromium (Debian's `chromium`): rendered DOM and screenshots.

The screenshots are written to $TMPDIR/cardproof-screenshots/ (card-<lang>.png) and
checked to be real, mostly non-blank PNGs of a phone-sized viewport.
"""

from __future__ import annotations

import re
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

SHOTS = Path(tempfile.gettempdir()) / "cardproof-screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-extensions", "--mute-audio"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    # Set-up step: Debian's chromium, installed when missing (root only, as on the project's machines).
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        # With fonts for Thai and Chinese (Arabic and Latin come with chromium's dependencies).
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "fonts-thai-tlwg", "fonts-wqy-microhei"],
                       env=env, capture_output=True, timeout=600)
        found = shutil.which("chromium")
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing and could not be installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


def run_chromium(binary: str, url: str, *args: str, lang: str = "en-US") -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="cardproof-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", f"--lang={lang}", f"--accept-lang={lang}", *args, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def non_white_fraction(path: Path) -> float:
    from PIL import Image

    img = Image.open(path).convert("L").resize((80, 160))
    px = list(img.get_flattened_data() if hasattr(img, "get_flattened_data") else img.getdata())
    return sum(1 for p in px if p < 240) / len(px)


@pytest.mark.parametrize("lang, expected, direction", [
    ("en-US", "Authentic", "ltr"),
    ("ar", "أصلية", "rtl"),
    ("th", "ของแท้", "ltr"),
    ("zh-CN", "正品", "ltr"),
])
def test_landing_page_in_chromium(chromium, live_server, world, lang, expected, direction):
    serial = world.batches["main"].cards[5][0]
    url = f"{live_server.url}/c/{serial}"
    dom = run_chromium(chromium, url, "--dump-dom", lang=lang)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert expected in dom.stdout and f'dir="{direction}"' in dom.stdout
    # The only script is the service's own code-check module (no inline script, nothing from elsewhere).
    scripts = re.findall(r"<script[^>]*>", dom.stdout)
    assert serial in dom.stdout and len(scripts) == 1, scripts
    assert scripts[0].startswith('<script type="module" src="/static/codecheck.js?v='), scripts
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"card-{lang}.png"
    shot.unlink(missing_ok=True)
    res = run_chromium(chromium, url, f"--screenshot={shot}", "--window-size=390,1100",
                       "--force-device-scale-factor=1", lang=lang)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    assert png_size(shot) == (390, 1100)
    assert 0.03 < non_white_fraction(shot) < 0.9  # something is drawn, not an empty or broken page


def test_invalid_serial_page_in_chromium(chromium, live_server):
    dom = run_chromium(chromium, f"{live_server.url}/c/not-a-serial", "--dump-dom", lang="es")
    assert "Este no es un número de serie válido" in dom.stdout
