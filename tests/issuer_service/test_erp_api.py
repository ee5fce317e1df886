"""The supplier's ERP API (``/v1/erp/*``): ERP keys, stock, mint jobs with progress (minted and anchored in the
background), orders from the node's table, revocations, idempotency keys, OpenAPI, and no 500 on bad input."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
from sqlalchemy import func, select

from issuer import idempotency
from issuer.service.auth import create_api_key
from issuer.storage import repository as repo
from issuer.storage.models import Batch, IdempotencyKey, MintJob, NodeOrder, SealedDelivery

ESCROW = "0x" + "e5" * 20
BUYER = "0x" + "b0" * 20


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def erp_key(world, issuer: str | None = None) -> str:
    with world.sessions.begin() as s:
        key, _row = create_api_key(s, issuer or world.issuer, "erp", role="erp")
    return key


def error(r, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]


def add_order(world, order_id: int, state: str = "delivered", ranges: list | None = None, *, sealed: bool = False,
              batch_id: str | None = None) -> None:
    batch_id = batch_id or world.batch_id
    with world.sessions.begin() as s:
        s.add(NodeOrder(chain_id=1337, escrow=ESCROW, order_id=str(order_id), buyer=BUYER, product_id=7,
                        min_expiry=0, quantity=sum(n for _s, n in ranges or []) or 1, delivery_deadline=2_000_000_000,
                        opened_block=5, state=state, batch_id=batch_id if ranges else None,
                        ranges=json.dumps(ranges) if ranges else None,
                        deliver_tx=("0x" + "d1" * 32) if state in ("delivered", "published") else None))
        if sealed:
            s.add(SealedDelivery(chain_id=1337, escrow=ESCROW, order_id=str(order_id), batch_id=batch_id,
                                 ranges=json.dumps(ranges), sealed_hash="0x" + "5e" * 32, blob=b"ciphertext"))


# --------------------------------------------------------------------------- auth


def test_erp_routes_need_an_erp_key(client, world):
    error(client.get("/v1/erp/stock"), 401, "unauthorized")
    error(client.get("/v1/erp/stock", headers=bearer("cpk_0000000000000000_" + "x" * 43)), 401, "unauthorized")
    redeemer = world.api_key()
    for method, path in [("GET", "/v1/erp/stock"), ("GET", "/v1/erp/orders"), ("GET", "/v1/erp/mint-jobs/1"),
                         ("GET", "/v1/erp/webhooks"), ("POST", "/v1/erp/webhooks/1/replay")]:
        error(client.request(method, path, headers=bearer(redeemer)), 403, "forbidden")
    error(client.post("/v1/erp/mint-jobs", json={"sku": "X", "face_value": "1.00", "currency": "USD", "count": 1},
                      headers={**bearer(redeemer), "Idempotency-Key": "k1"}), 403, "forbidden")
    # And an ERP key redeems nothing.
    serial, code = world.card()
    error(client.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers=bearer(erp_key(world))), 403,
          "forbidden")
    assert client.get("/v1/erp/stock", headers=bearer(erp_key(world))).status_code == 200


def test_an_unknown_role_is_refused(world):
    with world.sessions.begin() as s, pytest.raises(ValueError):
        create_api_key(s, world.issuer, "x", role="admin")


# --------------------------------------------------------------------------- stock


def test_stock_counts_available_cards(client, world, monkeypatch):
    key = erp_key(world)
    r = client.get("/v1/erp/stock", headers=bearer(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["low_stock_threshold"] == 100 and body["issuer"] == world.issuer
    [p] = body["products"]
    assert p["sku"] == "GC-20-USD" and p["face_value"] == {"amount": "20.00", "minor": 2000, "currency": "USD"}
    assert p["available"] == 12 and p["low"] is True and p["expired"] is False and p["pending"] == 0
    assert [b["batch_id"] for b in p["batches"]] == [world.batch_id]

    # Cards 0-2 delivered for one order (node_orders), 3-4 sealed for another (sealed_deliveries), 4-5 picked by a
    # third (overlapping): 6 cards taken.
    add_order(world, 1, "published", [[0, 3]], sealed=True)
    add_order(world, 2, "picked", [[3, 2]], sealed=True)
    add_order(world, 3, "picked", [[4, 2]])
    add_order(world, 4, "seen")
    # A redeemed card outside the ranges, a revoked one outside, a redeemed one inside: 2 fewer.
    cards = sorted(world.cards, key=lambda c: c[2])
    with world.sessions.begin() as s:
        batch = repo.get_batch(s, world.batch_id)
        c6 = repo.get_card_by_serial(s, cards[6][0])
        c1 = repo.get_card_by_serial(s, cards[1][0])
        repo.mark_card_redeemed(s, c6.id, "key:x")
        repo.mark_card_redeemed(s, c1.id, "key:x")
        repo.mark_cards_revoked(s, batch.id, [7], 1)
    # A minted batch not anchored yet is pending, not available.
    from tests.issuer.helpers import mint

    mint(world.sessions, world.master_key, world.issuer, count=3)
    monkeypatch.setenv("CARDPROOF_NODE_LOW_STOCK", "4")
    [p] = client.get("/v1/erp/stock", headers=bearer(key)).json()["products"]
    assert p["available"] == 12 - 6 - 2 and p["pending"] == 3 and p["low"] is False
    assert p["batches"] == [{"batch_id": world.batch_id, "card_count": 12, "available": 4,
                             "anchored_at": p["batches"][0]["anchored_at"]}]
    # Another issuer's key sees none of it.
    assert client.get("/v1/erp/stock", headers=bearer(erp_key(world, "0x" + "34" * 20))).json()["products"] == []


# --------------------------------------------------------------------------- mint jobs


def wait_job(client, key: str, job_id: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    seen = set()
    while time.monotonic() < deadline:
        job = client.get(f"/v1/erp/mint-jobs/{job_id}", headers=bearer(key)).json()
        seen.add(job["state"])
        if job["state"] in ("done", "failed"):
            job["_seen"] = seen
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished: {job}")


MINT = {"sku": "GC-50-EUR", "face_value": "50.00", "currency": "EUR", "count": 5, "expires": "2031-12-31",
        "anchor": True}


def test_mint_job_runs_to_done_and_anchors(client, world):
    key = erp_key(world)
    r = client.post("/v1/erp/mint-jobs", json=MINT, headers={**bearer(key), "Idempotency-Key": "mint-1"})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] in ("queued", "minting", "anchoring", "done") and job["progress"]["total"] == 5
    done = wait_job(client, key, job["id"])
    assert done["state"] == "done", done
    assert done["progress"] == {"done": 5, "total": 5} and done["error"] is None
    batch_id = done["batch_id"]
    with world.sessions() as s:
        batch = repo.get_batch(s, batch_id)
        assert batch.state == "anchored" and batch.card_count == 5 and batch.sku == "GC-50-EUR"
    assert world.registry.batch(bytes.fromhex(batch_id[2:])).anchored
    # The same key and body: the same job (200), as it is now; nothing minted twice.
    again = client.post("/v1/erp/mint-jobs", json=dict(reversed(list(MINT.items()))),
                        headers={**bearer(key), "Idempotency-Key": "mint-1"})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == job["id"] and again.json()["state"] == "done"
    # The same key, another body: 422 idempotency_conflict.
    error(client.post("/v1/erp/mint-jobs", json={**MINT, "count": 6},
                      headers={**bearer(key), "Idempotency-Key": "mint-1"}), 422, "idempotency_conflict")
    with world.sessions() as s:
        assert s.scalar(select(func.count()).select_from(MintJob)) == 1
        assert s.scalar(select(func.count()).select_from(Batch).where(Batch.sku == "GC-50-EUR")) == 1
    # Its cards are stock now.
    products = client.get("/v1/erp/stock", headers=bearer(key)).json()["products"]
    assert {p["sku"]: p["available"] for p in products}["GC-50-EUR"] == 5


def test_mint_job_failure_is_recorded(client, world):
    """A job whose anchoring the chain refuses (another issuer's key: the service's account is not it) fails."""
    key = erp_key(world, "0x" + "34" * 20)
    r = client.post("/v1/erp/mint-jobs", json={**MINT, "count": 2}, headers={**bearer(key), "Idempotency-Key": "f"})
    assert r.status_code == 201, r.text
    job = wait_job(client, key, r.json()["id"])
    assert job["state"] == "failed" and job["error"] and job["batch_id"]
    # Another issuer's key does not see it.
    error(client.get(f"/v1/erp/mint-jobs/{job['id']}", headers=bearer(erp_key(world))), 404, "mint_job_not_found")


def test_concurrent_duplicates_make_one_job(client, world):
    key = erp_key(world)
    answers: list = []

    def post() -> None:
        answers.append(client.post("/v1/erp/mint-jobs", json={**MINT, "anchor": False, "count": 1},
                                   headers={**bearer(key), "Idempotency-Key": "same"}))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    with world.sessions() as s:
        assert s.scalar(select(func.count()).select_from(MintJob)) == 1
        assert s.scalar(select(func.count()).select_from(IdempotencyKey)) == 1
    assert wait_job(client, key, answers[0].json()["id"])["state"] == "done"


def test_idempotency_keys_expire_after_24_hours(client, world):
    key = erp_key(world)
    body = {**MINT, "anchor": False, "count": 1}
    first = client.post("/v1/erp/mint-jobs", json=body, headers={**bearer(key), "Idempotency-Key": "old"}).json()
    with world.sessions.begin() as s:
        row = s.scalars(select(IdempotencyKey)).one()
        row.created_at = dt.datetime.now(dt.UTC) - idempotency.TTL - dt.timedelta(seconds=1)
    r = client.post("/v1/erp/mint-jobs", json=body, headers={**bearer(key), "Idempotency-Key": "old"})
    assert r.status_code == 201 and r.json()["id"] != first["id"]
    with world.sessions.begin() as s:
        s.scalars(select(IdempotencyKey)).one().created_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    assert idempotency.purge_expired(world.sessions) == 1


def test_mint_job_needs_an_idempotency_key_and_a_valid_body(client, world):
    key = erp_key(world)
    error(client.post("/v1/erp/mint-jobs", json=MINT, headers=bearer(key)), 422, "invalid_idempotency_key")
    error(client.post("/v1/erp/mint-jobs", json=MINT, headers={**bearer(key), "Idempotency-Key": "a b"}), 422,
          "invalid_idempotency_key")
    h = {**bearer(key), "Idempotency-Key": "bad"}
    for bad in [{}, {**MINT, "count": 0}, {**MINT, "count": "many"}, {**MINT, "face_value": "-1"},
                {**MINT, "extra": 1}, [1, 2], "text", {**MINT, "currency": "EURO"}]:
        error(client.post("/v1/erp/mint-jobs", json=bad, headers=h), 422, "invalid_request")
    error(client.post("/v1/erp/mint-jobs", content=b"{not json", headers={**h, "Content-Type": "application/json"}),
          422, "invalid_request")
    # Valid JSON, refused by the product rules: 422 with their code (and stored under the key).
    r = client.post("/v1/erp/mint-jobs", json={**MINT, "currency": "XYZ"}, headers={**bearer(key),
                                                                                    "Idempotency-Key": "cur"})
    assert r.status_code == 422 and r.json()["error"]["code"] != "internal", r.text
    r = client.post("/v1/erp/mint-jobs", json={**MINT, "face_value": "50.001"},
                    headers={**bearer(key), "Idempotency-Key": "fv"})
    assert r.status_code == 422, r.text
    for path in ["/v1/erp/mint-jobs/0", "/v1/erp/mint-jobs/abc", "/v1/erp/mint-jobs/99999999999999999999999"]:
        assert client.get(path, headers=bearer(key)).status_code == 422
    error(client.get("/v1/erp/mint-jobs/424242", headers=bearer(key)), 404, "mint_job_not_found")


# --------------------------------------------------------------------------- orders


def test_orders_list_and_detail(client, world):
    key = erp_key(world)
    add_order(world, 11, "published", [[0, 2]], sealed=True)
    add_order(world, 12, "out_of_stock")
    add_order(world, 13, "failed")
    add_order(world, 14, "delivered", [[2, 1]])
    r = client.get("/v1/erp/orders", headers=bearer(key))
    assert r.status_code == 200, r.text
    orders = r.json()["orders"]
    assert [o["order_id"] for o in orders] == ["11", "12", "13", "14"] and r.json()["next_after"] is None
    first = orders[0]
    assert first["state"] == "published" and first["ranges"] == [[0, 2]] and first["sealed_hash"] == "0x" + "5e" * 32
    assert first["batch_id"] == world.batch_id and first["deliver_tx"] == "0x" + "d1" * 32
    assert orders[1]["sealed_hash"] is None and orders[1]["ranges"] is None
    assert [o["order_id"] for o in client.get("/v1/erp/orders?state=failed", headers=bearer(key)).json()["orders"]] \
        == ["13"]
    page = client.get("/v1/erp/orders?limit=3", headers=bearer(key)).json()
    assert len(page["orders"]) == 3 and page["next_after"] is not None
    rest = client.get(f"/v1/erp/orders?limit=3&after={page['next_after']}", headers=bearer(key)).json()
    assert [o["order_id"] for o in rest["orders"]] == ["14"] and rest["next_after"] is None
    one = client.get("/v1/erp/orders/11", headers=bearer(key))
    assert one.status_code == 200 and one.json() == first
    assert client.get(f"/v1/erp/orders/11?escrow={ESCROW}", headers=bearer(key)).json() == first
    error(client.get("/v1/erp/orders/99", headers=bearer(key)), 404, "order_not_found")
    for bad in ["/v1/erp/orders/abc", "/v1/erp/orders?state=lost", "/v1/erp/orders?limit=0",
                "/v1/erp/orders?limit=x", "/v1/erp/orders?after=-1", "/v1/erp/orders/11?escrow=nope"]:
        error(client.get(bad, headers=bearer(key)), 422, "invalid_request")
    # A mixed-case escrow address with a wrong EIP-55 checksum (a typo) is refused, not read as another escrow.
    from web3 import Web3

    good = Web3.to_checksum_address("0x" + "ab" * 20)
    typo = good[:2] + good[2:].swapcase() if good[2:].swapcase() != good[2:] else good
    error(client.get(f"/v1/erp/orders/11?escrow={typo}", headers=bearer(key)), 422, "invalid_address")
    assert client.get(f"/v1/erp/orders/11?escrow={good.lower()}", headers=bearer(key)).status_code == 404


# --------------------------------------------------------------------------- revocations


def test_revocation_by_serials_with_idempotency(client, world):
    key = erp_key(world)
    (s1, _), (s2, _) = world.card(), world.card()
    h = {**bearer(key), "Idempotency-Key": "rev-1"}
    r = client.post("/v1/erp/revocations", json={"serials": [s1, s2], "reason": "leaked"}, headers=h)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["revoked"] == 2 and body["results"][0]["batch_id"] == world.batch_id
    assert body["results"][0]["reason"] == 1 and body["results"][0]["tx_hash"].startswith("0x")
    bid = bytes.fromhex(world.batch_id[2:])
    assert world.registry.is_revoked(bid, world.index_of(s1)) and world.registry.is_revoked(bid, world.index_of(s2))
    again = client.post("/v1/erp/revocations", json={"reason": "leaked", "serials": [s1, s2]}, headers=h)
    assert again.status_code == 200 and again.json() == body and again.headers["idempotent-replayed"] == "true"
    error(client.post("/v1/erp/revocations", json={"serials": [s1], "reason": "leaked"}, headers=h), 422,
          "idempotency_conflict")
    # A new key for revoked cards: 410, stored under the key too.
    h2 = {**bearer(key), "Idempotency-Key": "rev-2"}
    error(client.post("/v1/erp/revocations", json={"serials": [s1], "reason": "fraud"}, headers=h2), 410,
          "card_revoked")
    error(client.post("/v1/erp/revocations", json={"serials": [s1], "reason": "fraud"}, headers=h2), 410,
          "card_revoked")


def test_revocation_of_a_batch(client, world):
    key = erp_key(world)
    s1, _ = world.card()
    assert client.post("/v1/erp/revocations", json={"serials": [s1], "reason": 3},
                       headers={**bearer(key), "Idempotency-Key": "one"}).status_code == 201
    r = client.post("/v1/erp/revocations", json={"batch_id": world.batch_id, "reason": "recalled"},
                    headers={**bearer(key), "Idempotency-Key": "batch"})
    assert r.status_code == 201, r.text
    assert r.json()["revoked"] == 11
    bid = bytes.fromhex(world.batch_id[2:])
    assert all(world.registry.is_revoked(bid, i) for _s, _c, i in world.cards)
    [p] = client.get("/v1/erp/stock", headers=bearer(key)).json()["products"]
    assert p["available"] == 0


def test_revocation_refuses_bad_input(client, world):
    key = erp_key(world)
    h = {**bearer(key), "Idempotency-Key": "bad"}
    s1, _ = world.card()
    for bad in [{}, {"reason": "leaked"}, {"serials": [s1], "batch_id": world.batch_id, "reason": "leaked"},
                {"serials": [], "reason": "leaked"}, {"serials": [s1]}, {"serials": "x", "reason": "leaked"},
                {"batch_id": "0x12", "reason": "leaked"}, {"serials": [1], "reason": "leaked"}]:
        error(client.post("/v1/erp/revocations", json=bad, headers=h), 422, "invalid_request")
    error(client.post("/v1/erp/revocations", json={"serials": [s1], "reason": "bored"},
                      headers={**bearer(key), "Idempotency-Key": "r1"}), 422, "invalid_reason")
    error(client.post("/v1/erp/revocations", json={"serials": ["nope"], "reason": "leaked"},
                      headers={**bearer(key), "Idempotency-Key": "r2"}), 422, "invalid_serial")
    error(client.post("/v1/erp/revocations", json={"batch_id": "0x" + "00" * 32, "reason": "leaked"},
                      headers={**bearer(key), "Idempotency-Key": "r3"}), 404, "batch_not_found")
    other = erp_key(world, "0x" + "34" * 20)
    error(client.post("/v1/erp/revocations", json={"serials": [s1], "reason": "leaked"},
                      headers={**bearer(other), "Idempotency-Key": "r4"}), 403, "forbidden")
    assert not world.registry.is_revoked(bytes.fromhex(world.batch_id[2:]), world.index_of(s1))


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_lists_the_erp_routes(client):
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path, method in [("/v1/erp/stock", "get"), ("/v1/erp/mint-jobs", "post"), ("/v1/erp/mint-jobs/{job_id}", "get"),
                         ("/v1/erp/orders", "get"), ("/v1/erp/orders/{order_id}", "get"),
                         ("/v1/erp/revocations", "post"), ("/v1/erp/webhooks", "get"),
                         ("/v1/erp/webhooks/{delivery_id}/replay", "post")]:
        op = paths[path][method]
        assert "200" in op["responses"] or "201" in op["responses"], (path, op["responses"])
        assert {"401", "403", "422"} <= set(op["responses"]), (path, op["responses"])
    post = paths["/v1/erp/mint-jobs"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in post["parameters"])
    assert post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/MintJobOut")
    assert {"StockOut", "MintJobOut", "OrderList", "RevocationOut", "WebhookDeliveryList"} <= set(
        doc["components"]["schemas"])
