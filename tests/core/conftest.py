"""Fixtures of the core tests. Helpers live in core_testlib.py, put on sys.path here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core_testlib import OZ, oz_unavailable_reason  # noqa: E402


@pytest.fixture(scope="session")
def oz() -> OZ:
    """The real @openzeppelin/merkle-tree; skipped where node or node_modules is missing, except in CI."""
    why = oz_unavailable_reason()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"OpenZeppelin reference unavailable in CI: {why}")
        pytest.skip(why)
    return OZ()
