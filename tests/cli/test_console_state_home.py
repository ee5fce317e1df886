"""Local state does not depend on the current directory: with CARDPROOF_HOME unset it lives in the user's data
folder (platformdirs; $XDG_DATA_HOME/cardproof on Linux), and CARDPROOF_HOME still wins."""

from __future__ import annotations

import json

from chain.home import default_home, describe_home
from chain.settings import get_settings
from tests.cli.conftest import clean_env, run_cardproof


def test_default_home_is_the_user_data_folder_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("CARDPROOF_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    homes = set()
    for here in ("a", "b"):
        (tmp_path / here).mkdir()
        monkeypatch.chdir(tmp_path / here)
        homes.add(get_settings().home)
    assert homes == {tmp_path / "data" / "cardproof"} == {default_home()}
    assert describe_home() == f"{tmp_path / 'data' / 'cardproof'}, the default while CARDPROOF_HOME is unset"


def test_cardproof_home_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("CARDPROOF_HOME", str(tmp_path / "mine"))
    assert get_settings().home == tmp_path / "mine"
    assert get_settings(home=tmp_path / "other").home == tmp_path / "other"


def test_commands_from_two_directories_share_the_state(tmp_path):
    env = clean_env(XDG_DATA_HOME=str(tmp_path / "data"), CARDPROOF_PRIVATE_KEY="0x" + "5e" * 32)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    minted = run_cardproof("mint", "--sku", "GC-5", "--face-value", "5.00", "--currency", "USD", "--count", "3",
                           "--offline", "--json", env=env, cwd=tmp_path / "one", timeout=120)
    assert minted.returncode == 0, minted.stderr
    batch_id = json.loads(minted.stdout)["batch_id"]
    listed = run_cardproof("batches", "--json", env=env, cwd=tmp_path / "two", timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert batch_id in [row["batch_id"] for row in json.loads(listed.stdout)]
    state = tmp_path / "data" / "cardproof"
    assert (state / "cardproof.db").exists() and (state / "master.key").exists()
    assert not (tmp_path / "one" / ".cardproof").exists() and not (tmp_path / "two" / ".cardproof").exists()
