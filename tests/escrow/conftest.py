"""Escrow fixtures: the escrow world is deployed once per backend, before any per-test snapshot.

The package-scoped `_escrow_worlds` fixture snapshots each backend's session chain, deploys the world
(tests/escrow/world.py) and records it in ``env.extra``; `chain_env` (tests/conftest.py) then snapshots
and reverts around every test on top of it. At the end of the package each chain is reverted to its
pre-world snapshot, so other test packages see the chain as tests.chainkit left it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chainkit import ChainEnv
from tests.escrow.world import World, worlds_on_session_chains


@pytest.fixture(scope="package", autouse=True)
def _escrow_worlds(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from worlds_on_session_chains(request, "escrow_world")


@pytest.fixture
def world(chain_env: ChainEnv) -> World:
    return World.of(chain_env)
