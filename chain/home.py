"""Where cardproof keeps its local state: ``CARDPROOF_HOME``, else the user's data folder (never the current directory).

Light on purpose (the standard library and platformdirs): `cardproof --help` names the folder without loading the
settings machinery (pydantic). :class:`chain.settings.Settings` uses :func:`default_home` for ``home``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_VARIABLE", "default_home", "describe_home", "home_now"]

HOME_VARIABLE = "CARDPROOF_HOME"


def default_home() -> Path:
    """The state folder when CARDPROOF_HOME is unset: the user's data folder, the same from any directory
    (``~/.local/share/cardproof`` on Linux, ``~/Library/Application Support/cardproof`` on macOS)."""
    from platformdirs import user_data_path

    return user_data_path("cardproof", appauthor=False)


def home_now() -> Path:
    """The state folder the environment names now (CARDPROOF_HOME, else :func:`default_home`)."""
    home = (os.environ.get(HOME_VARIABLE) or "").strip()
    return Path(home).expanduser() if home else default_home()


def describe_home(home: Path | None = None) -> str:
    """The state folder in words, for help texts and errors about missing state."""
    if home is None:
        home = home_now()
    if (os.environ.get(HOME_VARIABLE) or "").strip():
        return f"{home}, set by CARDPROOF_HOME"
    return f"{home}, the default while CARDPROOF_HOME is unset"
