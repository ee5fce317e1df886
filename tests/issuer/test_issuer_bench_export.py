"""scripts/bench_export mints and exports a batch with the real export and ends with its JSON summary line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_export_small_run():
    proc = subprocess.run([str(REPO / "scripts" / "bench_export"), "--count", "1200", "--workers", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"cards_per_second", "encoder_images_per_second", "ratio", "workers", "projected_1m_seconds",
            "cpu_ms_per_card"} <= set(last)
    assert last["cards"] == 1200 and last["workers"] == 2 and last["format"] == "png"
    assert last["cards_per_second"] > 0 and last["encoder_images_per_second"] > 0
    projected = 1_000_000 * last["seconds"] / 1200
    assert abs(last["projected_1m_seconds"] - projected) <= 1 + projected / 1000


def test_bench_export_rejects_bad_arguments():
    for args, name in ((["--count", "0"], "--count"), (["--workers", "0"], "--workers"),
                       (["--format", "gif"], "--format")):
        proc = subprocess.run([str(REPO / "scripts" / "bench_export"), *args], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and name in proc.stderr, proc.stderr
