"""One exit-code convention for every command (README, "Exit codes"): 0 done (also "already done" for a repeated
idempotent command), 1 refused, 2 usage, 130 interrupted with one line saying so; and `--version`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cardproof import console
from tests.cli.conftest import REPO, clean_env, run_cardproof


def test_done_and_already_done_exit_0(cli):
    first = cli.ok("deploy")
    assert "CardRegistry deployed at" in first.out
    again = cli.ok("deploy")
    assert "CardRegistry already deployed at" in again.out
    body = cli.ok("deploy", "--json").json
    assert body["created"] is False and body["address"] in first.out


def test_refused_exits_1_with_one_line(cli):
    cli.ok("deploy")
    r = cli.fails("order", "show", "99", rc=console.EXIT_ERROR)
    assert "99" in r.err


def test_usage_errors_exit_2_with_one_line(cli):
    for argv in (["order", "show", "--no-such-flag"], ["order", "show", "not-a-number"], ["revoke", "X"],
                 ["no-such-command"]):
        r = cli.fails(*argv, rc=console.EXIT_USAGE)
        assert r.err.endswith("(see --help)\n"), r.err
        assert ". (see --help)" not in r.err


def test_no_arguments_shows_help_and_exits_2(cli):
    r = cli()
    assert r.rc == console.EXIT_USAGE and "Usage: cardproof" in r.out + r.err


def test_version_comes_from_the_distribution(cli):
    from importlib.metadata import version

    r = cli.ok("--version")
    assert r.out == f"cardproof {version('cardproof')}\n"


def _wait_reading_stdin(proc: subprocess.Popen, limit: float = 30.0) -> None:
    """Until the process blocks in read(0, ...) (Linux /proc/PID/syscall; x86-64 read is 0, arm64 63)."""
    deadline = time.monotonic() + limit
    path = Path(f"/proc/{proc.pid}/syscall")
    while time.monotonic() < deadline:
        try:
            fields = path.read_text().split()
        except (OSError, PermissionError):
            time.sleep(3)  # no /proc: give the interpreter time to start
            return
        if len(fields) > 1 and fields[0] in ("0", "63") and int(fields[1], 16) == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the command never waited on stdin")


def _interrupt_while_reading(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    env = clean_env(CARDPROOF_HOME=str(tmp_path / "home"), CARDPROOF_RPC_URL="eth-tester")
    proc = subprocess.Popen([sys.executable, "-m", "cardproof", "redeem", "0" * 17, "--code", "-", *extra],
                            env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_reading_stdin(proc)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_interrupted_exits_130_with_one_line(tmp_path):
    run = _interrupt_while_reading(tmp_path)
    assert run.returncode == console.EXIT_INTERRUPTED == 130
    assert run.stderr == "cardproof: interrupted\n" and run.stdout == ""


def test_interrupted_with_json_says_so_in_json(tmp_path):
    run = _interrupt_while_reading(tmp_path, "--json")
    assert run.returncode == 130 and run.stderr == "cardproof: interrupted\n"
    assert json.loads(run.stdout) == {"error": {"code": "interrupted", "message": "interrupted"}}


def test_exit_codes_as_a_process(tmp_path):
    env = clean_env(CARDPROOF_HOME=str(tmp_path / "home"), CARDPROOF_RPC_URL="http://127.0.0.1:1")
    usage = run_cardproof("order", "show", "--bogus", env=env)
    assert usage.returncode == 2 and usage.stdout == "" and usage.stderr.count("\n") == 1
    refused = run_cardproof("order", "show", "1", env=env)
    assert refused.returncode == 1 and refused.stdout == "" and "Traceback" not in refused.stderr
    assert run_cardproof("--version", env=env).returncode == 0


def test_a_broken_connection_is_reported_and_only_a_closed_stdout_is_silent(monkeypatch, capsys):
    """`cardproof ... | head` ends quietly when the reader leaves; a pipe or socket of the command's own that
    breaks is an error with its one line, not a silent exit 1."""
    import io

    from cardproof import console

    def broken(*_a, **_kw):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(console, "_invoke", broken)
    assert console.main(["batches"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cardproof: a connection broke") and err.count("\n") == 1

    class ClosedPipe(io.StringIO):
        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            raise ValueError("no file")

    monkeypatch.setattr(console.sys, "stdout", ClosedPipe())
    assert console.main(["batches"]) == 1
    assert capsys.readouterr().err == ""



def test_a_stdout_whose_reader_left_is_seen_even_with_nothing_left_to_flush(tmp_path):
    """`cardproof ... --help | head -2`: the write that broke took its data with it, so flushing finds nothing to
    fail on; the pipe itself must tell that the reader has gone (else the end is reported as an error)."""
    import subprocess
    import sys

    script = ("import os, sys\n"
              "r, w = os.pipe()\n"
              "os.close(r)\n"  # the reader has gone; nothing is buffered
              "os.dup2(w, 1)\n"
              "from cardproof.console import _stdout_closed\n"
              "sys.stderr.write(str(_stdout_closed()))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "CARDPROOF_HOME": str(tmp_path)})
    assert done.stderr == "True", done.stderr
