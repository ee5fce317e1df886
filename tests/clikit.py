"""Run the `cardproof` console in-process: exit code, stdout and stderr, with the checks every command
must pass (quiet stderr on success; on failure one line on stderr, nothing on stdout, no traceback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardproof import console
from chain.client import reset_shared_in_process_web3

ENV_CLEARED = ("CARDPROOF_DATABASE_URL", "CARDPROOF_PRIVATE_KEY", "CARDPROOF_MASTER_KEY", "CARDPROOF_KEYSTORE",
               "CARDPROOF_KEYSTORE_PASSWORD", "CARDPROOF_CHAIN_ID", "CARDPROOF_CONFIRMATIONS",
               "CARDPROOF_PUBLIC_URL", "CARDPROOF_DEBUG", "CARDPROOF_EXPLORER_URL")


@dataclass
class Run:
    rc: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    def __init__(self, capsys: Any, monkeypatch: Any, home: Path) -> None:
        self.capsys, self.monkeypatch, self.home = capsys, monkeypatch, home

    def __call__(self, *args: Any) -> Run:
        self.capsys.readouterr()
        rc = console.main([str(a) for a in args])
        out, err = self.capsys.readouterr()
        return Run(rc, out, err)

    def ok(self, *args: Any) -> Run:
        r = self(*args)
        assert r.rc == 0, r
        assert r.err == "", r  # quiet when not on a terminal
        return r

    def fails(self, *args: Any, rc: int | None = None, match: str | None = None) -> Run:
        r = self(*args)
        assert r.rc != 0, r
        if rc is not None:
            assert r.rc == rc, r
        if "--json" in [str(a) for a in args] and r.out:  # with --json the error is JSON on stdout too (README)
            body = json.loads(r.out)
            assert list(body) == ["error"] and r.err.rstrip("\n").endswith(body["error"]["message"]), r
        else:
            assert r.out == "", r
        assert "Traceback" not in r.err and r.err.endswith("\n") and r.err.count("\n") == 1, r.err
        assert r.err.startswith("cardproof"), r.err
        if match is not None:
            assert match in r.err, r.err
        return r

    def env(self, name: str, value: str | None) -> None:
        if value is None:
            self.monkeypatch.delenv(name, raising=False)
        else:
            self.monkeypatch.setenv(name, value)

    def act_as(self, key: str | None) -> None:
        """Act as the account of this private key (None: the dev chain's default account)."""
        self.env("CARDPROOF_PRIVATE_KEY", key)


@contextmanager
def in_process_cli(tmp_path: Path, monkeypatch: Any, capsys: Any, **env: str) -> Iterator[Cli]:
    """A Cli on a fresh in-process chain (CARDPROOF_RPC_URL=eth-tester) with a temporary CARDPROOF_HOME."""
    reset_shared_in_process_web3()
    for name in ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("CARDPROOF_HOME", str(home))
    monkeypatch.setenv("CARDPROOF_RPC_URL", "eth-tester")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        yield Cli(capsys, monkeypatch, home)
    finally:
        reset_shared_in_process_web3()
