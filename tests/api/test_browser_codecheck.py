"""The card page checks a typed code in headless Chromium, and the code is never sent to any server.

Chromium is driven over the DevTools protocol (one websocket, ``websockets``' sync client). Every request it
makes goes through a logging HTTP proxy run by the test (``--proxy-server`` with ``<-loopback>``, so loopback
too), which forwards only the live server's own host and refuses all others (they are logged all the same);
the page's Network events are logged as well. Chromium itself may still try hosts of its own (update, time,
autofill form-type queries over HTTPS): plain requests are logged with their bodies and answered 502, CONNECT
tunnels are logged and refused, so no byte of theirs leaves the machine either. The test types a card's real code and opening into the form
(``Input.insertText``, as a keyboard or IME does), clicks the button, sees the match message, then types a
wrong code and a wrong opening and sees the mismatch message; no logged URL, header or body holds the code
or the opening in any spelling. Then: the page on a non-secure origin says WebCrypto is missing, and
without JavaScript the page still gives its verdict and shows no form.

Screenshots of both answers: $TMPDIR/cardproof-screenshots/codecheck-{match,mismatch,both}.png.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import pytest

from issuer.core.commitment import parse_opening
from tests.api.test_browser import FLAGS, SHOTS, _chromium, non_white_fraction, png_size

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 390, 1500


# ------------------------------------------------------------------------------------------ logging proxy

@dataclass
class Logged:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def host(self) -> str:
        if self.method == "CONNECT":
            return self.target
        return urlsplit(self.target).netloc

    def raw(self) -> bytes:
        head = f"{self.method} {self.target}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers)
        return head.encode("utf-8", "surrogateescape") + b"\r\n" + self.body


@dataclass
class ProxyLog:
    upstream: tuple[str, int]
    hosts: set[str]  # host:port forwarded to upstream; anything else is refused
    requests: list[Logged] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: _ProxyServer

    def _read_head(self) -> tuple[str, str, list[tuple[str, str]]] | None:
        line = self.rfile.readline(65537)
        if not line or not line.strip():
            return None
        method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers = []
        while True:
            h = self.rfile.readline(65537).decode("latin-1").rstrip("\r\n")
            if not h:
                break
            k, _, v = h.partition(":")
            headers.append((k.strip(), v.strip()))
        return method, target, headers

    def _read_body(self, headers: list[tuple[str, str]]) -> bytes:
        h = {k.lower(): v for k, v in headers}
        if "chunked" in h.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(h.get("content-length", "0") or 0))

    def _reply(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, close: bool) -> None:
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        head += f"Content-Length: {len(body)}\r\nConnection: {'close' if close else 'keep-alive'}\r\n\r\n"
        self.wfile.write(head.encode("latin-1") + body)
        self.wfile.flush()

    def handle(self) -> None:
        log = self.server.log
        while True:
            try:
                head = self._read_head()
            except (OSError, ValueError):
                return
            if head is None:
                return
            method, target, headers = head
            body = self._read_body(headers)
            entry = Logged(method, target, headers, body)
            with log.lock:
                log.requests.append(entry)
            if method == "CONNECT" or entry.host not in log.hosts:
                self._reply(403 if method == "CONNECT" else 502, "Refused by the test proxy", [], b"",
                            close=method == "CONNECT")
                if method == "CONNECT":
                    return
                continue
            parts = urlsplit(target)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            skip = {"proxy-connection", "connection", "keep-alive", "transfer-encoding", "content-length"}
            conn = http.client.HTTPConnection(*log.upstream, timeout=30)
            try:
                conn.request(method, path, body=body or None,
                             headers={k: v for k, v in headers if k.lower() not in skip})
                resp = conn.getresponse()
                data = resp.read()
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in skip]
                self._reply(resp.status, resp.reason, out, data, close=False)
            finally:
                conn.close()


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, log: ProxyLog) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.log = log


@contextlib.contextmanager
def logging_proxy(upstream_port: int, *aliases: str) -> Iterator[tuple[int, ProxyLog]]:
    log = ProxyLog(("127.0.0.1", upstream_port), {f"127.0.0.1:{upstream_port}", *aliases})
    server = _ProxyServer(log)
    thread = threading.Thread(target=server.serve_forever, name="codecheck-proxy", daemon=True)
    thread.start()
    try:
        yield server.server_address[1], log
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------- DevTools protocol

class CDPError(RuntimeError):
    pass


class CDP:
    """A minimal flat-session DevTools client over one websocket."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, max_size=None, open_timeout=20))
        self._id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        self._stack.close()

    def _recv(self, timeout: float) -> dict:
        return json.loads(self.ws.recv(timeout=max(timeout, 0.01)))

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            m = self._recv(deadline - time.monotonic())
            if m.get("id") == self._id:
                if "error" in m:
                    raise CDPError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def pump(self, seconds: float) -> None:
        """Collect events for a while."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self.events.append(self._recv(left))
            except TimeoutError:
                return

    def wait_event(self, method: str, session: str, timeout: float = 30, start: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.events):
                e = self.events[i]
                i += 1
                if e.get("method") == method and e.get("sessionId") == session:
                    return e
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} within {timeout}s")
            try:
                self.events.append(self._recv(left))
            except TimeoutError:
                continue


@dataclass
class Page:
    cdp: CDP
    session: str

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.cdp.send(method, params, self.session)

    def js(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise CDPError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def goto(self, url: str) -> None:
        mark = len(self.cdp.events)
        self.call("Page.navigate", {"url": url})
        self.cdp.wait_event("Page.loadEventFired", self.session, start=mark)

    def wait(self, expression: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout}s: {expression}")
            self.cdp.pump(0.05)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the field, select what it holds and type ``text`` over it, as a person would."""
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.js(f"document.querySelector({json.dumps(selector)}).select()")
        if text:
            self.call("Input.insertText", {"text": text})
        else:
            self.call("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Backspace", "code": "Backspace",
                                                 "windowsVirtualKeyCode": 8})
            self.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Backspace", "code": "Backspace",
                                                 "windowsVirtualKeyCode": 8})

    def click(self, selector: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                      f" return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def screenshot(self, path: Path) -> None:
        self.js("window.scrollTo(0, 0)")
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path.write_bytes(base64.b64decode(data))

    def shown(self) -> list[str]:
        """The result messages now visible."""
        return self.js("Array.from(document.querySelectorAll('[data-cc-msg]'))"
                       ".filter(m => !m.hidden && m.getClientRects().length > 0).map(m => m.dataset.ccMsg)")


@contextlib.contextmanager
def browser(binary: str, proxy_port: int, *extra: str, lang: str = "en-US") -> Iterator[Page]:
    """Headless Chromium whose every request goes through the proxy; yields its one page, attached."""
    with tempfile.TemporaryDirectory(prefix="cardproof-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
               f"--proxy-server=http://127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>",
               f"--window-size={WIDTH},{HEIGHT}", "--force-device-scale-factor=1", f"--lang={lang}",
               f"--accept-lang={lang}", *extra, "about:blank"]
        err = Path(profile) / "stderr.txt"
        with err.open("wb") as errf:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf)
        cdp = None
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("chromium did not start: " + err.read_text(errors="replace")[-2000:])
                time.sleep(0.05)
            port, path = port_file.read_text().splitlines()[:2]
            cdp = CDP(f"ws://127.0.0.1:{port}{path}")
            targets = cdp.send("Target.getTargets")["targetInfos"]
            target = next(t["targetId"] for t in targets if t["type"] == "page")
            session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            page = Page(cdp, session)
            for domain in ("Page", "Runtime", "Network", "Log"):
                page.call(f"{domain}.enable")
            page.call("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": HEIGHT,
                                                             "deviceScaleFactor": 1, "mobile": True})
            yield page
        finally:
            if cdp is not None:
                with contextlib.suppress(Exception):
                    cdp.send("Browser.close", timeout=5)
                cdp.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def page_requests(cdp: CDP) -> list[dict]:
    """What the page's Network events say it sent: URL, headers, body."""
    out = []
    for e in cdp.events:
        if e.get("method") == "Network.requestWillBeSent":
            r = e["params"]["request"]
            out.append({"url": r["url"], "headers": r.get("headers", {}), "body": r.get("postData", ""),
                        "entries": r.get("postDataEntries", [])})
        elif e.get("method") == "Network.requestWillBeSentExtraInfo":
            out.append({"url": "", "headers": e["params"].get("headers", {}), "body": ""})
    return out


def spellings(secret: str) -> set[str]:
    """How a secret could show up in a request: as typed, URL-encoded, without separators, in hex or base64."""
    bare = "".join(c for c in secret if c not in "- \t")
    forms = {secret, secret.lower(), secret.upper(), bare, bare.lower(), bare.upper(), quote(secret, safe=""),
             quote_plus(secret), json.dumps(secret)[1:-1], secret.encode().hex(),
             base64.b64encode(secret.encode()).decode().rstrip("=")}
    return {f for f in forms if len(f) >= 8}


def assert_never_sent(texts: list[str], secrets: list[str]) -> None:
    hay = "\n".join(texts).lower()
    for secret in secrets:
        for form in spellings(secret):
            assert form.lower() not in hay, f"a spelling of a secret was sent: {form[:3]}..."


# ------------------------------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


def test_code_check_in_the_browser_sends_nothing(chromium, live_server, world):
    serial, code = world.card("main")
    opening = world.opening(serial)
    parse_opening(opening)  # a real opening, in the form the holder gets it
    wrong_code = code[:-1] + ("0" if code[-1] != "0" else "1")
    wrong_opening = world.opening(world.batches["main"].cards[-1][0])
    typed_opening = " " + opening.lower().replace("-", " ") + " "  # as someone may type it
    url = f"{live_server.url}/c/{serial}"
    SHOTS.mkdir(parents=True, exist_ok=True)

    with logging_proxy(live_server.port) as (proxy_port, log), browser(chromium, proxy_port) as page:
        page.goto(url)
        assert page.wait("!document.querySelector('form[data-codecheck]').hidden")
        assert page.js("document.getElementById('verdict').dataset.verdict") == "authentic"
        assert page.shown() == []
        before = len(page_requests(page.cdp))

        page.type_into("#cc-code", code)
        page.type_into("#cc-opening", typed_opening)
        page.click("[data-cc-submit]")
        page.wait("document.querySelector('form[data-codecheck]').dataset.result === 'match'")
        assert page.shown() == ["match"]
        assert page.js("document.querySelector('[data-cc-msg=match]').textContent").strip().endswith(
            "This code and opening belong to this card.")
        assert page.js("location.href") == url  # nothing submitted: still the same page, no query string
        page.screenshot(SHOTS / "codecheck-match.png")

        page.type_into("#cc-code", wrong_code)
        assert page.shown() == []  # editing clears the last answer
        page.click("[data-cc-submit]")
        page.wait("document.querySelector('form[data-codecheck]').dataset.result === 'mismatch'")
        assert page.shown() == ["mismatch"]
        assert "They do not match" in page.js("document.querySelector('[data-cc-msg=mismatch]').textContent")
        page.screenshot(SHOTS / "codecheck-mismatch.png")

        # The right code with another card's opening does not match either; a malformed opening is named.
        page.type_into("#cc-code", code)
        page.type_into("#cc-opening", wrong_opening)
        page.js("document.querySelector('form[data-codecheck]').requestSubmit()")  # Enter in a field does this
        page.wait("document.querySelector('form[data-codecheck]').dataset.result === 'mismatch'")
        page.type_into("#cc-opening", opening[:-2])
        page.click("[data-cc-submit]")
        page.wait("document.querySelector('form[data-codecheck]').dataset.result === 'bad_opening'")
        page.type_into("#cc-opening", opening)
        page.type_into("#cc-code", "")
        page.click("[data-cc-submit]")
        page.wait("document.querySelector('form[data-codecheck]').dataset.result === 'empty'")
        page.type_into("#cc-code", code)
        page.click("[data-cc-submit]")
        page.wait("document.querySelector('form[data-codecheck]').dataset.result === 'match'")

        assert page.js("location.href") == url
        assert page.js("localStorage.length + sessionStorage.length") == 0 and page.js("document.cookie") == ""
        page.cdp.pump(1.0)  # let anything the page might still send arrive in the logs
        after = page_requests(page.cdp)[before:]
        assert [r["url"] for r in after if r["url"] and not r["url"].endswith("/favicon.ico")] == []
        events = page.cdp.events

    proxied = [r.raw().decode("utf-8", "replace") for r in log.requests]
    assert any(f"/c/{serial}" in r.target for r in log.requests)  # the proxy did see the browser's traffic
    assert any("/static/codecheck.js" in r.target for r in log.requests)
    network = [json.dumps(e, ensure_ascii=False) for e in events if e.get("method", "").startswith("Network.")]
    assert_never_sent(proxied + network, [code, wrong_code, opening, typed_opening.strip(), wrong_opening])
    # Only the page and its script went to the server (maybe a favicon); other hosts, if any, were refused.
    ours = [r for r in log.requests if r.host == f"127.0.0.1:{live_server.port}"]
    assert {urlsplit(r.target).path for r in ours} <= {f"/c/{serial}", "/static/codecheck.js", "/favicon.ico"}
    assert all(r.method == "GET" and not r.body for r in ours)
    console = [e["params"] for e in events if e.get("method") in ("Runtime.exceptionThrown", "Log.entryAdded")
               and "favicon" not in json.dumps(e)]
    assert not [c for c in console if c.get("entry", {}).get("level") == "error" or "exceptionDetails" in c]

    both = SHOTS / "codecheck-both.png"
    side_by_side(SHOTS / "codecheck-match.png", SHOTS / "codecheck-mismatch.png", both)
    for shot in (SHOTS / "codecheck-match.png", SHOTS / "codecheck-mismatch.png"):
        assert png_size(shot) == (WIDTH, HEIGHT) and 0.03 < non_white_fraction(shot) < 0.9


def side_by_side(left: Path, right: Path, out: Path) -> None:
    from PIL import Image

    a, b = Image.open(left), Image.open(right)
    img = Image.new("RGB", (a.width + b.width + 10, max(a.height, b.height)), "white")
    img.paste(a, (0, 0))
    img.paste(b, (a.width + 10, 0))
    img.save(out)


@pytest.mark.parametrize("lang, match", [("ar", "يخصّان هذه البطاقة"), ("th", "เป็นของบัตรใบนี้"),
                                         ("zh-CN", "属于这张卡")])
def test_code_check_in_other_languages(chromium, live_server, world, lang, match):
    serial, code = world.card("main")
    with logging_proxy(live_server.port) as (proxy_port, log), browser(chromium, proxy_port, lang=lang) as page:
        page.goto(f"{live_server.url}/c/{serial}")
        page.wait("!document.querySelector('form[data-codecheck]').hidden")
        page.type_into("#cc-code", code)
        page.type_into("#cc-opening", world.opening(serial))
        page.click("[data-cc-submit]")
        page.wait("document.querySelector('form[data-codecheck]').dataset.result === 'match'")
        assert match in page.js("document.querySelector('[data-cc-msg=match]').textContent")
        assert page.js("document.documentElement.dir") == ("rtl" if lang == "ar" else "ltr")
        if lang == "ar":
            page.screenshot(SHOTS / "codecheck-match-ar.png")
    assert_never_sent([r.raw().decode("utf-8", "replace") for r in log.requests], [code, world.opening(serial)])


def test_without_webcrypto_the_page_says_so(chromium, live_server, world):
    """Plain http on a host that is not loopback is no secure context: no crypto.subtle. The page says so
    (and disables the form) instead of failing silently."""
    serial, _code = world.card("main")
    host = f"cards.test:{live_server.port}"
    with logging_proxy(live_server.port, host) as (proxy_port, _log), browser(chromium, proxy_port) as page:
        page.goto(f"http://{host}/c/{serial}")
        assert page.js("window.isSecureContext") is False
        page.wait("document.querySelector('form[data-codecheck]').dataset.result === 'unavailable'")
        assert page.shown() == ["unavailable"]
        assert page.js("document.querySelector('[data-cc-submit]').disabled") is True
        assert "secure https connection" in page.js("document.querySelector('[data-cc-msg=unavailable]').textContent")


def test_without_javascript_the_page_still_works(chromium, live_server, world):
    serial, _code = world.card("main")
    with logging_proxy(live_server.port) as (proxy_port, log), browser(chromium, proxy_port) as page:
        page.call("Emulation.setScriptExecutionDisabled", {"value": True})
        page.goto(f"{live_server.url}/c/{serial}")
        page.call("Emulation.setScriptExecutionDisabled", {"value": False})  # to read the DOM below
        assert page.js("document.getElementById('verdict').dataset.verdict") == "authentic"
        assert page.js("document.querySelector('form[data-codecheck]').hidden") is True  # no form to misuse
        assert page.js("getComputedStyle(document.querySelector('form[data-codecheck]')).display") == "none"
        assert "Turn on JavaScript" in page.js("document.querySelector('#codecheck noscript').textContent")
