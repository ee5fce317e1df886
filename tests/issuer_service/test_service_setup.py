"""The service built from the environment (in the lifespan, not at import), the `cardproof issuer serve` and
`cardproof issuer api-key` commands, and the public service left with no endpoint that needs a secret."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import warnings

import pytest

from tests.clikit import in_process_cli

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def test_import_builds_nothing(tmp_path):
    """Importing the service and creating the app reads no settings and opens nothing (a fresh process)."""
    home = tmp_path / "nowhere"
    code = ("import json, issuer.service.app as m; app = m.create_app(); "
            "print(json.dumps(sorted(app.openapi()['paths'])))")
    env = {**os.environ, "CARDPROOF_HOME": str(home), "CARDPROOF_MASTER_KEY": "not a key",
           "CARDPROOF_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
           "CARDPROOF_ISSUER_SERVICE_REDEEM_RATE": "not a rate"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert json.loads(out) == ["/healthz", "/readyz", "/v1/cards/{serial}/redeem", "/v1/erp/mint-jobs",
                               "/v1/erp/mint-jobs/{job_id}", "/v1/erp/orders", "/v1/erp/orders/{order_id}",
                               "/v1/erp/revocations", "/v1/erp/stock", "/v1/erp/webhooks",
                               "/v1/erp/webhooks/{delivery_id}/replay"]
    assert not home.exists()


def test_app_from_environment(monkeypatch, tmp_path):
    from issuer.service.app import create_app

    home = tmp_path / "home"
    monkeypatch.setenv("CARDPROOF_HOME", str(home))
    monkeypatch.setenv("CARDPROOF_DATABASE_URL", f"sqlite:///{tmp_path / 'issuer.db'}")
    monkeypatch.setenv("CARDPROOF_RPC_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("CARDPROOF_ISSUER_SERVICE_RPC_TIMEOUT", "0.5")
    monkeypatch.delenv("CARDPROOF_REDIS_URL", raising=False)
    monkeypatch.delenv("CARDPROOF_MASTER_KEY", raising=False)
    # Without a master key the service does not start (and never makes one: nothing would open).
    with pytest.raises(Exception, match="master key"):
        with TestClient(create_app()):
            pass
    assert not (home / "master.key").exists()
    monkeypatch.setenv("CARDPROOF_MASTER_KEY", secrets.token_hex(32))
    monkeypatch.setenv("CARDPROOF_ISSUER_SERVICE_REDEEM_RATE", "1/hour")
    with TestClient(create_app()) as c:
        deps = c.app.state.deps
        assert deps.service.redeem_rate == "1/hour" and deps.limiter.backend == "memory"
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["database"] == "ok" and r.json()["status"] == "not_ready"
        r = c.post("/v1/cards/0123-4567-89AB-CDEF-G/redeem", json={"code": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text


def test_public_service_has_no_secret_endpoint():
    from verify_api.app import create_app

    paths = create_app().openapi()["paths"]
    assert not [p for p in paths if p.endswith(("/redeem", "/check"))]
    assert all(set(ops) <= {"get", "put"} for ops in paths.values()), paths


def test_api_key_commands(tmp_path, monkeypatch, capsys):
    issuer = "0x" + "ab" * 20
    with in_process_cli(tmp_path, monkeypatch, capsys) as cli:
        created = cli.ok("issuer", "api-key", "create", "--issuer", issuer.upper().replace("0X", "0x"),
                         "--label", "till 7", "--json").json
        assert created["key"].startswith("cpk_") and created["label"] == "till 7"
        plain = cli.ok("issuer", "api-key", "create", "--issuer", issuer)
        assert "shown once" in plain.out
        rows = cli.ok("issuer", "api-key", "list", "--json").json
        assert [r["key_id"] for r in rows][0] == created["key_id"] and len(rows) == 2
        assert all(created["key"].split("_", 2)[2] not in str(r) for r in rows) and not rows[0]["revoked"]
        assert cli.ok("issuer", "api-key", "list", "--issuer", "0x" + "cd" * 20, "--json").json == []
        assert cli.ok("issuer", "api-key", "revoke", created["key"], "--json").json == {"revoked": True}
        assert cli("issuer", "api-key", "revoke", created["key_id"]).rc == 3
        assert cli.ok("issuer", "api-key", "list", "--json").json[0]["revoked"] is True
        cli.fails("issuer", "api-key", "create", "--issuer", "0x1234", match="not an account address")
        cli.fails("api-key", "list", rc=2)  # the public side has no API keys any more
        cli.fails("issuer", "serve", "--workers", "2", match="CARDPROOF_REDIS_URL")
