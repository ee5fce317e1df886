"""Webhooks of the supplier's service (``issuer.webhooks``): signed deliveries to a local receiver, retries with
backoff, dead deliveries replayed through the ERP API, configuration from the environment or the node's file, and
payloads that never carry a code or a secret."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from issuer import webhooks
from issuer.service.app import create_app
from issuer.service.auth import create_api_key
from issuer.storage.models import WebhookDelivery, WebhookEvent
from issuer.webhooks import UnsafePayload, WebhookConfig, WebhookSender, backoff, emit, sign, verify_signature
from tests.issuer_service.conftest import TestClient

SECRET = "whsec_test_0123456789"


class Receiver:
    """A tiny HTTP receiver: records each request; answers the scripted statuses, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.requests.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                           "body": body, "at": time.monotonic()})
                    status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, n: int, timeout: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.requests)} requests, expected {n}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def erp_key(world) -> str:
    with world.sessions.begin() as s:
        key, _row = create_api_key(s, world.issuer, "erp", role="erp")
    return key


def app_with_webhooks(world, url: str, **sender):
    deps = world.deps()
    deps.webhooks = WebhookConfig((url,), SECRET)
    deps.webhook_sender = {"base_delay": 0.05, "poll": 0.05, **sender}
    deps.mint_jobs = False
    return create_app(world.settings, deps=deps), deps


def delivery(world, delivery_id: int) -> WebhookDelivery:
    with world.sessions() as s:
        d = s.get(WebhookDelivery, delivery_id)
        s.expunge(d)
        return d


def wait_state(world, delivery_id: int, state: str, timeout: float = 20) -> WebhookDelivery:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = delivery(world, delivery_id)
        if d.state == state:
            return d
        time.sleep(0.02)
    raise AssertionError(f"delivery {delivery_id} is {d.state}, not {state}")


def test_signed_event_reaches_the_receiver(world, receiver):
    app, deps = app_with_webhooks(world, receiver.url)
    with TestClient(app):  # the lifespan starts the sender (as `cardproof issuer serve` does)
        event_id = deps.emit("order.delivered", {"order_id": "12", "escrow": "0x" + "e5" * 20, "quantity": 2,
                                                 "batch_id": world.batch_id, "ranges": [[0, 2]]})
        [req] = receiver.wait(1)
    h, body = req["headers"], req["body"]
    assert h["x-cardproof-event"] == "order.delivered" and h["content-type"] == "application/json"
    payload = json.loads(body)
    assert payload["id"] == event_id and payload["kind"] == "order.delivered" and payload["created_at"]
    assert payload["data"] == {"order_id": "12", "escrow": "0x" + "e5" * 20, "quantity": 2,
                               "batch_id": world.batch_id, "ranges": [[0, 2]]}
    ts = h["x-cardproof-timestamp"]
    assert abs(int(ts) - time.time()) < 60
    assert h["x-cardproof-signature"] == sign(SECRET, ts, body)
    assert verify_signature(SECRET, ts, body, h["x-cardproof-signature"])
    # Tampered with, or signed with another secret, or too old: refused.
    assert not verify_signature(SECRET, ts, body.replace(b'"12"', b'"13"'), h["x-cardproof-signature"])
    assert not verify_signature("other", ts, body, h["x-cardproof-signature"])
    assert not verify_signature(SECRET, int(ts) + 1, body, h["x-cardproof-signature"])
    assert not verify_signature(SECRET, ts, body, h["x-cardproof-signature"], now=int(ts) + 301)
    assert not verify_signature(SECRET, "soon", body, h["x-cardproof-signature"])
    assert not verify_signature(SECRET, ts, body, None)
    d = wait_state(world, int(h["x-cardproof-delivery"]), "delivered")
    assert d.attempts == 1 and d.last_status == 200 and d.delivered_at is not None
    # Nothing secret in the stored event.
    with world.sessions() as s:
        ev = s.scalars(select(WebhookEvent).where(WebhookEvent.event_id == event_id)).one()
        assert SECRET not in ev.payload


def test_failing_receiver_gets_it_on_the_third_attempt(world):
    with Receiver([500, 503]) as receiver:
        app, deps = app_with_webhooks(world, receiver.url, base_delay=0.2)
        with TestClient(app):
            deps.emit("order.published", {"order_id": "7"})
            reqs = receiver.wait(3)
            did = int(reqs[0]["headers"]["x-cardproof-delivery"])
            d = wait_state(world, did, "delivered")
    assert len(reqs) == 3 and d.attempts == 3 and d.last_error is None
    assert len({r["body"] for r in reqs}) == 1  # the same event each time
    # Backoff: 0.2 s, then 0.4 s.
    assert reqs[1]["at"] - reqs[0]["at"] >= 0.18 and reqs[2]["at"] - reqs[1]["at"] >= 0.38


def test_dead_delivery_is_listed_and_replayed(world):
    with Receiver([500, 500]) as receiver:
        app, deps = app_with_webhooks(world, receiver.url, max_attempts=2)
        key = {"Authorization": f"Bearer {erp_key(world)}"}
        with TestClient(app) as client:
            deps.emit("order.failed", {"order_id": "9", "error": "the buyer's seal key is malformed"})
            receiver.wait(2)
            did = int(receiver.requests[0]["headers"]["x-cardproof-delivery"])
            d = wait_state(world, did, "dead")
            assert d.attempts == 2 and d.last_status == 500 and d.last_error == "HTTP 500"
            listed = client.get("/v1/erp/webhooks?state=failed", headers=key).json()["deliveries"]
            assert [x["id"] for x in listed] == [did] and listed[0]["state"] == "dead"
            assert listed[0]["kind"] == "order.failed" and listed[0]["next_attempt_at"] is None
            assert client.get("/v1/erp/webhooks?state=delivered", headers=key).json()["deliveries"] == []
            r = client.post(f"/v1/erp/webhooks/{did}/replay", headers=key)
            assert r.status_code == 200 and r.json()["state"] == "pending" and r.json()["attempts"] == 0
            reqs = receiver.wait(3)
            assert reqs[2]["body"] == reqs[0]["body"]
            d = wait_state(world, did, "delivered")
            assert client.get("/v1/erp/webhooks?state=failed", headers=key).json()["deliveries"] == []
            assert client.post("/v1/erp/webhooks/424242/replay", headers=key).status_code == 404
            assert client.get("/v1/erp/webhooks?state=lost", headers=key).status_code == 422


def test_unreachable_receiver_is_retried(world):
    """A refused connection is a failed attempt like a 500."""
    app, deps = app_with_webhooks(world, "http://127.0.0.1:9/nothing", max_attempts=2)
    with TestClient(app):
        deps.emit("stock.low", {"sku": "GC-20-USD", "available": 3})
        with world.sessions() as s:
            did = s.scalars(select(WebhookDelivery.id)).one()
        d = wait_state(world, did, "dead")
    assert d.last_status is None and d.last_error and d.attempts == 2


def test_emit_refuses_codes_and_secrets(world):
    cfg = WebhookConfig(("http://127.0.0.1:9/",), SECRET)
    for bad in [{"code": "ABCD"}, {"cards": [{"serial": "X", "codes": ["y"]}]}, {"secret": "s"},
                {"order": {"seal_key": "k"}}]:
        with pytest.raises(UnsafePayload):
            emit(world.sessions, "order.delivered", bad, config=cfg)
    with world.sessions() as s:
        assert s.scalars(select(WebhookEvent)).all() == []
    # In the caller's transaction: nothing until it commits; one delivery per URL.
    two = WebhookConfig(("http://a.example/", "https://b.example/h"), SECRET)
    with world.sessions.begin() as s:
        emit(s, "order.out_of_stock", {"order_id": "3"}, config=two)
    with world.sessions() as s:
        assert sorted(d.url for d in s.scalars(select(WebhookDelivery))) == ["http://a.example/",
                                                                              "https://b.example/h"]


def test_hook_for_the_node(world):
    """The node's on_event(kind, payload) stores webhook events (issuer.node.events calls it)."""
    on_event = webhooks.hook(world.sessions, WebhookConfig(("https://erp.example/h",), SECRET))
    event_id = on_event("order.out_of_stock", {"order_id": 5, "product_id": 7, "quantity": 3})
    with world.sessions() as s:
        ev = s.scalars(select(WebhookEvent)).one()
        assert ev.event_id == event_id and ev.kind == "order.out_of_stock"
        assert json.loads(ev.payload) == {"order_id": 5, "product_id": 7, "quantity": 3}
        assert [d.url for d in s.scalars(select(WebhookDelivery))] == ["https://erp.example/h"]


def test_configuration_from_environment_or_node_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CARDPROOF_NODE_LOW_STOCK", raising=False)
    monkeypatch.delenv("CARDPROOF_NODE_CONFIG", raising=False)
    f = tmp_path / "node.toml"
    f.write_text('[webhooks]\nurls = ["https://erp.example/a", "http://erp.local/b"]\nsecret = "file-secret"\n')
    cfg = WebhookConfig.load({"CARDPROOF_NODE_CONFIG": str(f)})
    assert cfg.urls == ("https://erp.example/a", "http://erp.local/b") and cfg.secret == "file-secret"
    assert "file-secret" not in repr(cfg)
    env = WebhookConfig.load({"CARDPROOF_NODE_CONFIG": str(f), "CARDPROOF_WEBHOOK_URLS": "https://x.example/1, ",
                              "CARDPROOF_WEBHOOK_SECRET": "env-secret"})
    assert env.urls == ("https://x.example/1",) and env.secret == "env-secret"
    assert WebhookConfig.load({}) == WebhookConfig()
    # The node's default file, $CARDPROOF_HOME/node.toml, when no other is named.
    (tmp_path / "node.toml").write_text('low_stock = 5\n[webhooks]\nurls = "https://h.example/w"\nsecret = "s"\n')
    assert WebhookConfig.load({}, home=tmp_path) == WebhookConfig(("https://h.example/w",), "s")
    from issuer.service.erp import low_stock_threshold

    assert low_stock_threshold(tmp_path) == 5
    with pytest.raises(ValueError):
        WebhookConfig.load({"CARDPROOF_WEBHOOK_URLS": "ftp://x"})


def test_no_secret_sends_nothing(world, receiver):
    sender = WebhookSender(world.sessions, WebhookConfig((receiver.url,), None))
    emit(world.sessions, "order.delivered", {"order_id": "1"}, config=sender.config)
    assert sender.run_once() == 0 and receiver.requests == []


def test_backoff_doubles_up_to_an_hour():
    assert [backoff(n) for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert backoff(13) == 3600 and backoff(20) == 3600 and backoff(10_000) == 3600
    assert webhooks.MAX_ATTEMPTS == 20
