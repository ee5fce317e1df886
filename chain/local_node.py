"""Manage the local anvil node that `cardproof chain up|down|status` controls.

The node listens on 127.0.0.1 and keeps its state in ``{CARDPROOF_HOME}/chain/state.json`` (dumped every
second and on exit, loaded on start), so the chain and what was deployed on it survive restarts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from chain.errors import NodeError

REPO_ROOT = Path(__file__).resolve().parent.parent
ANVIL_CHAIN_ID = 31337
DEFAULT_PORT = 8545


def anvil_binary() -> Path:
    """The anvil executable shipped by npm's @foundry-rs/anvil (its platform package's native binary)."""
    override = os.environ.get("CARDPROOF_ANVIL")
    if override:
        return Path(override)
    modules = REPO_ROOT / "node_modules" / "@foundry-rs"
    for candidate in sorted(modules.glob("anvil-*/bin/anvil")):
        if os.access(candidate, os.X_OK):
            return candidate
    wrapper = REPO_ROOT / "node_modules" / ".bin" / "anvil"
    if wrapper.exists():
        return wrapper
    raise NodeError(f"anvil not found under {REPO_ROOT / 'node_modules'}: run `npm ci` (scripts/setup)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like anvil: TIME_WAIT does not block
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def rpc_chain_id(url: str, timeout: float = 1.0) -> int | None:
    """eth_chainId of the node at `url`, or None when nothing answers."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(json.loads(resp.read())["result"], 16)
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


@dataclass(frozen=True)
class NodeInfo:
    pid: int
    port: int
    chain_id: int
    state_path: str
    log_path: str
    started_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _chain_dir(home: Path) -> Path:
    return home / "chain"


def _info_path(home: Path) -> Path:
    return _chain_dir(home) / "node.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _last_port(home: Path) -> int | None:
    try:
        return int((_chain_dir(home) / "last_port").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None


def recorded(home: Path) -> NodeInfo | None:
    """The node `chain up` started for this home if its process is alive, answering or not (a record left by a
    dead process is removed)."""
    path = _info_path(home)
    try:
        info = NodeInfo(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if _pid_alive(info.pid):
        return info
    path.unlink(missing_ok=True)
    return None


def status(home: Path) -> NodeInfo | None:
    """The running node for this home that answers, or None (a stale record is removed)."""
    info = recorded(home)
    if info is not None and rpc_chain_id(info.url) is not None:
        return info
    return None


def start(home: Path, port: int | None = None, timeout: float = 30.0) -> NodeInfo:
    """Start anvil for `home` (or return the one already running)."""
    running = recorded(home)
    if running is not None:
        if rpc_chain_id(running.url) is None:
            raise NodeError(f"the chain of this home (pid {running.pid}, {running.url}) is running but does not "
                            "answer (frozen or overloaded); run `cardproof chain down` first")
        if port is not None and port != running.port:
            raise NodeError(f"a chain is already running on port {running.port}; run `cardproof chain down` first")
        return running
    if port is None:
        # Prefer the port this home used last, so URLs printed earlier stay valid.
        last = _last_port(home)
        port = next((p for p in (last, DEFAULT_PORT) if p and port_is_free(p)), None) or free_port()
    elif not port_is_free(port):
        raise NodeError(f"port {port} on 127.0.0.1 is in use; pick another with --port")
    chain_dir = _chain_dir(home)
    chain_dir.mkdir(parents=True, exist_ok=True)
    state_path = chain_dir / "state.json"
    log_path = chain_dir / "anvil.log"
    cmd = [
        str(anvil_binary()),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--chain-id", str(ANVIL_CHAIN_ID),
        "--state", str(state_path),
        "--state-interval", "1",
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    info = NodeInfo(proc.pid, port, ANVIL_CHAIN_ID, str(state_path), str(log_path), time.time())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NodeError(f"anvil exited with code {proc.returncode} at start; see {log_path}")
        if rpc_chain_id(info.url, timeout=0.5) is not None:
            _info_path(home).write_text(json.dumps(asdict(info)), encoding="utf-8")
            (chain_dir / "last_port").write_text(str(port), encoding="ascii")
            return info
        time.sleep(0.05)
    proc.kill()
    raise NodeError(f"anvil did not answer on {info.url} within {timeout:.0f}s; see {log_path}")


def stop(home: Path, timeout: float = 15.0) -> NodeInfo | None:
    """Stop the node for `home`, letting it dump its state first. Returns what was stopped."""
    path = _info_path(home)
    try:
        info = NodeInfo(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if _pid_alive(info.pid):
        os.kill(info.pid, signal.SIGTERM)
        os.kill(info.pid, signal.SIGCONT)  # a frozen (stopped) node handles the SIGTERM, and saves its state
        deadline = time.monotonic() + timeout
        while _pid_alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
            try:  # reap it if it is our child
                os.waitpid(info.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if _pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return info
