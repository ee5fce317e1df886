"""Shared fixtures: `chain_env` runs a test once on the in-process chain and once on anvil."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chainkit import ChainEnv, anvil_env, eth_tester_env

BACKENDS = ("eth-tester", "anvil")


@pytest.fixture(scope="session")
def _eth_tester_session() -> Iterator[ChainEnv]:
    yield from eth_tester_env()


@pytest.fixture(scope="session")
def _anvil_session() -> Iterator[ChainEnv]:
    yield from anvil_env()


@pytest.fixture(params=BACKENDS)
def chain_env(request: pytest.FixtureRequest) -> Iterator[ChainEnv]:
    """A chain with the registry deployed and funded role accounts; state is reverted after the test."""
    env: ChainEnv = request.getfixturevalue(
        "_eth_tester_session" if request.param == "eth-tester" else "_anvil_session"
    )
    snap = env.snapshot()
    # Nonces cached by clients must not outlive the revert.
    env.admin._next_nonce = None
    try:
        yield env
    finally:
        env.revert(snap)
        env.admin._next_nonce = None
