"""Every command's help in one style: no type tags (`<bool>`, `<text>`, `<integer>`, `<str>`...), placeholders in
capitals (FACE_VALUE, ORDER), and the root help names where local state lives and the exit codes."""

from __future__ import annotations

import re

import pytest
import typer

from cardproof import console
from cardproof.help_style import tidy_help

TYPE_TAG = re.compile(r"<(?:bool|boolean|text|integer|str|int|float|path|file|uuid|datetime|choice|[a-z]+ range)>")
#: NAME, [NAME] (optional argument), NAME..., "-" (stdin only), or choices a|b.
PLACEHOLDER = re.compile(r"^\[?[A-Z][A-Z0-9_]*\]?(\.\.\.)?$|^-$|^[^<>]+\|[^<>]+$")


def _paths(command, prefix=()):
    yield prefix
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _paths(sub, (*prefix, name))


ALL_PATHS = list(_paths(typer.main.get_command(console.app)))


def test_the_walk_finds_every_group_and_command():
    names = {" ".join(p) for p in ALL_PATHS}
    assert {"", "order", "order show", "mint", "chain up", "issuer api-key create"} <= names
    assert len(ALL_PATHS) > 40


@pytest.mark.parametrize("path", ALL_PATHS, ids=lambda p: " ".join(p) or "cardproof")
def test_help_has_no_type_tags(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert console.main([*path, "--help"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "Usage: cardproof" in out
    assert not TYPE_TAG.findall(out), (path, TYPE_TAG.findall(out))


def test_placeholders_are_capitals_everywhere():
    command = typer.main.get_command(console.app)
    tidy_help(command)
    ctx = typer.Context(command)
    wrong = []

    def walk(cmd, path):
        for param in cmd.params:
            shown = param.display_type_rich(ctx)
            if param.param_type_name == "argument":
                shown = param.metavar
            if shown is not None and not PLACEHOLDER.match(shown):
                wrong.append((path, param.name, shown))
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, f"{path} {name}")

    walk(command, "cardproof")
    assert wrong == []


def test_flags_show_no_placeholder_and_options_show_their_name(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert console.main(["mint", "--help"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "--face-value" in x)
    assert "FACE_VALUE" in line
    json_line = next(x for x in out.splitlines() if "--json" in x)
    assert re.search(r"--json\s+Print", json_line), json_line


def test_root_help_names_the_state_folder_and_the_exit_codes(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("CARDPROOF_HOME", str(tmp_path / "state"))
    assert console.main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{tmp_path / 'state'}, set by CARDPROOF_HOME" in out
    assert "0 done, 1 refused, 2 usage, 130 interrupted" in out
    assert "--version" in out and "--install-completion" in out and "--show-completion" in out
