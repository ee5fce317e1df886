"""Production and test networks, for the pages' test network banner.

A chain is a production network only when the shipped ``verify_api/registries.json`` lists it under
``production_chains`` (decimal chain id -> name). Every other chain is a test network, and 31337 (anvil, Hardhat)
and 1337 are test networks whatever the file says: a page showing a card or an order on one says so plainly.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

__all__ = ["ALWAYS_TEST", "REGISTRIES_FILE", "is_test_network", "production_chains"]

log = logging.getLogger("cardproof.api.networks")

REGISTRIES_FILE = Path(__file__).resolve().parent / "registries.json"
#: Local development chains: never production.
ALWAYS_TEST = frozenset({31337, 1337})


@functools.cache
def production_chains() -> dict[int, str]:
    """Chain id -> name of the production networks listed in ``registries.json`` (empty when unreadable: then
    every chain is shown as a test network, the cautious side)."""
    try:
        listed = json.loads(REGISTRIES_FILE.read_text(encoding="utf-8")).get("production_chains") or {}
        chains = {int(k): str(v) for k, v in listed.items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("cannot read production_chains from %s: %s", REGISTRIES_FILE, exc)
        return {}
    return {k: v for k, v in chains.items() if k not in ALWAYS_TEST}


def is_test_network(chain_id: int | None) -> bool:
    """Whether ``chain_id`` is a test network; False when it is not known (nothing to say then)."""
    if chain_id is None:
        return False
    return int(chain_id) not in production_chains()
