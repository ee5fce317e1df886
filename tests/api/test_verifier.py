"""The independent verifier: library, `cardproof verify` (live and --proof), and an end-to-end run of
`cardproof serve --workers 2` on anvil with concurrent redemptions across worker processes."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from issuer.revocation import RevokeReason, revoke_serials
from verify_api.verifier import mismatches, verify_answer

REPO = Path(__file__).resolve().parents[2]
CARDPROOF = [sys.executable, "-c", "from verify_api.console import entry; entry()"]


def answer(api, serial: str) -> dict:
    r = api.get(f"/v1/cards/{serial}")
    assert r.status_code == 200
    return r.json()


def test_honest_answers_are_confirmed(asgi_client, world):
    serial, _ = world.card()
    a = answer(asgi_client, serial)
    claims = verify_answer(a, world.registry, serial=serial, registry_pinned=True)
    assert mismatches(claims) == [] and len(claims) >= 20
    names = {c.claim for c in claims}
    for wanted in ("the proof leads to the root", "the anchored root", "the issuer's role", "the revocation bit",
                   "the redemption bit", "the anchor transaction", "the verdict 'authentic'"):
        assert wanted in names
    # Revoked, pending and unknown answers are confirmed too.
    revoke_serials(world.sessions, world.registry, [serial], RevokeReason(1))
    deadline = time.monotonic() + 5  # the status cache's TTL (chain_ttl) is 0.2 s in these tests
    while answer(asgi_client, serial)["verdict"] != "revoked":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert mismatches(verify_answer(answer(asgi_client, serial), world.registry, serial=serial)) == []
    pending = world.batches["pending"].cards[1][0]
    assert mismatches(verify_answer(answer(asgi_client, pending), world.registry, serial=pending)) == []
    unknown = answer(asgi_client, "0000-0000-0000-0000-0")
    assert mismatches(verify_answer(unknown, world.registry, serial="0000-0000-0000-0000-0")) == []


@pytest.mark.parametrize("tamper, claim", [
    (lambda a: a.update(verdict="revoked"), "the verdict 'revoked'"),
    (lambda a: a["product"].update(face_value=999_999), "the product is the leaf's"),
    (lambda a: a["status"].update(redeemed=True), "the redemption bit"),
    (lambda a: a["issuer"].update(has_role=False), "the issuer's role"),
    (lambda a: a["batch"].update(card_count=1_000_000), "the card count"),
    (lambda a: a["batch"].update(chain_id=1), "the chain id"),
    (lambda a: a["batch"].update(anchor_tx="0x" + "11" * 32), "the anchor transaction"),
    (lambda a: a["proof"]["proof"].reverse() if len(a["proof"]["proof"]) > 1 else a["proof"]["proof"].append(
        "0x" + "22" * 32), "the proof leads to the root"),
    (lambda a: a["proof"]["value"].__setitem__(7, "0x" + "33" * 32), "the proof leads to the root"),
    (lambda a: a.update(serial="0000-0000-0000-0000-0"), "the serial is the leaf's"),
])
def test_tampered_answers_are_caught(asgi_client, world, tamper, claim):
    serial = world.batches["main"].cards[-1][0]
    a = copy.deepcopy(answer(asgi_client, serial))
    tamper(a)
    bad = {c.claim for c in mismatches(verify_answer(a, world.registry))}
    assert claim in bad


def test_verdict_without_proof_is_a_mismatch(world):
    a = {"serial": "0000-0000-0000-0000-0", "verdict": "authentic", "proof": {"value": []}}
    assert mismatches(verify_answer(a, world.registry))


def test_cli_verify_live_and_from_file(live_server, world, monkeypatch, tmp_path, capsys):
    import verify_api.cli as cli
    from verify_api.console import main

    monkeypatch.setattr(cli, "_registry", lambda rpc, address: world.registry)
    serial = world.batches["main"].cards[-2][0]
    rc = main(["verify", f"{live_server.url}/c/{serial}"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "all" in out.out and "claims confirmed on chain" in out.out and "✓ the anchored root" in out.out

    rc = main(["verify", serial, "--api", live_server.url, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["confirmed"] is True and data["verdict"] == "authentic"

    saved = httpx.get(f"{live_server.url}/v1/cards/{serial}").json()
    f = tmp_path / "answer.json"
    f.write_text(json.dumps(saved))
    assert main(["verify", "--proof", str(f)]) == 0
    capsys.readouterr()
    saved["verdict"] = "redeemed"
    f.write_text(json.dumps(saved))
    assert main(["verify", "--proof", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cardproof: 1 of") and "the verdict 'redeemed'" in err[0]
    f.write_text("not json")
    assert main(["verify", "--proof", str(f)]) == 1
    assert "not a JSON answer" in capsys.readouterr().err
    assert main(["verify", "not-a-serial", "--api", live_server.url]) == 1
    assert capsys.readouterr().err.startswith("cardproof: ")


# --------------------------------------------------------------------------- end to end on anvil


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not start")


@pytest.mark.anvil
def test_end_to_end_serve_two_workers_on_anvil(_anvil_session):
    from issuer.anchoring import anchor_batch
    from issuer.minting import MintRequest, mint_batch
    from issuer.secrets_store import MasterKey
    from issuer.storage.db import open_database
    from chain.settings import get_settings
    from tests.api.world import free_port
    from verify_api.auth import create_api_key

    env = _anvil_session
    node_url = env.extra["node"].url
    home = Path(tempfile.mkdtemp(prefix="cardproof-e2e-"))
    try:
        shutil.copy(env.home / "deployments.json", home / "deployments.json")
        key_hex = os.urandom(32).hex()
        issuer = env.accounts["issuer"]
        settings = get_settings(home=home, rpc_url=node_url, master_key=key_hex)
        engine, sessions = open_database(settings)
        codes = [f"E2E-{i:03d}-{os.urandom(6).hex()}" for i in range(12)]
        (home / "codes.csv").write_text("code\n" + "\n".join(codes) + "\n")
        mk = MasterKey.from_text(key_hex)
        res = mint_batch(sessions, mk, issuer.address, MintRequest(sku="E2E-10", face_value="10", currency="EUR",
                                                                   codes_csv=home / "codes.csv"))
        anchor_batch(sessions, env.registry("issuer"), res.batch_id)
        from sqlalchemy import select

        from issuer.core.serial import format_serial, parse_serial
        from issuer.storage.models import Batch, Card

        with sessions() as s:
            rows = s.execute(select(Card.index, Card.serial).join(Batch, Card.batch_pk == Batch.id)
                             .where(Batch.batch_id == res.batch_id).order_by(Card.index)).all()
        cards = [(format_serial(parse_serial(serial)), codes[i]) for i, serial in rows]
        with sessions.begin() as s:
            api_key, _ = create_api_key(s, issuer.address, "e2e")
        engine.dispose()

        port = free_port()
        child_env = {**os.environ, "CARDPROOF_HOME": str(home), "CARDPROOF_RPC_URL": node_url,
                     "CARDPROOF_MASTER_KEY": key_hex, "CARDPROOF_PRIVATE_KEY": "0x" + issuer.key.hex(),
                     "CARDPROOF_PUBLIC_URL": f"http://127.0.0.1:{port}", "PYTHONPATH": str(REPO),
                     "CARDPROOF_API_LOOKUP_RATE": "10000/minute"}
        child_env.pop("CARDPROOF_REDIS_URL", None)
        child_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        proc = subprocess.Popen(CARDPROOF + ["serve", "--port", str(port), "--workers", "2"], env=child_env,
                                cwd=str(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_http(f"{base}/healthz", proc)
            assert httpx.get(f"{base}/readyz", timeout=10).json()["status"] == "ready"
            body = httpx.get(f"{base}/v1/cards/{cards[0][0]}", timeout=10).json()
            assert body["verdict"] == "authentic" and body["batch"]["chain_id"] == env.extra["node"].chain_id

            # Exactly one of concurrent redemptions wins, across two worker processes.
            serial, code = cards[1]
            results: list[int] = []
            barrier = threading.Barrier(6)

            def go() -> None:
                with httpx.Client(timeout=60) as c:
                    barrier.wait()
                    results.append(c.post(f"{base}/v1/cards/{serial}/redeem", json={"code": code},
                                          headers={"Authorization": f"Bearer {api_key}"}).status_code)

            threads = [threading.Thread(target=go) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(results) == [200] + [409] * 5

            run = lambda *args: subprocess.run(CARDPROOF + list(args), env=child_env, cwd=str(home),  # noqa: E731
                                               capture_output=True, text=True, timeout=120)
            ok = run("verify", f"{base}/c/{cards[0][0]}", "--rpc", node_url)
            assert ok.returncode == 0, ok.stdout + ok.stderr
            assert "claims confirmed on chain" in ok.stdout
            deadline = time.monotonic() + 10
            while httpx.get(f"{base}/v1/cards/{serial}").json()["verdict"] != "redeemed":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert run("verify", f"{base}/v1/cards/{serial}", "--rpc", node_url).returncode == 0

            saved = httpx.get(f"{base}/v1/cards/{cards[2][0]}").json()
            saved["status"]["revoked"] = True
            saved["verdict"] = "revoked"
            (home / "tampered.json").write_text(json.dumps(saved))
            bad = run("verify", "--proof", str(home / "tampered.json"), "--rpc", node_url)
            assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "not confirmed" in bad.stderr
            metrics = httpx.get(f"{base}/metrics").text
            assert 'cardproof_api_requests_total{' in metrics
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        shutil.rmtree(home, ignore_errors=True)
