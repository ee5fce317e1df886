"""The independent verifier against the real API: the library on the API's own answers (honest and tampered),
`cardproof verify` live and from a saved answer with the registry pinned, and an end-to-end run on anvil with
`cardproof serve --workers 2` (publish, pin, verify, `--code -`).

Attacks (look-alike registries, fake APIs, made-up cards, struck-off issuers, wrong codes) are in
test_verifier_attacks.py."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

import chain.client
from issuer.revocation import RevokeReason, revoke_serials
from tests.clikit import in_process_cli
from verify_api.verifier import (EXIT_MISMATCH, EXIT_UNKNOWN, EXIT_UNVERIFIABLE, Outcome, mismatches, read_card_secret,
                                 verify)

REPO = Path(__file__).resolve().parents[2]
CARDPROOF = [sys.executable, "-c", "from cardproof.console import entry; entry()"]


def answer(api, serial: str) -> dict:
    r = api.get(f"/v1/cards/{serial}")
    assert r.status_code == 200
    return r.json()


def test_the_apis_honest_answers(asgi_client, world):
    serial, code = world.card()
    a = answer(asgi_client, serial)
    secret = read_card_secret(f"{code}\n{world.opening(serial)}\n")
    result = verify(a, world.registry, serial=serial, secret=secret)
    assert result.outcome is Outcome.CONFIRMED and len(result.claims) >= 20, mismatches(result.claims)
    names = {c.claim for c in result.claims}
    for wanted in ("the registry", "the proof leads to the anchored root", "the issuer's role", "the issuer's name",
                   "the revocation bit", "the redemption bit", "the anchor transaction", "the verdict 'authentic'",
                   "the code opens the card's commitment"):
        assert wanted in names
    assert result.issuer_name == "Acme Gift Cards" and result.issuer_has_role is True
    # Revoked: confirmed too, 'revoked' is what the chain says.
    revoke_serials(world.sessions, world.registry, [serial], RevokeReason(1))
    deadline = time.monotonic() + 5  # the status cache's TTL (chain_ttl) is 0.2 s in these tests
    while answer(asgi_client, serial)["verdict"] != "revoked":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert verify(answer(asgi_client, serial), world.registry, serial=serial).outcome is Outcome.CONFIRMED
    # A card the public service does not know (minted, not anchored, so not published) and a serial nobody
    # minted: 'unknown', not a card at all (exit 1, never confirmed).
    for s in (world.batches["pending"].cards[1][0], "0000-0000-0000-0000-0"):
        result = verify(answer(asgi_client, s), world.registry, serial=s)
        assert result.outcome is Outcome.UNKNOWN and result.exit_status == EXIT_UNKNOWN
        assert not any(c.confirmed for c in result.claims)


@pytest.mark.parametrize("tamper, claim", [
    (lambda a: a.update(verdict="revoked"), "the verdict 'revoked'"),
    (lambda a: a["product"].update(face_value=999_999), "the product is the leaf's"),
    (lambda a: a["status"].update(redeemed=True), "the redemption bit"),
    (lambda a: a["issuer"].update(has_role=False), "the issuer's role"),
    (lambda a: a["issuer"].update(name="Acme Gift Cards Ltd"), "the issuer's name"),
    (lambda a: a["batch"].update(card_count=1_000_000), "the card count"),
    (lambda a: a["batch"].update(chain_id=1), "the chain id"),
    (lambda a: a["batch"].update(registry="0x" + "12" * 20), "the registry"),
    (lambda a: a["batch"].update(anchor_tx="0x" + "11" * 32), "the anchor transaction"),
    (lambda a: a["proof"]["proof"].reverse() if len(a["proof"]["proof"]) > 1 else a["proof"]["proof"].append(
        "0x" + "22" * 32), "the proof leads to the anchored root"),
    (lambda a: a["proof"]["value"].__setitem__(9, "0x" + "33" * 32), "the proof leads to the anchored root"),
    (lambda a: a.update(serial="0000-0000-0000-0000-0"), "the serial is the leaf's"),
])
def test_tampered_answers_are_caught(asgi_client, world, tamper, claim):
    serial = world.batches["main"].cards[-1][0]
    a = copy.deepcopy(answer(asgi_client, serial))
    tamper(a)
    result = verify(a, world.registry)
    assert claim in {c.claim for c in mismatches(result.claims)}
    assert result.exit_status == EXIT_MISMATCH


def test_verdict_without_proof_is_a_mismatch(world):
    a = {"serial": "0000-0000-0000-0000-0", "verdict": "authentic", "proof": {"value": []}}
    assert verify(a, world.registry).outcome is Outcome.MISMATCH


def test_cli_verify_live_and_from_file(live_server, world, monkeypatch, tmp_path, capsys):
    with in_process_cli(tmp_path, monkeypatch, capsys) as cli:
        monkeypatch.setattr(chain.client, "_in_process", (world.tester, world.admin.w3))  # the world's chain
        serial = world.batches["main"].cards[-2][0]
        r = cli.fails("verify", f"{live_server.url}/c/{serial}")  # nothing pinned yet
        assert "cardproof registry pin" in r.err

        cli.ok("registry", "pin", world.registry.address)
        r = cli.ok("verify", f"{live_server.url}/c/{serial}")
        assert "claims confirmed on chain" in r.out and "✓ the proof leads to the anchored root" in r.out
        data = cli.ok("verify", serial, "--api", live_server.url, "--json").json
        assert data["outcome"] == "confirmed" and data["verdict"] == "authentic"
        assert data["registry"]["address"] == world.registry.address

        saved = httpx.get(f"{live_server.url}/v1/cards/{serial}").json()
        f = tmp_path / "answer.json"
        f.write_text(json.dumps(saved))
        cli.ok("verify", "--proof", f)
        saved["verdict"] = "redeemed"
        f.write_text(json.dumps(saved))
        r = cli("verify", "--proof", f)
        assert r.rc == EXIT_MISMATCH and r.err.count("\n") == 1
        assert r.err.startswith("cardproof: 1 of") and "the verdict 'redeemed'" in r.err
        f.write_text("not json")
        assert "not a JSON answer" in cli.fails("verify", "--proof", f).err
        cli.fails("verify", "not-a-serial", "--api", live_server.url)
        r = cli("verify", "0000-0000-0000-0000-0", "--api", live_server.url)
        assert r.rc == EXIT_UNKNOWN and "claims confirmed" not in r.out


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
    from sqlalchemy import select

    from chain.settings import get_settings
    from issuer.anchoring import anchor_batch
    from issuer.core.commitment import derive_batch_keys, derive_opening, format_opening
    from issuer.core.serial import format_serial, parse_serial
    from issuer.minting import MintRequest, mint_batch
    from issuer.publishing import publish_batch
    from issuer.secrets_store import MasterKey
    from issuer.storage.db import open_database
    from issuer.storage.models import Batch, Card
    from tests.api.world import free_port

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
        registry = env.registry("issuer")
        anchor_batch(sessions, registry, res.batch_id)
        with sessions() as s:
            rows = s.execute(select(Card.index, Card.serial).join(Batch, Card.batch_pk == Batch.id)
                             .where(Batch.batch_id == res.batch_id).order_by(Card.index)).all()
            batch = s.scalar(select(Batch).where(Batch.batch_id == res.batch_id))
            open_key = derive_batch_keys(mk.unwrap_batch_secret(batch.batch_id_bytes, bytes(batch.secret_ct)))[0]
            batch_id = batch.batch_id_bytes
        cards = [(format_serial(parse_serial(serial)), codes[i], format_opening(derive_opening(open_key, i)))
                 for i, serial in rows]

        port = free_port()
        child_env = {**os.environ, "CARDPROOF_HOME": str(home), "CARDPROOF_RPC_URL": node_url,
                     "CARDPROOF_PUBLIC_URL": f"http://127.0.0.1:{port}", "PYTHONPATH": str(REPO),
                     "CARDPROOF_API_LOOKUP_RATE": "10000/minute"}
        for name in ("CARDPROOF_REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "CARDPROOF_REGISTRIES", "CARDPROOF_MASTER_KEY",
                     "CARDPROOF_PRIVATE_KEY", "CARDPROOF_DATABASE_URL", "CARDPROOF_PUBLIC_DATABASE_URL"):
            child_env.pop(name, None)
        proc = subprocess.Popen(CARDPROOF + ["serve", "--port", str(port), "--workers", "2"], env=child_env,
                                cwd=str(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_http(f"{base}/healthz", proc)
            publish_batch(sessions, res.batch_id, base)
            engine.dispose()
            body = httpx.get(f"{base}/v1/cards/{cards[0][0]}", timeout=10).json()
            assert body["verdict"] == "authentic" and body["batch"]["chain_id"] == env.extra["node"].chain_id

            def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
                return subprocess.run(CARDPROOF + list(args), env=child_env, cwd=str(home), input=stdin,
                                      capture_output=True, text=True, timeout=120)

            unpinned = run("verify", f"{base}/c/{cards[0][0]}", "--rpc", node_url)
            assert unpinned.returncode == 1 and unpinned.stdout == "" and unpinned.stderr.count("\n") == 1
            assert "cardproof registry pin" in unpinned.stderr
            assert run("registry", "pin", env.registry_address, "--rpc", node_url).returncode == 0

            ok = run("verify", f"{base}/c/{cards[0][0]}", "--rpc", node_url)
            assert ok.returncode == 0 and ok.stderr == "", ok.stdout + ok.stderr
            assert "claims confirmed on chain" in ok.stdout
            serial, code, opening = cards[1]
            checked = run("verify", f"{base}/c/{serial}", "--rpc", node_url, "--code", "-",
                          stdin=f"{code}\n{opening}\n")
            assert checked.returncode == 0 and "✓ the code opens the card's commitment" in checked.stdout
            wrong = run("verify", f"{base}/c/{serial}", "--rpc", node_url, "--code", "-",
                        stdin=f"{cards[2][1]}\n{opening}\n")
            assert wrong.returncode == 1 and "the code opens the card's commitment" in wrong.stderr
            for secret in (code, opening, cards[2][1]):
                assert secret not in checked.stdout + checked.stderr + wrong.stdout + wrong.stderr

            registry.mark_redeemed(batch_id, [1])  # the chain changes; both workers' answers follow it
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
            assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "contradicted by the chain" in bad.stderr
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
