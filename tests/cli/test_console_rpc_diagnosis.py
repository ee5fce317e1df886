"""A wrong RPC URL gets a one-line diagnosis from any command: refused connection, unknown host (DNS), not a
JSON-RPC endpoint (a web page, HTTP 404 or 501), naming the URL and, when it came from there, CARDPROOF_RPC_URL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chain.client import connect
from chain.errors import ChainUnreachable
from chain.local_node import free_port
from chain.rpc import reset_breakers
from chain.settings import get_settings
from tests.cli.conftest import clean_env, run_cardproof


@contextmanager
def web_server(status: int, body: bytes) -> Iterator[str]:
    """An HTTP server that answers every POST with ``status`` and ``body`` (not JSON-RPC)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


def _connect_error(tmp_path, url: str) -> str:
    with pytest.raises(ChainUnreachable) as info:
        connect(get_settings(home=tmp_path, rpc_url=url, rpc_retries=0))
    return str(info.value)


def test_a_web_page_is_not_json_rpc(tmp_path):
    with web_server(200, b"<html><body>Welcome to nginx!</body></html>") as url:
        assert _connect_error(tmp_path, url) == (
            f"the chain node at {url} does not answer (not a JSON-RPC endpoint: it answered "
            "'<html><body>Welcome to nginx!</body></ht')")


@pytest.mark.parametrize("status", [404, 405, 501])
def test_an_http_error_of_a_web_server_is_not_json_rpc(tmp_path, status):
    with web_server(status, b"nope") as url:
        assert _connect_error(tmp_path, url) == (
            f"the chain node at {url} does not answer (HTTP {status}: not a JSON-RPC endpoint)")


def test_json_that_is_not_json_rpc(tmp_path):
    with web_server(200, b'{"status": "ok"}') as url:
        assert "not a JSON-RPC endpoint: it answered" in _connect_error(tmp_path, url)


def test_a_refused_connection(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    assert _connect_error(tmp_path, url) == f"the chain node at {url} does not answer (connection refused)"


@pytest.mark.parametrize("kind", ["web page", "refused", "unknown host"])
def test_any_command_says_it_in_one_line_naming_the_variable(tmp_path, kind):
    with web_server(200, b"<!doctype html><title>hi</title>") as page:
        url = {"web page": page, "refused": f"http://127.0.0.1:{free_port()}",
               "unknown host": "http://no-such-node.invalid:8545"}[kind]
        env = clean_env(CARDPROOF_HOME=str(tmp_path), CARDPROOF_RPC_URL=url, CARDPROOF_RPC_TIMEOUT="5")
        for argv in (["deploy"], ["arbiter", "list"]):
            run = run_cardproof(*argv, env=env)
            assert run.returncode == 1 and run.stdout == "", (argv, run)
            reason = {"web page": "not a JSON-RPC endpoint", "refused": "connection refused",
                      "unknown host": "unknown host"}[kind]
            assert run.stderr.startswith(f"cardproof: the chain node at {url} does not answer ({reason}"), run.stderr
            assert run.stderr.endswith("; check CARDPROOF_RPC_URL\n") and run.stderr.count("\n") == 1, run.stderr
        js = run_cardproof("order", "show", "1", "--json", env=env)
        assert json.loads(js.stdout)["error"]["code"] == "chain_unreachable"
