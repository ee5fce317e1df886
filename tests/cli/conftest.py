"""Fixtures of the console-wide tests: ``cli`` runs ``cardproof`` in-process on a fresh in-process chain with a
temporary CARDPROOF_HOME (tests/clikit.py); ``cardproof`` runs it as a real process (``python -m cardproof``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clikit import Cli, in_process_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys) -> Iterator[Cli]:
    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        yield c


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CARDPROOF_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDPROOF_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_cardproof(*args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60,
                  **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cardproof", *args], env=env, cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, check=False, **kwargs)
