"""POST /v1/cards/{serial}/redeem: API keys (stored hashed), signed requests, exactly-once under concurrency."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from eth_account import Account
from sqlalchemy import select

from issuer.core.serial import format_serial, new_serial_value
from issuer.revocation import RevokeReason, revoke_serials
from verify_api.auth import create_api_key, sign_request
from verify_api.models import ApiKey


@pytest.fixture(scope="module")
def api_key(world) -> str:
    with world.sessions.begin() as s:
        key, _row = create_api_key(s, world.issuer_client.address, "till 1")
    return key


@pytest.fixture(scope="module")
def foreign_key(world) -> str:
    with world.sessions.begin() as s:
        key, _row = create_api_key(s, "0x" + "34" * 20, "someone else")
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def signed(account, serial: str, code: str, **kw) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"code": code}).encode()
    headers = sign_request(account, "POST", f"/v1/cards/{serial}/redeem", body, **kw)
    return body, {**headers, "Content-Type": "application/json"}


def test_key_is_stored_hashed(world, api_key):
    secret = api_key.split("_", 2)[2]
    with world.sessions() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.key_id == api_key.split("_")[1])).one()
    assert secret.encode() not in row.key_hash and len(row.key_hash) == 32
    assert secret not in repr(row)


def test_redeem_with_api_key(api, world, api_key):
    serial, code = world.card()
    r = api.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(api_key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["serial"] == serial and body["tx_hash"].startswith("0x") and body["redeemed_by"].startswith("key:")
    after = api.get(f"/v1/cards/{serial}").json()
    assert after["verdict"] == "redeemed" and after["status"]["redeemed"] is True
    again = api.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(api_key))
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_redeemed"


def test_redeem_auth_failures(api, world, api_key, foreign_key):
    serial, code = world.card()
    path = f"/v1/cards/{serial}/redeem"
    r = api.post(path, json={"code": code})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert api.post(path, json={"code": code}, headers=bearer("cpk_nope")).status_code == 401
    forged = api_key[:-4] + ("AAAA" if not api_key.endswith("AAAA") else "BBBB")
    assert api.post(path, json={"code": code}, headers=bearer(forged)).status_code == 401
    r = api.post(path, json={"code": code}, headers=bearer(foreign_key))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = api.post(path, json={"code": "WRONG"}, headers=bearer(api_key))
    assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_code"
    r = api.post(f"/v1/cards/{format_serial(new_serial_value())}/redeem", json={"code": code},
                 headers=bearer(api_key))
    assert r.status_code == 404
    # Nothing above redeemed it.
    assert api.get(f"/v1/cards/{serial}").json()["verdict"] == "authentic"


def test_revoked_card_cannot_be_redeemed(api, world, api_key):
    serial, code = world.card()
    revoke_serials(world.sessions, world.registry, [serial], RevokeReason(2))
    r = api.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(api_key))
    assert r.status_code in (409, 410) and r.json()["error"]["code"] == "card_revoked"


def test_revoked_key_is_refused(api, world):
    from verify_api.auth import revoke_api_key

    with world.sessions.begin() as s:
        key, _ = create_api_key(s, world.issuer_client.address)
    with world.sessions.begin() as s:
        assert revoke_api_key(s, key)
    serial, code = world.card()
    assert api.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(key)).status_code == 401


def test_signed_requests(api, world):
    serial, code = world.card()
    issuer = world.issuer_client.account
    stranger = Account.create()
    body, headers = signed(stranger, serial, code)
    r = api.post(f"/v1/cards/{serial}/redeem", content=body, headers=headers)
    assert r.status_code == 403
    body, headers = signed(issuer, serial, code, timestamp=int(time.time()) - 3600)
    assert api.post(f"/v1/cards/{serial}/redeem", content=body, headers=headers).status_code == 401
    body, headers = signed(issuer, serial, code)
    tampered = json.dumps({"code": code + " "}).encode()
    assert api.post(f"/v1/cards/{serial}/redeem", content=tampered, headers=headers).status_code == 401
    ok = api.post(f"/v1/cards/{serial}/redeem", content=body, headers=headers)
    assert ok.status_code == 200, ok.text and ok.json()["redeemed_by"] == f"sig:{issuer.address}"
    replay = api.post(f"/v1/cards/{serial}/redeem", content=body, headers=headers)
    assert replay.status_code == 401 and "nonce" in replay.json()["error"]["message"]


def test_appointed_redeemer_may_sign(api, world):
    redeemer = Account.from_key(b"\x43" * 32)
    world.registry.set_redeemer(redeemer.address, True)
    serial, code = world.card()
    body, headers = signed(redeemer, serial, code)
    r = api.post(f"/v1/cards/{serial}/redeem", content=body, headers=headers)
    assert r.status_code == 200, r.text


def test_concurrent_redemptions_exactly_one_wins(live_server, world, api_key):
    serial, code = world.card()
    n = 8
    barrier = threading.Barrier(n)
    results: list[int] = []

    def go() -> None:
        with httpx.Client(base_url=live_server.url, timeout=60) as c:
            barrier.wait()
            r = c.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(api_key))
            results.append(r.status_code)

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [409] * (n - 1)
    assert world.registry.is_redeemed(bytes.fromhex(world.batches["main"].batch_id[2:]),
                                      [i for i, (s, _) in enumerate(world.batches["main"].cards) if s == serial][0])
