"""Every card page state, and /docs, in headless Chromium, with nothing fetched from outside the service.

One Chromium run, driven over the DevTools protocol, loads every page: the card page in each state (authentic,
revoked, redeemed, unknown serial, malformed serial, unanchored batch, chain down) in English, Simplified Chinese
and Arabic, then /docs (Swagger UI) of the public service and of the supplier's. Two detectors see what a page
fetches, so a page that loads a CDN font, script or image fails even on a machine with no internet:

* the DevTools protocol's ``Network.requestWillBeSent``: every request of the page, https included;
* a small recording proxy started by the test, through which Chromium sends *all* its traffic, loopback included
  (``--proxy-bypass-list=<-loopback>``). It forwards only to the services under test and refuses anything else, so
  nothing leaves the machine. The page's requests carry a marker in their User-Agent, which tells them from
  Chromium's own chatter (update checks, sign-in); an https tunnel (CONNECT) carries Chromium's plain User-Agent,
  which is why the first detector is there too.

``test_the_detector_flags_an_external_fetch`` proves that both see a page's external fetches.

The state is read from ``<main data-state="...">`` (when the templates carry it) and from the verdict heading in the
page's language (verify_api/locales/<lang>.json).
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.test_browser import FLAGS, _chromium
from tests.api.world import World, build_world, mint
from tests.netkit import LiveServer, free_port
from verify_api.app import create_app
from issuer.service.app import ServiceDeps
from issuer.service.app import create_app as create_supplier_app
from verify_api.deps import AppDeps

pytestmark = pytest.mark.browser

LOCALES = Path(__file__).resolve().parents[2] / "verify_api" / "locales"
LANGS = ("en", "zh-CN", "ar")
# state (as <main data-state> names it) -> the locale key of the page's heading
STATES = {
    "authentic": "verdict.authentic",
    "revoked": "verdict.revoked",
    "redeemed": "verdict.redeemed",
    "unknown": "verdict.unknown",
    "malformed": "invalid_serial",
    "unanchored": "verdict.not_yet_anchored",
    "chain_down": "verdict.not_yet_anchored",
}
PAGE_MARK = "cardproof-page-under-test"  # appended to the pages' User-Agent
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length"}


# --------------------------------------------------------------------------------------------- the proxy


class RecordingProxy:
    """An HTTP proxy on loopback that records every host:port asked for, forwards to ``allowed`` ones only, and
    answers anything else (and every CONNECT tunnel, i.e. any https) with an error, without contacting it."""

    def __init__(self) -> None:
        self.allowed: set[str] = set()
        self.seen: list[tuple[str, str, bool]] = []  # (host:port, method and path, sent by a page)
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_CONNECT(self) -> None:  # noqa: N802 - https through the proxy: recorded, never opened
                proxy._record(self.path, "CONNECT", PAGE_MARK in self.headers.get("User-Agent", ""))
                self.send_error(403, "not the service under test")

            def _forward(self) -> None:
                url = urlsplit(self.path)
                where = f"{url.hostname}:{url.port or 80}"
                proxy._record(where, f"{self.command} {url.path}", PAGE_MARK in self.headers.get("User-Agent", ""))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if where not in proxy.allowed:
                    self.send_error(502, "not the service under test")
                    return
                conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    target = url.path + (f"?{url.query}" if url.query else "")
                    conn.request(self.command, target or "/", body, headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _forward  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="recording-proxy", daemon=True)

    def _record(self, where: str, what: str, by_page: bool) -> None:
        with self._lock:
            self.seen.append((where, what, by_page))

    def outside(self, *, pages_only: bool = True) -> list[tuple[str, str]]:
        """Every request (of a page, or of anything) that was not for a service under test."""
        with self._lock:
            return [(w, what) for w, what, by_page in self.seen
                    if w not in self.allowed and (by_page or not pages_only)]

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------- the browser


class DevTools:
    """A minimal DevTools-protocol client for one page of a headless Chromium."""

    def __init__(self, ws, user_agent: str = "") -> None:  # noqa: ANN001 - a websockets ClientConnection
        self.ws = ws
        self.user_agent = user_agent
        self._id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params: object) -> dict:
        self._id += 1
        mine = self._id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.events):
                if msg.get("method") == event:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.events.append(json.loads(self.ws.recv(timeout=left)))

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str, lang: str, ready: str = "document.readyState === 'complete'",
             timeout: float = 30) -> tuple[str, list[str]]:
        """Load ``url`` asking for ``lang`` (Accept-Language), wait until ``ready`` holds: the rendered DOM and the
        URL of every request the page made."""
        self.call("Network.setUserAgentOverride", userAgent=self.user_agent, acceptLanguage=lang)
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", timeout)
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"!!({ready})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: not ready ({ready}) within {timeout} s")
            time.sleep(0.05)
        dom = str(self.evaluate("document.documentElement.outerHTML"))
        requests = [m["params"]["request"]["url"] for m in self.events
                    if m.get("method") == "Network.requestWillBeSent"]
        return dom, requests


@contextmanager
def browser(binary: str, proxy: RecordingProxy) -> Iterator[DevTools]:
    """One headless Chromium whose every request, loopback included, goes through ``proxy``."""
    with _profile_dir() as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
               f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
               "--window-size=390,1100", "about:blank"]
        # A session of its own: Chromium's helper processes (renderer, crash handler) are stopped with it.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            active = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (active.exists() and len(active.read_text().splitlines()) >= 2):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start: {proc.stderr.read()[-2000:]}")
                time.sleep(0.05)
            port = int(active.read_text().splitlines()[0])
            pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
                     if t["type"] == "page"]
            from websockets.sync.client import connect

            with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=20) as ws:
                tools = DevTools(ws)
                tools.user_agent = f"{tools.call('Browser.getVersion')['userAgent']} {PAGE_MARK}"
                tools.call("Page.enable")
                tools.call("Network.enable")
                tools.call("Network.setCacheDisabled", cacheDisabled=True)
                yield tools
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop Chromium and every process of its session (they may still write to the profile)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    deadline = time.monotonic() + 5  # the helpers of the session end a moment after the main process
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@contextmanager
def _profile_dir() -> Iterator[str]:
    """A temporary Chromium profile, removed afterwards even if a last write races the removal."""
    path = tempfile.mkdtemp(prefix="cardproof-chromium-")
    try:
        yield path
    finally:
        for _ in range(20):
            try:
                shutil.rmtree(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------- the pages


@dataclass
class Loaded:
    dom: str
    requests: list[str]  # every URL the page asked for (DevTools protocol)


@dataclass
class Pages:
    """What one Chromium run loaded: ``loaded[(state, lang)]`` for the card pages, ``loaded[(name, "en")]`` for the
    docs pages (docs, issuer-docs); ``origins``: the host:port of each service under test."""

    origins: set[str]
    loaded: dict[tuple[str, str], Loaded]
    proxy: RecordingProxy


def _states_world() -> tuple[World, dict[str, str]]:
    """A world of its own (its chain is rewound below) and a card serial (or text) for each state."""
    world = build_world()
    main = world.batches["main"]
    bid = bytes.fromhex(main.batch_id[2:])
    world.registry.revoke_cards(bid, [1], 1)
    world.registry.mark_redeemed(bid, [2])
    # Unanchored: a batch published while anchored, whose anchor the chain then lost (a reorg); the public
    # database holds it, the chain does not.
    snapshot = world.tester.take_snapshot()
    lost = mint(world, "lost", 3)
    world.tester.revert_to_snapshot(snapshot)
    assert not world.registry.batch(bytes.fromhex(lost.batch_id[2:])).anchored
    serials = {"authentic": main.cards[0][0], "revoked": main.cards[1][0], "redeemed": main.cards[2][0],
               "unknown": "0000-0000-0000-0000-0", "malformed": "not-a-serial", "unanchored": lost.cards[0][0],
               "chain_down": main.cards[3][0]}
    return world, serials


def _ready(text: str) -> str:
    """A page is drawn once its body shows ``text`` (Swagger UI draws the spec's title after loading it)."""
    return f"document.body && document.body.innerText.includes({json.dumps(text)})"


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    binary = _chromium()
    world, serials = _states_world()
    # Chain down: the same public database, read through an RPC URL where nothing listens.
    down_settings = world.settings.model_copy(update={"rpc_url": f"http://127.0.0.1:{free_port()}"})
    down_app = create_app(down_settings, deps=AppDeps(settings=down_settings, api=world.api_settings(),
                                                      sessions=world.public_sessions))
    supplier_app = create_supplier_app(world.settings, deps=ServiceDeps(
        settings=world.settings, sessions=world.sessions, master_key=world.master_key, registry=world.registry))
    try:
        with (LiveServer(world.app()) as service, LiveServer(down_app) as down,
              LiveServer(supplier_app) as supplier, RecordingProxy() as proxy):
            proxy.allowed = {urlsplit(u).netloc for u in (service.url, down.url, supplier.url)}
            got = Pages(set(proxy.allowed), {}, proxy)
            with browser(binary, proxy) as tools:
                for state, serial in serials.items():
                    url = f"{down.url if state == 'chain_down' else service.url}/c/{serial}"
                    for lang in LANGS:
                        got.loaded[(state, lang)] = Loaded(*tools.open(url, lang))
                for name, url, title in (("docs", f"{service.url}/docs", "cardproof verification API"),
                                         ("issuer-docs", f"{supplier.url}/docs", "cardproof issuer service")):
                    got.loaded[(name, "en")] = Loaded(*tools.open(url, "en", ready=_ready(title)))
            yield got
    finally:
        world.engine.dispose()
        world.public_engine.dispose()
        shutil.rmtree(world.home, ignore_errors=True)


def _text(lang: str, key: str) -> str:
    return json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8"))[key]


def _main_state(dom: str) -> str | None:
    found = re.search(r"<main\b[^>]*\bdata-state=\"([^\"]*)\"", dom)
    return found.group(1) if found else None


def foreign(requests: list[str], origins: set[str]) -> list[str]:
    """The requests that went anywhere but a service under test (data: and blob: URLs stay in the page)."""
    return [u for u in requests if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc not in origins]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("state", list(STATES))
def test_card_page_state_in_chromium(pages, state, lang):
    page = pages.loaded[(state, lang)]
    assert f'lang="{lang}"' in page.dom and f'dir="{"rtl" if lang == "ar" else "ltr"}"' in page.dom
    assert _text(lang, STATES[state]) in page.dom, f"the {state} page in {lang} lacks its heading"
    main_state = _main_state(page.dom)  # None: templates without it (then the heading alone tells)
    assert main_state in (state, None), f"the {state} page says data-state={main_state!r}"
    if state == "chain_down":
        assert _text(lang, "chain.unavailable") in page.dom  # the page says why it cannot confirm
    assert foreign(page.requests, pages.origins) == [], f"the {state} page in {lang} fetched from elsewhere"


@pytest.mark.parametrize("name, title, operation", [
    ("docs", "cardproof verification API", "/v1/cards/{serial}"),
    ("issuer-docs", "cardproof issuer service", "/v1/erp/"),
])
def test_docs_render_offline(pages, name, title, operation):
    """Swagger UI is drawn (the spec's title and operations) with every file from the service."""
    page = pages.loaded[(name, "en")]
    assert title in page.dom and operation in page.dom
    assert any(u.endswith("/openapi.json") for u in page.requests), page.requests  # the spec, fetched and drawn
    assert any("/static-offline-docs/" in u and u.endswith(".js") for u in page.requests), page.requests
    assert foreign(page.requests, pages.origins) == [], f"{name} fetched from elsewhere"


def test_redoc_is_off(pages):
    """ReDoc would fetch its logo from its vendor's CDN: no service serves it."""
    for origin in pages.origins:
        got = httpx.get(f"http://{origin}/redoc", timeout=10)
        assert got.status_code == 404 and "cdn" not in got.text


def test_no_page_fetched_anything_from_outside(pages):
    """The proxy saw the pages' requests (loopback went through it), and none of them left for another host."""
    served = [what for where, what, by_page in pages.proxy.seen if by_page and where in pages.origins]
    assert len(served) >= len(pages.loaded)
    assert pages.proxy.outside() == []


class _ExternalPage(http.server.BaseHTTPRequestHandler):
    PAGE = (b'<!doctype html><html><head><link rel="stylesheet" href="https://cdn.example.com/x.css"></head>'
            b'<body><img src="http://images.example.net:8080/x.png"><p id="here">here</p></body></html>')

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.PAGE)))
        self.end_headers()
        self.wfile.write(self.PAGE)


def test_the_detector_flags_an_external_fetch():
    """A page that loads a style sheet from a CDN (https) and an image from another host (http) is flagged by both
    detectors, and neither request leaves the machine."""
    binary = _chromium()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ExternalPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"127.0.0.1:{server.server_address[1]}"
    try:
        with RecordingProxy() as proxy:
            proxy.allowed = {origin}
            with browser(binary, proxy) as tools:
                dom, requests = tools.open(f"http://{origin}/", "en")
            assert 'id="here"' in dom
            assert set(foreign(requests, {origin})) == {"https://cdn.example.com/x.css",
                                                        "http://images.example.net:8080/x.png"}
            assert ("images.example.net:8080", "GET /x.png") in proxy.outside()
            assert ("cdn.example.com:443", "CONNECT") in proxy.outside(pages_only=False)
    finally:
        server.shutdown()
        server.server_close()
