"""The card page a buyer opens from the QR code, for what it must say beyond the verdict (verify_api/routes/pages.py,
verify_api/card_acts.py, verify_api/networks.py): a revoked card's page says when it was revoked and why, a
redeemed card's page when it was redeemed (from the indexed registry events, block times); a test network is
shown plainly; amounts keep their order in Arabic; ``<main data-state>`` names the state.

On its own world (tests/api/world.py): the chain's clock is moved to known dates, and the indexer writes into the
world's public database, which the session's shared world must not see."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterator

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from issuer.core.serial import format_serial, new_serial_value
from issuer.revocation import RevokeReason
from tests.api.world import World, build_world
from verify_api.i18n import translator
from verify_api.indexer import Indexer, followed_contracts
from verify_api.networks import is_test_network, production_chains
from verify_api.routes.pages import render_card

REVOKED_AT = int(dt.datetime(2031, 5, 17, 12, tzinfo=dt.UTC).timestamp())
REDEEMED_AT = int(dt.datetime(2031, 9, 3, 12, tzinfo=dt.UTC).timestamp())
BATCH_REVOKED_AT = int(dt.datetime(2032, 2, 9, 12, tzinfo=dt.UTC).timestamp())


@pytest.fixture(scope="module")
def vw() -> Iterator[World]:
    w = build_world()
    from tests.api.world import mint

    mint(w, "doomed", 3)  # revoked as a whole batch
    main = bytes.fromhex(w.batches["main"].batch_id[2:])
    w.tester.time_travel(REVOKED_AT)
    w.registry.revoke_cards(main, [1], int(RevokeReason.LEAKED))
    w.tester.time_travel(REDEEMED_AT)
    w.registry.mark_redeemed(main, [2])
    w.tester.time_travel(BATCH_REVOKED_AT)
    w.registry.revoke_batch(bytes.fromhex(w.batches["doomed"].batch_id[2:]), int(RevokeReason.RECALLED))
    Indexer(w.admin, w.public_sessions, followed_contracts(w.admin, w.home)).run_once()
    yield w
    w.engine.dispose()


@pytest.fixture(scope="module")
def client(vw) -> Iterator[TestClient]:
    with TestClient(vw.app(), base_url="http://testserver") as c:
        yield c


def serial(vw: World, i: int, batch: str = "main") -> str:
    return vw.batches[batch].cards[i][0]


def state(html: str) -> str:
    return re.search(r'<main data-state="([a-z_]*)"', html).group(1)


def test_revoked_page_says_when_and_why(client, vw):
    r = client.get(f"/c/{serial(vw, 1)}", headers={"Accept-Language": "en"})
    assert r.status_code == 200 and 'data-verdict="revoked"' in r.text and state(r.text) == "revoked"
    when = re.search(r'<p class="when-line" id="verdict-when" data-time="(\d+)">(.*?)</p>', r.text, re.S)
    assert when is not None, r.text
    assert abs(int(when.group(1)) - REVOKED_AT) < 600  # the revoking block's time, not the time of the lookup
    assert "Revoked on May 17, 2031" in when.group(2)
    assert 'data-reason="leaked"' in when.group(2) and "Reason: codes leaked" in when.group(2)
    zh = client.get(f"/c/{serial(vw, 1)}", headers={"Accept-Language": "zh-CN"})
    assert "作废于 2031年5月17日" in zh.text and "原因：卡码泄露" in zh.text
    # The JSON answer keeps its fields (nothing renamed) and stays re-checkable.
    body = client.get(f"/v1/cards/{serial(vw, 1)}").json()
    assert body["verdict"] == "revoked" and body["reason"] == "card_revoked" and body["status"]["revoked"] is True
    assert body["proof"]["proof"] and body["batch"]["anchored_root"] == body["batch"]["root"]


def test_redeemed_page_says_when(client, vw):
    r = client.get(f"/c/{serial(vw, 2)}", headers={"Accept-Language": "es"})
    assert 'data-verdict="redeemed"' in r.text and state(r.text) == "redeemed"
    assert "Canjeada el 3 de septiembre de 2031" in r.text
    assert 'id="verdict-reason"' not in r.text  # a redemption has no reason


def test_batch_revocation_gives_its_date_and_reason(client, vw):
    r = client.get(f"/c/{serial(vw, 0, 'doomed')}", headers={"Accept-Language": "en"})
    assert 'data-verdict="revoked"' in r.text
    assert "Revoked on February 9, 2032" in r.text and "Reason: recalled" in r.text


def test_authentic_and_unknown_pages_name_no_act(client, vw):
    r = client.get(f"/c/{serial(vw, 5)}")
    assert 'data-verdict="authentic"' in r.text and state(r.text) == "authentic"
    assert 'id="verdict-when"' not in r.text
    unknown = client.get(f"/c/{format_serial(new_serial_value())}")
    assert unknown.status_code == 200 and state(unknown.text) == "unknown"
    bad = client.get("/c/not-a-serial")
    assert bad.status_code == 422 and state(bad.text) == "malformed"


def test_without_indexed_events_the_page_gives_no_date(vw):
    """A revoked card whose event the indexer has not stored yet: the verdict, without a date (never a wrong one)."""
    main = bytes.fromhex(vw.batches["main"].batch_id[2:])
    vw.registry.revoke_cards(main, [7], int(RevokeReason.FRAUD))  # after the indexer's pass
    with TestClient(vw.app(), base_url="http://testserver") as c:
        r = c.get(f"/c/{serial(vw, 7)}")
    assert 'data-verdict="revoked"' in r.text and 'id="verdict-when"' not in r.text


def test_test_network_banner(client, vw):
    assert vw.admin.chain_id not in production_chains()
    r = client.get(f"/c/{serial(vw, 5)}")
    banner = re.search(r'<div class="note testnet" id="testnet" role="note">(.*?)</div>', r.text)
    assert banner is not None and f"chain ID {vw.admin.chain_id}" in banner.group(1)
    assert "Test network" in banner.group(1)

    v = client.get(f"/v1/cards/{serial(vw, 5)}").json()
    assert is_test_network(31337) and not is_test_network(1) and not is_test_network(None)
    anvil = render_card({**v, "chain": {**v["chain"], "chain_id": 31337}}, "en", None).body.decode()
    assert 'id="testnet"' in anvil and "Test network (chain ID 31337)" in anvil
    mainnet = render_card({**v, "chain": {**v["chain"], "chain_id": 1},
                           "batch": {**v["batch"], "chain_id": 1}}, "en", None).body.decode()
    assert 'id="testnet"' not in mainnet and 'data-verdict="authentic"' in mainnet
    th = render_card({**v, "chain": {**v["chain"], "chain_id": 31337}}, "th", None).body.decode()
    assert "เครือข่ายทดสอบ" in th


def test_arabic_amount_is_isolated_left_to_right(client, vw):
    r = client.get(f"/c/{serial(vw, 5)}", headers={"Accept-Language": "ar"})
    assert '<html lang="ar" dir="rtl">' in r.text
    value = re.search(r'<dd class="big" id="face-value">(.*?)</dd>', r.text).group(1)
    assert value == '<bdi dir="ltr">25.00 USD</bdi>'
    assert "\u200f" not in value  # no right-to-left mark inside the amount
    assert translator("ar").money(2500, "USD") == "25.00 USD"
    en = client.get(f"/c/{serial(vw, 5)}", headers={"Accept-Language": "en"})
    assert '<dd class="big" id="face-value"><bdi dir="ltr">$25.00</bdi></dd>' in en.text
