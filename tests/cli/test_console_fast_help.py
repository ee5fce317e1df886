"""`cardproof --help` and `cardproof GROUP --help` answer at once: importing the console loads neither web3 nor
eth-account, SQLAlchemy or FastAPI (they load inside the commands that need them)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli.conftest import REPO, clean_env, run_cardproof

HEAVY = ("web3", "eth_account", "sqlalchemy", "fastapi")


def _modules_after(code: str) -> set[str]:
    probe = f"import sys, io, contextlib\n{code}\nprint(__import__('json').dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", probe], env=clean_env(), cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True)
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


def test_importing_the_console_loads_no_heavy_library():
    loaded = _modules_after("import cardproof.console")
    assert "cardproof.console" in loaded
    assert not [m for m in HEAVY if m in loaded], sorted(m for m in HEAVY if m in loaded)


@pytest.mark.parametrize("argv", [["--help"], ["order", "--help"], ["issuer", "--help"], ["chain", "--help"],
                                  ["mint", "--help"], ["--version"]])
def test_help_and_version_load_no_heavy_library(argv):
    code = ("from cardproof import console\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    rc = console.main({argv!r})\n"
            "assert rc == 0, rc")
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded], (argv, sorted(m for m in HEAVY if m in loaded))


def test_importtime_of_help_names_no_web3(tmp_path):
    """The check the issue asks for, as a user would run it: `python -X importtime -m cardproof --help`."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "cardproof", "--help"], env=clean_env(
        CARDPROOF_HOME=str(tmp_path)), cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "cardproof.console" in imported
    assert "web3" not in imported and "eth_account" not in imported and "sqlalchemy" not in imported


def test_help_of_a_command_works_as_a_process(tmp_path):
    run = run_cardproof("order", "show", "--help", env=clean_env(CARDPROOF_HOME=str(tmp_path)))
    assert run.returncode == 0 and "ORDER" in run.stdout and run.stderr == ""
