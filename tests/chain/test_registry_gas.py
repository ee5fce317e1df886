"""The gas targets of the CardRegistry hold on both backends (the figures scripts/bench_gas reports)."""

from __future__ import annotations

from scripts.gasbench.registry import TARGETS, check, measure


def test_gas_targets(chain_env):
    figures = measure(chain_env)
    assert check(figures) == []
    assert figures["anchor_batch_exec"] == figures["anchor_batch_1m_exec"]  # O(1) in the batch size
    for key, limit in TARGETS.items():
        assert figures[key] <= limit, key
    # Granting with a (64-byte) name stores it on top of the role: dearer than the bare role, still bounded.
    assert figures["grant_issuer"] < figures["grant_issuer_named"] < 150_000
    assert figures["verify_card_call"] > 0
