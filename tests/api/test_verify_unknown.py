"""`cardproof verify` of an unknown card (issue 12): a clear "unknown: not genuine" verdict with exit 1, never
"all claims confirmed", whoever serves the answer."""

from __future__ import annotations

import copy

from issuer.core.serial import format_serial
from tests.api.test_verifier_attacks import UNKNOWN_ANSWER, api, cli, pin, real  # noqa: F401 - fixtures
from verify_api.verifier import EXIT_UNKNOWN, Outcome, verify


def test_unknown_card_is_not_genuine_exit_1(chain_env, real, cli, api):  # noqa: F811
    result = verify(copy.deepcopy(UNKNOWN_ANSWER), real, serial=UNKNOWN_ANSWER["serial"])
    assert result.outcome is Outcome.UNKNOWN and result.exit_status == EXIT_UNKNOWN == 1
    assert not any(c.confirmed for c in result.claims) and result.to_json()["outcome"] == "unknown"
    pin(cli, real.address)
    url = api.serve(copy.deepcopy(UNKNOWN_ANSWER))
    r = cli("verify", url)
    assert r.rc == 1
    assert "claims confirmed" not in r.out and "UNKNOWN card: not genuine" in r.out
    assert r.err.startswith("cardproof: ") and r.err.count("\n") == 1 and "unknown card" in r.err
    assert "Traceback" not in r.err
    data = cli("verify", url, "--json")
    assert data.rc == 1 and data.json["outcome"] == "unknown" and data.json["confirmed"] is False
    # Another serial nobody minted, asked by serial: the same.
    other = dict(copy.deepcopy(UNKNOWN_ANSWER), serial=format_serial(12345))
    api.serve(other)
    r = cli("verify", other["serial"], "--api", api.url)
    assert r.rc == 1 and "claims confirmed" not in r.out


def test_a_known_verdict_without_a_leaf_stays_a_contradiction(chain_env, real):  # noqa: F811
    bare = dict(copy.deepcopy(UNKNOWN_ANSWER), verdict="authentic")
    result = verify(bare, real)
    assert result.outcome is Outcome.MISMATCH and not result.unknown and result.exit_status == 1
