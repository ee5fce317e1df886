"""One account, one nonce sequence, whatever the number of processes (issue 9).

Two worker processes of ``cardproof issuer serve`` (sharing our own redis-server on a free port, never the
machine's) and ``cardproof redeem`` processes all sign redemptions with the issuer's account at once, on anvil:
50 distinct cards, every one redeemed, no 5xx, no failed command, 50 redeemed cards on chain, and the account's
nonces used once each with no gap (nothing stuck in the pool). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from issuer.anchoring import anchor_batch
from issuer.storage import repository as repo
from tests.issuer.helpers import mint
from tests.issuer_service.conftest import minted_cards

pytestmark = [pytest.mark.anvil, pytest.mark.parametrize("chain_env", ["anvil"], indirect=True)]

REPO = Path(__file__).resolve().parents[2]
CARDS = 50
BY_CLI = 14  # the others go to the two workers over HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Our own redis-server on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    import redis

    folder = tempfile.mkdtemp(prefix="cardproof-redis-")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, socket_timeout=0.5).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _database_url(world) -> str:
    return world.sessions.kw["bind"].url.render_as_string(hide_password=False)


def _env(world, home: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDPROOF_")}
    env.update({
        "PYTHONPATH": str(REPO),
        "CARDPROOF_HOME": str(home),
        "CARDPROOF_DATABASE_URL": _database_url(world),
        "CARDPROOF_RPC_URL": world.chain.extra["node"].url,
        "CARDPROOF_PRIVATE_KEY": "0x" + bytes(world.chain.accounts["issuer"].key).hex(),
        "CARDPROOF_MASTER_KEY": world.master_key._key.hex(),
        "CARDPROOF_REDIS_URL": redis_url,
        "CARDPROOF_ISSUER_SERVICE_REGISTRY_ADDRESS": world.chain.registry_address,
        "CARDPROOF_ISSUER_SERVICE_REDEEM_RATE": "off",
        "CARDPROOF_ISSUER_SERVICE_REDEEM_RATE_SERIAL": "off",
    })
    return env


class Service:
    """``cardproof issuer serve --workers 2`` in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "cardproof", "issuer", "serve", "--port", str(self.port),
                                      "--workers", "2"], env=env, cwd=REPO, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.log = log

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"issuer serve exited: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"issuer serve did not become ready: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def test_two_workers_and_the_cli_redeem_50_cards_at_once(world, tmp_path, redis_url):
    issuer_client = world.registry.client
    res = mint(world.sessions, world.master_key, world.issuer, count=CARDS)
    anchor_batch(world.sessions, world.registry, res.batch_id)
    cards = minted_cards(world.sessions, world.master_key, res.batch_id)
    random.Random(9).shuffle(cards)
    by_cli, by_http = cards[:BY_CLI], cards[BY_CLI:]

    home = tmp_path / "supplier-home"
    home.mkdir()
    shutil.copy(world.chain.home / "deployments.json", home / "deployments.json")  # `cardproof redeem` finds it
    env = _env(world, home, redis_url)
    key = world.api_key(label="till")
    nonce_before = issuer_client.w3.eth.get_transaction_count(world.issuer, "pending")

    service = Service(env, tmp_path / "serve.log")
    clis: list[subprocess.Popen] = []
    try:
        service.wait_ready()
        # The CLI processes import and get ready first (on a busy machine that takes long); then all go at once.
        clis = [subprocess.Popen([sys.executable, "-c", _CLI, serial], env=env, cwd=REPO, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for serial, _code, _index in by_cli]
        for proc in clis:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        answers: list[tuple[str, int, str]] = []
        # Half the HTTP redemptions go with the CLI, half once the first CLI redemption is on chain (the CLI
        # processes start slower than a request): the workers and the CLI sign at the same time.
        go, second_wave = threading.Event(), threading.Event()

        def post(serial: str, code: str, wave: threading.Event) -> None:
            with httpx.Client(base_url=service.url, timeout=180) as c:
                wave.wait(240)
                r = c.post(f"/v1/cards/{serial}/redeem", json={"code": code},
                           headers={"Authorization": f"Bearer {key}"})
                answers.append((serial, r.status_code, r.text))

        threads = [threading.Thread(target=post, args=(s, c, go if n % 2 else second_wave))
                   for n, (s, c, _i) in enumerate(by_http)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # the clients are connected
        go.set()
        for proc, (_serial, code, _index) in zip(clis, by_cli, strict=True):
            proc.stdin.write(f"go\n{code}\n")  # `cardproof redeem SERIAL --code -` reads the code from stdin
            proc.stdin.flush()
        bid = bytes.fromhex(res.batch_id[2:])
        deadline = time.monotonic() + 240
        while not any(world.registry.is_redeemed(bid, i) for _s, _c, i in by_cli) and time.monotonic() < deadline:
            time.sleep(0.02)
        second_wave.set()
        for t in threads:
            t.join(240)
        cli_results = []
        for proc in clis:
            proc.stdin.close()
            proc.stdin = None  # written: communicate() only reads
            out, err = proc.communicate(timeout=240)
            cli_results.append((proc.returncode, out, err))
    finally:
        for proc in clis:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        service.stop()

    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert len(answers) == len(by_http)
    assert [a for a in answers if a[1] != 200] == [], log[-3000:]
    assert [r for r in cli_results if r[0] != 0] == []
    assert "Traceback" not in log and "500" not in log, log[-3000:]

    by_cli_json = [json.loads(out.splitlines()[-1]) for _rc, out, _err in cli_results]
    by_http_json = [json.loads(text) for _s, _st, text in answers]
    assert len({r["serial"] for r in by_cli_json} | {r["serial"] for r in by_http_json}) == CARDS
    # The CLI's transactions and the workers' were interleaved on chain: they did race for the account.
    cli_blocks, http_blocks = [r["block_number"] for r in by_cli_json], [r["block_number"] for r in by_http_json]
    assert min(cli_blocks) < max(http_blocks) and min(http_blocks) < max(cli_blocks), (cli_blocks, http_blocks)

    # The chain holds 50 redeemed cards, and the account used 50 nonces in a row, every one mined.
    assert sum(world.registry.is_redeemed(bid, i) for _s, _c, i in cards) == CARDS
    eth = issuer_client.w3.eth
    assert eth.get_transaction_count(world.issuer, "latest") == eth.get_transaction_count(world.issuer, "pending") \
        == nonce_before + CARDS
    with world.sessions() as s:
        rows = [repo.get_card_by_serial(s, serial) for serial, _c, _i in cards]
        assert all(r.redeemed_at is not None and not (r.redeemed_by or "").startswith(("tx:", "claim:"))
                   for r in rows)


# `cardproof redeem SERIAL --code - --json`, run when told (the interpreter's start is not part of the race).
_CLI = """
import sys
from cardproof import console
import chain.client, chain.registry, issuer.redemption, issuer.runtime  # the heavy imports, before the start line
print("ready", flush=True)
sys.stdin.readline()
sys.exit(console.main(["redeem", sys.argv[1], "--code", "-", "--json"]))
"""
