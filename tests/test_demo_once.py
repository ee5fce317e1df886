"""`scripts/demo --once` (scripts/demo_flow.py): the same run whatever the caller's environment, no deprecation
warning, and no temporary folder (it holds plaintext codes) left behind, neither at the end nor when interrupted.

The demo runs as scripts/demo runs it after its set-up step (``.venv/bin/python scripts/demo_flow.py``), in a
process of its own with its own $TMPDIR, so that what it leaves there can be seen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

REPO = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, str(REPO / "scripts" / "demo_flow.py")]

# What a caller may well have set for its own work; none of it may reach --once. A funded dev key would hide the
# old failure, so the key is a fresh one with no ether ("cannot afford txn gas" when it was used).
HOSTILE_ENV = {
    "CARDPROOF_PRIVATE_KEY": Account.create().key.hex(),
    "CARDPROOF_KEYSTORE": "/nonexistent/keystore.json",
    "CARDPROOF_RPC_URL": "http://127.0.0.1:9",
    "CARDPROOF_HOME": "/nonexistent/cardproof-home",
    "CARDPROOF_DATABASE_URL": "sqlite:////nonexistent/cardproof.db",
    "CARDPROOF_PUBLIC_DATABASE_URL": "sqlite:////nonexistent/public.db",
    "CARDPROOF_REDIS_URL": "redis://127.0.0.1:9/0",
    "CARDPROOF_MASTER_KEY": "not-a-key",
    "CARDPROOF_NODE_CONFIG": "/nonexistent/node.toml",
    "cardproof_public_url": "http://elsewhere.example",  # settings names are case-insensitive
}


def demo_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CARDPROOF_")}
    # Every warning shown, DeprecationWarning included (Python hides those outside __main__ by default).
    env.update(HOSTILE_ENV, TMPDIR=str(tmp), PYTHONWARNINGS="default", **extra)
    return env


@dataclass
class Run:
    returncode: int
    output: str
    tmp: Path
    seconds: float


@pytest.fixture(scope="module")
def hostile_once(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("demo-tmp")
    t0 = time.monotonic()
    res = subprocess.run([*DEMO, "--once"], cwd=REPO, env=demo_env(tmp), capture_output=True, text=True, timeout=300)
    return Run(res.returncode, res.stdout + res.stderr, tmp, time.monotonic() - t0)


def test_once_passes_whatever_the_callers_cardproof_environment(hostile_once):
    assert hostile_once.returncode == 0, hostile_once.output[-4000:]
    assert "demo: all checks passed" in hostile_once.output
    assert "Traceback" not in hostile_once.output
    assert "elsewhere.example" not in hostile_once.output  # its own public URL, not the caller's


def test_once_prints_no_deprecation_warning(hostile_once):
    assert hostile_once.returncode == 0, hostile_once.output[-4000:]
    assert "DeprecationWarning" not in hostile_once.output, hostile_once.output[-4000:]


def test_once_removes_its_temporary_folder(hostile_once):
    assert hostile_once.returncode == 0, hostile_once.output[-4000:]
    assert "cardproof-demo-" in hostile_once.output  # it did use a folder under $TMPDIR (its paths are printed)
    assert list(hostile_once.tmp.iterdir()) == []


def test_once_interrupted_removes_its_temporary_folder_and_says_so(tmp_path):
    """Ctrl-C (SIGINT) once the codes are exported: one line, exit 130, and the folder with the codes gone."""
    proc = subprocess.Popen([*DEMO, "--once"], cwd=REPO, env=demo_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("7. exported"):
                break
        assert seen and seen[-1].startswith("7. exported"), "".join(seen)
        assert any(tmp_path.glob("cardproof-demo-*/demo/export-*/cards.csv"))  # plaintext codes on disk now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("demo:")]
    assert said == ["demo: interrupted; everything it started is stopped"] and "Traceback" not in err, err[-3000:]
    assert list(tmp_path.iterdir()) == []
