"""The public service as a running process holds no secret of the supplier's side.

It refuses to start with a supplier's key in its environment, and once it has served lookups and a publish,
none of its processes has the master key (or a signing key) in its environment or command line, nor has it
ever opened a master key file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.api.world import World, free_port
from tests.netkit import stop_process

REPO = Path(__file__).resolve().parents[2]
CARDPROOF = [sys.executable, "-m", "cardproof"]


def _env(world: World, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDPROOF_")}
    env.update({"CARDPROOF_HOME": str(world.home / "public-side"), "PYTHONPATH": str(REPO),
                "CARDPROOF_RPC_URL": "eth-tester", "CARDPROOF_API_REGISTRY_ADDRESS": world.registry.address})
    env.update(extra)
    return env


@pytest.mark.parametrize("name", ["CARDPROOF_MASTER_KEY", "CARDPROOF_PRIVATE_KEY", "CARDPROOF_KEYSTORE_PASSWORD"])
def test_refuses_to_start_with_a_supplier_secret_in_its_environment(world, name):
    r = subprocess.run(CARDPROOF + ["serve", "--port", str(free_port())], env=_env(world, **{name: "ab" * 32}),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "holds no secret" in lines[0], r.stderr
    assert "ab" * 32 not in r.stderr + r.stdout


def _tree(pid: int) -> list[int]:
    out = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += _tree(int(child))
    return out


def test_running_public_service_holds_no_secret(world, tmp_path):
    """Serve (two workers), answer lookups, then look inside every process of the service."""
    port = free_port()
    home = world.home / "public-side"
    env = _env(world, CARDPROOF_PUBLIC_DATABASE_URL=f"sqlite:///{tmp_path / 'public.db'}")
    proc = subprocess.Popen(CARDPROOF + ["serve", "--port", str(port), "--workers", "2", "--no-index"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.2)
        serial = world.batches["main"].cards[0][0]
        for _ in range(5):
            assert httpx.get(f"{base}/v1/cards/{serial}", timeout=10).status_code == 200
        pids = _tree(proc.pid)
        assert len(pids) >= 3  # the supervisor and two workers
        secret_names = (b"CARDPROOF_MASTER_KEY", b"CARDPROOF_PRIVATE_KEY", b"CARDPROOF_KEYSTORE_PASSWORD")
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert not any(name in environ for name in secret_names), pid
            assert b"master" not in Path(f"/proc/{pid}/cmdline").read_bytes().lower()
            opened = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            assert not [f for f in opened if f.endswith(".key") or "cardproof.db" in f], opened
        assert not (home / "master.key").exists() and not (home / "cardproof.db").exists()
    finally:
        stop_process(proc)
