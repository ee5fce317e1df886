"""The public API, run against the ASGI app and against a real uvicorn server (fixture ``api``).

The public service holds no secret: codes are not checked here (the holder's page checks a code offline
against the leaf's commitment, and redemption is the supplier's service), and a card's status is the chain's."""

from __future__ import annotations

import re
import time

import pytest

from issuer.core.serial import format_serial, new_serial_value
from issuer.revocation import RevokeReason, revoke_serials

CARD_KEYS = {"serial", "verdict", "reason", "checked_at", "chain", "status", "issuer", "product", "batch", "proof",
             "fraud", "links"}


def shape(value):
    """The key structure of a JSON value (values dropped)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return None


def unknown_serial() -> str:
    return format_serial(new_serial_value())


def test_authentic_card_has_everything_to_recheck(api, world):
    serial, _ = world.card()
    r = api.get(f"/v1/cards/{serial}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == CARD_KEYS
    assert body["verdict"] == "authentic" and body["serial"] == serial
    assert body["issuer"] == {"address": world.issuer_client.address, "name": "Acme Gift Cards", "name_source": "chain",
                              "has_role": True}
    assert body["product"]["sku"] == "GC-MAIN" and body["product"]["face_value"] == 2500
    assert body["product"]["currency"] == "USD" and body["product"]["expiry"] == 0
    b = body["batch"]
    assert b["id"] == world.batches["main"].batch_id and b["card_count"] == 60
    assert b["anchored"] is True and b["anchored_root"] == b["root"]
    assert b["anchor_tx"].startswith("0x") and b["anchor_block"] > 0 and b["anchored_at"] > 0
    assert b["chain_id"] == world.admin.chain_id and b["registry"] == world.registry.address
    assert body["status"] == {"revoked": False, "redeemed": False, "source": "chain",
                              "block": body["chain"]["last_block"]}
    assert body["chain"]["state"] == "live"
    p = body["proof"]
    assert len(p["value"]) == 10 and p["leaf"]["batchId"] == b["id"] and p["proof"] and p["leaf_hash"]
    assert p["leaf"]["version"] == "2" and b["code_form"] in (0, 1) and p["leaf"]["codeForm"] == str(b["code_form"])
    assert "state" not in b
    assert body["links"]["anchor_tx"] == f"https://explorer.test/tx/{b['anchor_tx']}"


def test_serial_forms_are_accepted(api, world):
    serial, _ = world.card()
    for form in (serial.lower(), serial.replace("-", ""), " " + serial.replace("-", " ") + " "):
        r = api.get(f"/v1/cards/{form}")
        assert r.status_code == 200 and r.json()["serial"] == serial


@pytest.mark.parametrize("bad", ["x", "0000-0000-0000-0000-1", "ÄÄÄÄ-ÄÄÄÄ-ÄÄÄÄ-ÄÄÄÄ-Ä", "1" * 64, "%00", "..%2F"])
def test_malformed_serial_is_422_json(api, bad):
    r = api.get(f"/v1/cards/{bad}")
    assert r.status_code in (404, 422)
    assert r.json()["error"]["code"] in ("invalid_serial", "not_found", "invalid_request")
    assert set(r.json()["error"]) == {"code", "message"}


def test_too_long_serial_is_422(api):
    r = api.get("/v1/cards/" + "A" * 65)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_unknown_serial_same_shape_as_known(api, world):
    serial, _ = world.card()
    known = api.get(f"/v1/cards/{serial}")
    unknown = api.get(f"/v1/cards/{unknown_serial()}")
    assert unknown.status_code == known.status_code == 200
    assert unknown.headers["content-type"] == known.headers["content-type"]
    assert shape(unknown.json()) == shape(known.json())
    assert unknown.json()["verdict"] == "unknown" and unknown.json()["reason"] == "no_such_card"


def test_revoked_card(api, world):
    serial, _ = world.card()
    before = api.get(f"/v1/cards/{serial}").json()
    assert before["verdict"] == "authentic"
    revoke_serials(world.sessions, world.registry, [serial], RevokeReason(1))
    deadline = time.monotonic() + 5  # within the status cache's TTL (0.2 s here) plus a poll
    while (body := api.get(f"/v1/cards/{serial}").json())["verdict"] != "revoked":
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert body["status"] == {"revoked": True, "redeemed": False, "source": "chain",
                              "block": body["chain"]["last_block"]}


def test_unpublished_batch_is_unknown(api, world):
    # minted, not anchored, hence not published: the public side has never heard of its serials
    serial = world.batches["pending"].cards[0][0]
    known = api.get(f"/v1/cards/{world.batches['main'].cards[0][0]}").json()
    body = api.get(f"/v1/cards/{serial}").json()
    assert body["verdict"] == "unknown" and body["reason"] == "no_such_card"
    assert body["batch"]["id"] is None and body["batch"]["anchored"] is None
    assert shape(body) == shape(known)
    assert api.get(f"/v1/batches/{world.batches['pending'].batch_id}").status_code == 404


@pytest.mark.parametrize("path", ["/check", "/redeem"])
def test_no_code_check_or_redemption_here(api, world, path):
    serial, code = world.batches["main"].cards[0]
    r = api.post(f"/v1/cards/{serial}{path}", json={"code": code})
    assert r.status_code in (404, 405) and r.json()["error"]["code"] in ("not_found", "method_not_allowed")
    assert code not in r.text
    spec = api.get("/openapi.json").json()
    assert not any(p.endswith(("/check", "/redeem")) for p in spec["paths"])


def test_batch_and_issuer(api, world):
    main = world.batches["main"]
    b = api.get(f"/v1/batches/{main.batch_id}").json()
    assert b["batch_id"] == main.batch_id and "state" not in b and b["code_form"] in (0, 1)
    assert b["on_chain"]["anchored"] is True and b["on_chain"]["root_matches"] is True
    assert api.get(f"/v1/batches/0x{'00' * 32}").status_code == 404
    r = api.get("/v1/batches/nope")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_batch_id"
    i = api.get(f"/v1/issuers/{world.issuer_client.address.lower()}").json()
    assert i["address"] == world.issuer_client.address and i["name"] == "Acme Gift Cards"
    # published batches only: "pending" was never anchored, so never published
    assert i["batches"] >= 1 and i["cards"] >= 60 and i["on_chain"]["has_role"] is True
    assert i["name_source"] == "chain"
    assert i["on_chain"]["revoked_cards"] is not None
    assert api.get(f"/v1/issuers/0x{'12' * 20}").status_code == 404
    assert api.get("/v1/issuers/0xnothex").json()["error"]["code"] == "invalid_address"


def test_issuer_counts_follow_the_chain(api, world):
    before = api.get(f"/v1/issuers/{world.issuer_client.address}").json()["on_chain"]["revoked_cards"]
    serial, _ = world.card()
    revoke_serials(world.sessions, world.registry, [serial], RevokeReason(3))
    import verify_api.routes.issuers as issuers

    issuers._cache.clear()
    after = api.get(f"/v1/issuers/{world.issuer_client.address}").json()
    assert after["on_chain"]["revoked_cards"] == before + 1
    assert after["revoked_cards"] == after["on_chain"]["revoked_cards"]  # no count of its own on the public side


def test_health_ready_metrics_openapi(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    m = api.get("/metrics")
    assert m.status_code == 200 and "cardproof_api_requests_total" in m.text and "cardproof_api_chain_state" in m.text
    spec = api.get("/openapi.json").json()
    assert "/v1/cards/{serial}" in spec["paths"] and "/c/{serial}" in spec["paths"]
    assert api.get("/docs").status_code == 200


def test_unknown_route_and_method_are_json(api):
    r = api.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.delete("/v1/cards/0000")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_page_renders_in_languages(api, world):
    serial, _ = world.card()
    en = api.get(f"/c/{serial}")
    assert en.status_code == 200 and en.headers["content-type"].startswith("text/html")
    assert 'lang="en"' in en.text and "Authentic" in en.text and "Acme Gift Cards" in en.text
    assert "https://explorer.test/tx/0x" in en.text and "$25.00" in en.text
    # the only script is the page's own code check module, from this origin: nothing inline
    scripts = re.findall(r"<script\b[^>]*>", en.text)
    assert all(re.search(r'src="/static/[^"]+"', tag) for tag in scripts), scripts
    assert all(m == "" for m in re.findall(r"<script\b[^>]*>(.*?)</script>", en.text, re.S))
    ar = api.get(f"/c/{serial}", headers={"Accept-Language": "ar-EG,ar;q=0.9,en;q=0.5"})
    assert 'dir="rtl"' in ar.text and 'lang="ar"' in ar.text and "أصلية" in ar.text
    zh = api.get(f"/c/{serial}", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert "正品" in zh.text
    fr = api.get(f"/c/{serial}", headers={"Accept-Language": "fr-FR"})
    assert 'lang="en"' in fr.text
    bad = api.get("/c/not-a-serial")
    assert bad.status_code == 422 and "text/html" in bad.headers["content-type"]
    unknown = api.get(f"/c/{unknown_serial()}", headers={"Accept-Language": "es"})
    assert unknown.status_code == 200 and "No reconocida" in unknown.text
