"""POST /v1/cards/{serial}/redeem on the supplier's service (``cardproof issuer serve``): API keys (stored
hashed), EIP-191 signed requests with single-use nonces, exactly-once redemption (also under concurrency,
on a live uvicorn), and JSON errors with stable codes, never a 500. On SQLite and PostgreSQL, on the
in-process chain and on anvil."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from eth_account import Account
from sqlalchemy import select

from chain.errors import ChainUnreachable
from issuer.core.serial import format_serial, new_serial_value
from issuer.revocation import RevokeReason, revoke_serials
from issuer.service.auth import revoke_api_key, sign_request
from issuer.storage import repository as repo
from issuer.storage.models import ApiKey
from tests.issuer.helpers import mint


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def signed(account, serial: str, code: str, **kw) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"code": code}).encode()
    headers = sign_request(account, "POST", f"/v1/cards/{serial}/redeem", body, **kw)
    return body, {**headers, "Content-Type": "application/json"}


def error(r: httpx.Response, status: int, code: str) -> dict:
    """The JSON error body of ``r``, checked: ``status`` and its stable ``code``."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]


def redeemed_by(world, serial: str) -> str | None:
    with world.sessions() as s:
        return repo.get_card_by_serial(s, serial).redeemed_by


def test_key_is_stored_hashed(world):
    key = world.api_key(label="till 1")
    key_id, secret = key.split("_")[1], key.split("_", 2)[2]
    with world.sessions() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).one()
    assert len(row.key_hash) == 32 and secret.encode() not in bytes(row.key_hash)
    assert secret not in repr(row) and row.issuer_address == world.issuer and row.label == "till 1"


def test_redeem_with_api_key_then_409_exactly_once(client, world):
    key = world.api_key()
    serial, code = world.card()
    r = client.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["serial"] == serial and body["batch_id"] == world.batch_id
    assert body["index"] == world.index_of(serial) and body["tx_hash"].startswith("0x")
    assert body["redeemed_by"] == f"key:{key.split('_')[1]}" and r.headers["cache-control"] == "no-store"
    assert world.is_redeemed_on_chain(serial) and redeemed_by(world, serial) == body["redeemed_by"]
    # The same request again, and the same card with another key: refused, nothing changes.
    error(client.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key)), 409,
          "already_redeemed")
    error(client.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(world.api_key())), 409,
          "already_redeemed")
    assert redeemed_by(world, serial) == body["redeemed_by"]
    with world.sessions() as s:
        assert s.scalars(select(ApiKey).where(ApiKey.key_id == key.split("_")[1])).one().last_used_at is not None


def test_authentication_failures(client, world):
    key, foreign = world.api_key(), world.api_key(issuer="0x" + "34" * 20)
    serial, code = world.card()
    path = f"/v1/cards/{serial}/redeem"
    e = error(client.post(path, json={"code": code}), 401, "unauthorized")
    assert "API key" in e["message"]
    assert client.post(path, json={"code": code}).headers["www-authenticate"].startswith("Bearer")
    error(client.post(path, json={"code": code}, headers=bearer("cpk_nope")), 401, "unauthorized")
    error(client.post(path, json={"code": code}, headers={"X-API-Key": "cpk_" + "0" * 16 + "_" + "A" * 43}), 401,
          "unauthorized")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    error(client.post(path, json={"code": code}, headers=bearer(forged)), 401, "unauthorized")
    error(client.post(path, json={"code": code}, headers=bearer(foreign)), 403, "forbidden")
    # Authentication comes first: a stranger learns nothing about serials or bodies.
    error(client.post("/v1/cards/not-a-serial/redeem", json={"extra": 1}), 401, "unauthorized")
    assert redeemed_by(world, serial) is None and not world.is_redeemed_on_chain(serial)
    assert client.post(path, json={"code": code}, headers=bearer(key)).status_code == 200


def test_revoked_key_is_refused(client, world):
    key = world.api_key()
    with world.sessions.begin() as s:
        assert revoke_api_key(s, key)
    with world.sessions.begin() as s:
        assert not revoke_api_key(s, key.split("_")[1])  # already revoked
    serial, code = world.card()
    error(client.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key)), 401, "unauthorized")
    assert redeemed_by(world, serial) is None


def test_signed_requests_and_replayed_nonce(client, world):
    serial, code = world.card()
    path = f"/v1/cards/{serial}/redeem"
    issuer = world.chain.accounts["issuer"]
    body, headers = signed(Account.create(), serial, code)
    error(client.post(path, content=body, headers=headers), 403, "forbidden")  # neither issuer nor redeemer
    body, headers = signed(issuer, serial, code, timestamp=int(time.time()) - 3600)
    error(client.post(path, content=body, headers=headers), 401, "unauthorized")
    body, headers = signed(issuer, serial, code)
    tampered = json.dumps({"code": code + " "}).encode()
    error(client.post(path, content=tampered, headers=headers), 401, "unauthorized")
    error(client.post(path, content=body, headers={**headers, "X-Cardproof-Signature": "0x" + "11" * 65}), 401,
          "unauthorized")
    error(client.post(path, content=body, headers={**headers, "X-Cardproof-Nonce": "short"}), 401, "unauthorized")
    ok = client.post(path, content=body, headers=headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["redeemed_by"] == f"sig:{issuer.address}" and world.is_redeemed_on_chain(serial)
    e = error(client.post(path, content=body, headers=headers), 401, "unauthorized")
    assert "nonce" in e["message"]
    # A nonce is single-use for its signer, whatever the request: another card, the same nonce.
    other, other_code = world.card()
    body2, headers2 = signed(issuer, other, other_code, nonce=headers["X-Cardproof-Nonce"])
    error(client.post(f"/v1/cards/{other}/redeem", content=body2, headers=headers2), 401, "unauthorized")
    assert redeemed_by(world, other) is None


def test_appointed_redeemer_may_sign(client, world):
    redeemer = world.chain.accounts["redeemer"]
    world.registry.set_redeemer(redeemer.address, True)
    serial, code = world.card()
    body, headers = signed(redeemer, serial, code)
    r = client.post(f"/v1/cards/{serial}/redeem", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["redeemed_by"] == f"sig:{redeemer.address}"


def test_wrong_code_is_refused_and_changes_nothing(client, world):
    key = world.api_key()
    serial, code = world.card()
    other_code = next(c for s, c, _i in world.cards if s != serial)
    for attempt in ("WRONG-CODE-1234", other_code, code + "X", " "):
        r = client.post(f"/v1/cards/{serial}/redeem", json={"code": attempt}, headers=bearer(key))
        e = error(r, 403, "wrong_code")  # a blank code too: it opens nothing
        assert e["message"] and code not in r.text and (attempt.strip() == "" or attempt not in r.text)
    assert redeemed_by(world, serial) is None and not world.is_redeemed_on_chain(serial)
    assert client.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key)).status_code == 200


def test_unknown_and_malformed_input(client, world):
    key = world.api_key()
    serial, code = world.card()
    h = bearer(key)
    error(client.post(f"/v1/cards/{format_serial(new_serial_value())}/redeem", json={"code": code}, headers=h),
          404, "card_not_found")
    for bad in ("not-a-serial", serial[:-1] + ("0" if serial[-1] != "0" else "1"), "0" * 64):
        error(client.post(f"/v1/cards/{bad}/redeem", json={"code": code}, headers=h), 422, "invalid_serial")
    error(client.post(f"/v1/cards/{'0' * 65}/redeem", json={"code": code}, headers=h), 422, "invalid_request")
    for payload in ({}, {"code": ""}, {"code": code, "extra": 1}, {"code": 5}, {"code": "x" * 257}):
        error(client.post(f"/v1/cards/{serial}/redeem", json=payload, headers=h), 422, "invalid_request")
    for raw in (b"\xff\xfe", b"{", b"[]"):
        r = client.post(f"/v1/cards/{serial}/redeem", content=raw, headers={**h, "Content-Type": "application/json"})
        error(r, 422, "invalid_request")
    error(client.get(f"/v1/cards/{serial}/redeem", headers=h), 405, "method_not_allowed")
    error(client.get("/v1/nothing-here"), 404, "not_found")
    assert redeemed_by(world, serial) is None
    # Lower case, spaces: the same card.
    r = client.post(f"/v1/cards/{serial.lower().replace('-', '')}/redeem", json={"code": code}, headers=h)
    assert r.status_code == 200 and r.json()["serial"] == serial


def test_revoked_card_and_unanchored_batch(client, world):
    key = world.api_key()
    serial, code = world.card()
    revoke_serials(world.sessions, world.registry, [serial], RevokeReason(2))
    error(client.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key)), 410, "card_revoked")
    pending = mint(world.sessions, world.master_key, world.issuer, count=2)
    from tests.issuer_service.conftest import minted_cards

    p_serial, p_code, _ = minted_cards(world.sessions, world.master_key, pending.batch_id)[0]
    error(client.post(f"/v1/cards/{p_serial}/redeem", json={"code": p_code}, headers=bearer(key)), 409,
          "invalid_batch_state")


def test_rate_limits(world):
    from starlette.testclient import TestClient

    key, other_key = world.api_key(), world.api_key()
    with TestClient(world.app(redeem_rate_serial="2/hour", redeem_rate="3/hour")) as c:
        serial, _code = world.card()
        for _ in range(2):
            error(c.post(f"/v1/cards/{serial}/redeem", json={"code": "GUESS"}, headers=bearer(key)), 403, "wrong_code")
        # Per card, whoever asks: guessing one card's code stops here.
        r = c.post(f"/v1/cards/{serial}/redeem", json={"code": "GUESS"}, headers=bearer(other_key))
        error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
        # Per key: three attempts, whatever the card; the fourth is refused.
        another, code = world.card()
        assert c.post(f"/v1/cards/{another}/redeem", json={"code": code}, headers=bearer(key)).status_code == 200
        third, code3 = world.card()
        error(c.post(f"/v1/cards/{third}/redeem", json={"code": code3}, headers=bearer(key)), 429, "rate_limited")
        assert redeemed_by(world, third) is None


def test_chain_down_is_503_and_leaves_the_card_free(world):
    from starlette.testclient import TestClient

    def unreachable():
        raise ChainUnreachable("the chain does not answer (test)")

    key = world.api_key()
    serial, code = world.card()
    with TestClient(world.app(registry=unreachable)) as c:
        error(c.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key)), 503, "chain_unreachable")
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "not_ready" and r.json()["database"] == "ok"
    assert redeemed_by(world, serial) is None
    with TestClient(world.app()) as c:
        assert c.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key)).status_code == 200


def test_health_readiness_openapi(client, world):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready" and r.json()["last_block"] >= 1
    spec = client.get("/openapi.json").json()
    assert {p for p in spec["paths"] if not p.startswith("/v1/erp/")} == {"/v1/cards/{serial}/redeem", "/healthz",
                                                                          "/readyz"}
    responses = spec["paths"]["/v1/cards/{serial}/redeem"]["post"]["responses"]
    assert {"200", "401", "403", "404", "409", "410", "422", "429"} <= set(responses)


def test_concurrent_redemptions_exactly_one_wins_on_live_uvicorn(live, world):
    key = world.api_key()
    serial, code = world.card()
    issuer = world.chain.accounts["issuer"]
    n = 8
    barrier = threading.Barrier(n)
    results: list[tuple[int, str]] = []  # (status, error code or the redeemer)

    def go(i: int) -> None:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            if i % 2:  # half by API key, half by signed requests (each its own nonce)
                body, headers = signed(issuer, serial, code)
                barrier.wait()
                r = c.post(f"/v1/cards/{serial}/redeem", content=body, headers=headers)
            else:
                barrier.wait()
                r = c.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key))
            body = r.json()
            results.append((r.status_code, body["redeemed_by"] if r.status_code == 200 else body["error"]["code"]))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(status for status, _ in results) == [200] + [409] * (n - 1), results
    assert {what for status, what in results if status == 409} <= {"already_redeemed", "redemption_pending"}
    winner = next(what for status, what in results if status == 200)
    assert world.is_redeemed_on_chain(serial)
    with httpx.Client(base_url=live.url, timeout=30) as c:
        assert c.get("/healthz").json() == {"status": "ok"} and c.get("/readyz").status_code == 200
        other, other_code = world.card()
        error(c.post(f"/v1/cards/{other}/redeem", json={"code": other_code}), 401, "unauthorized")
        error(c.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key)), 409,
              "already_redeemed")
    # A concurrent loser never takes the winner's in-flight "tx:" claim for one left by a crash (issuer.acts lease).
    assert redeemed_by(world, serial) == winner


def test_concurrent_redemptions_in_process(client, world, request):
    """Threads through the in-process app, several cards at once: each card redeemed exactly once."""
    # Concurrent sends of one account reach the node in nonce order (ChainClient holds its send lock from the
    # nonce to the broadcast): eth-tester, which mines each transaction as it arrives, refused them before.
    key = world.api_key()
    cards = [world.card() for _ in range(3)]
    per_card = 4
    barrier = threading.Barrier(len(cards) * per_card)
    results: dict[str, list[int | str]] = {s: [] for s, _ in cards}

    def go(serial: str, code: str) -> None:
        barrier.wait()
        try:
            r = client.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key))
        except Exception as exc:  # noqa: BLE001 - the TestClient re-raises a server error: record it
            results[serial].append(type(exc).__name__)
        else:
            results[serial].append(r.status_code)

    threads = [threading.Thread(target=go, args=card) for card in cards for _ in range(per_card)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for serial, _code in cards:
        assert sorted(results[serial]) == [200] + [409] * (per_card - 1), results
        assert world.is_redeemed_on_chain(serial)
