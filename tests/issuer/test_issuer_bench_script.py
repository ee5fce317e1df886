"""scripts/bench_mint runs the real minting and ends with its JSON summary line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_mint_small_run():
    proc = subprocess.run([str(REPO / "scripts" / "bench_mint"), "--count", "3000"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"cards", "seconds", "cards_per_s", "tree_seconds", "peak_rss_mb"} <= set(last)
    assert last["cards"] == 3000 and last["seconds"] > 0 and last["peak_rss_mb"] > 0


def test_bench_mint_rejects_a_bad_count():
    proc = subprocess.run([str(REPO / "scripts" / "bench_mint"), "--count", "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--count" in proc.stderr
