"""The card page's in-browser code check, without a browser.

* Known answers: the pure functions of ``verify_api/static/codecheck.js`` (``parseOpening``, ``canonicalCode``,
  ``commitment``, ``opens``), run under node 20 (its WebCrypto is the browser's API), give what the Python
  reference ``issuer/core/commitment.py`` gives, on hand-picked vectors (both code forms, white space Python
  strips and JavaScript's ``trim`` does not, aliases, dashes, spaces and case in openings, hex openings, bad
  input) and on a few hundred seeded random ones.
* The module sends nothing: it uses no network, storage, cookie or URL API.
* The page: the form (no action, no field names, autocomplete off, hidden until the script runs) and the
  module script appear only for a known version-2 leaf, in every language, under a policy that lets the
  page's own script run and nothing connect or submit.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from issuer.core.commitment import (
    canonical_code,
    code_commitment,
    derive_opening,
    format_opening,
    opens,
    parse_opening,
)
from issuer.core.errors import InvalidCode, InvalidKey
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "verify_api" / "static" / "codecheck.js"
KEYS = ("codecheck", "codecheck.private", "codecheck.code", "codecheck.opening", "codecheck.opening.hint",
        "codecheck.button", "codecheck.match", "codecheck.mismatch", "codecheck.bad_opening", "codecheck.empty",
        "codecheck.unavailable", "codecheck.error", "codecheck.nojs")

# Runs every vector through the module; one JSON line out. Errors are "!" + the CodeCheckError kind.
RUNNER = r"""
import * as cc from %(module)s;
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const vectors = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const err = (e) => { if (!(e instanceof cc.CodeCheckError)) throw e; return "!" + e.kind; };
const out = [];
for (const v of vectors) {
  const r = {};
  let opening = null, canonOk = false;
  try { opening = cc.parseOpening(v.opening); r.opening = cc.toHex(opening); } catch (e) { r.opening = err(e); }
  try { r.canon = cc.toHex(cc.canonicalCode(v.code, v.form)); canonOk = true; } catch (e) { r.canon = err(e); }
  r.commitment = opening && canonOk ? cc.toHex(await cc.commitment(opening, v.code, v.form)) : null;
  try { r.opens = await cc.opens(v.code, v.opening, v.form, v.commitment); } catch (e) { r.opens = err(e); }
  out.push(r);
}
process.stdout.write(JSON.stringify(out));
"""


def _node() -> str:
    found = shutil.which("node")
    if not found:
        pytest.skip("node is not installed")
    return found


def run_module(tmp_path: Path, source: str, stdin: str = "") -> str:
    """Run ``source`` (an ES module) with the code check imported from a copy of codecheck.js (.mjs: node
    then takes it as a module without a package.json that says so)."""
    copy = tmp_path / "codecheck.mjs"
    copy.write_bytes(MODULE.read_bytes())
    script = source.replace("%(module)s", json.dumps(copy.as_uri()))
    res = subprocess.run([_node(), "--input-type=module", "-e", script], input=stdin, capture_output=True,
                         text=True, encoding="utf-8", timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def python_answer(v: dict) -> dict:
    r: dict = {}
    try:
        opening = parse_opening(v["opening"])
        r["opening"] = opening.hex()
    except InvalidKey:
        opening, r["opening"] = None, "!opening"
    try:
        r["canon"] = canonical_code(v["code"], v["form"]).hex()
    except InvalidCode as exc:
        r["canon"] = "!" + exc.reason
    except UnicodeEncodeError:
        r["canon"] = "!encoding"
    ok = not r["canon"].startswith("!")
    r["commitment"] = code_commitment(opening, v["code"], v["form"]).hex() if opening is not None and ok else None
    try:
        r["opens"] = opens(v["code"], parse_opening(v["opening"]), v["form"], bytes.fromhex(v["commitment"][2:]))
    except InvalidKey:
        r["opens"] = "!opening"
    except UnicodeEncodeError:
        r["opens"] = False  # Python raises; the module says "no match" (a browser field holds no lone surrogate)
    return r


KEY = bytes(range(32))
OPENINGS = [derive_opening(KEY, i) for i in range(4)]
ALIASED = "0123-4567-89AB-CDEF-GHJK-MNPQ-RS"  # has a 0 and a 1 to alias
ALIASED_BYTES = parse_opening(ALIASED)
CODES = [
    "ACME-1234-XYZ", "  acme 1234\txyz-\n", "\u3000code\u3000", "\ufeffcode", "\x1ccode\x85", "code\u2028",
    "straße", "ﬁx-ǰ", "ıi", "卡密-一二三", "😀 emoji-code", "0123456789", "a\u00a0b", "a - b", "-- -", "", " \t\n ",
    "\ud800x",
]


def hand_picked() -> list[dict]:
    op = format_opening(OPENINGS[0])
    openings = [
        op, op.lower(), op.replace("-", " "), op.replace("-", ""), f"\u3000 {op}\t\n", op.replace("-", "\t"),
        "0x" + OPENINGS[1].hex(), OPENINGS[1].hex().upper(), "0X" + OPENINGS[1].hex(),
        ALIASED, "OI23-4567-89ab-cdef-ghjk-mnpq-rs", "ol23 4567 89AB CDEF GHJK MNPQ RS", "oL23456789abcdefghjkmnpqrs",
        "ıi23-4567-89AB-CDEF-GHJK-MNPQ-RS",
        "7ZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZ", "8000-0000-0000-0000-0000-0000-00", "0000-0000-0000-0000-0000-0000-00",
        op[:-1], op + "0", op[:5] + "U" + op[6:], op[:5] + "*" + op[6:], "", "   ", op[:20] + "\n" + op[20:],
        "0x" + OPENINGS[1].hex()[:-2], OPENINGS[1].hex() + "00", "0x0x" + OPENINGS[1].hex()[:-4],
    ]
    vectors = []
    for i, code in enumerate(CODES):
        for form in (CODE_FORM_EXACT, CODE_FORM_FOLDED):
            opening = openings[(2 * i + form) % len(openings)]
            vectors.append({"code": code, "opening": opening, "form": form})
    for opening in openings:
        vectors.append({"code": "ACME-1234-XYZ", "opening": opening, "form": CODE_FORM_FOLDED})
    vectors.append({"code": "ACME", "opening": op, "form": 2})
    # The commitment each vector is checked against by opens(): its own (a match) where there is one, else
    # another card's; and a few that differ in one thing only.
    for v in vectors:
        v["commitment"] = "0x" + code_commitment(OPENINGS[2], "OTHER", CODE_FORM_EXACT).hex()
        try:
            v["commitment"] = "0x" + code_commitment(parse_opening(v["opening"]), v["code"], v["form"]).hex()
        except (InvalidKey, InvalidCode, UnicodeEncodeError):
            pass
    right = code_commitment(OPENINGS[0], "acme-1234", CODE_FORM_FOLDED)
    for code, opening, form in [("ACME 1234", op, CODE_FORM_FOLDED), ("ACME-1235", op, CODE_FORM_FOLDED),
                                ("acme-1234", op, CODE_FORM_EXACT), ("acme-1234", format_opening(OPENINGS[1]),
                                                                     CODE_FORM_FOLDED)]:
        vectors.append({"code": code, "opening": opening, "form": form, "commitment": "0x" + right.hex()})
    return vectors


def random_vectors(n: int, seed: int = 20240) -> list[dict]:
    rnd = random.Random(seed)
    pieces = list("aAbBzZ01IiLlOoUu89-_ \t\n") + ["\u3000", "\ufeff", "\x85", "\x1c", "ß", "ﬁ", "ı", "卡", "😀",
                                                  "\u00a0", "é", "Σ", "ς"]
    out = []
    for _ in range(n):
        form = rnd.choice((CODE_FORM_EXACT, CODE_FORM_FOLDED))
        code = "".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 14)))
        opening = format_opening(rnd.randbytes(16))
        for _ in range(rnd.randrange(0, 4)):
            k = rnd.randrange(len(opening) + 1)
            what = rnd.randrange(6)
            if what == 0:
                opening = opening.lower()
            elif what == 1:
                opening = opening[:k] + rnd.choice(["-", " ", "\t", "\u3000", "\n"]) + opening[k:]
            elif what == 2:
                opening = opening.replace("1", rnd.choice("IiLl")).replace("0", rnd.choice("Oo"))
            elif what == 3 and k < len(opening):
                opening = opening[:k] + opening[k + 1:]
            elif what == 4:
                opening = opening[:k] + rnd.choice("0189ZUu*ı") + opening[k:]
            else:
                opening = rnd.choice([" ", "\t", "\x85", "\ufeff", ""]) + opening + rnd.choice([" ", "\n", ""])
        v = {"code": code, "opening": opening, "form": form,
             "commitment": "0x" + code_commitment(rnd.randbytes(16), "x", CODE_FORM_EXACT).hex()}
        if rnd.random() < 0.5:
            try:
                v["commitment"] = "0x" + code_commitment(parse_opening(opening), code, form).hex()
            except (InvalidKey, InvalidCode, UnicodeEncodeError):
                pass
        out.append(v)
    return out


def compare(tmp_path: Path, vectors: list[dict]) -> list[dict]:
    got = json.loads(run_module(tmp_path, RUNNER, json.dumps(vectors)))
    assert len(got) == len(vectors)
    for v, js in zip(vectors, got, strict=True):
        assert js == python_answer(v), v
    return got


def test_known_answer(tmp_path):
    """One answer written down: if the reference and the module ever change together, this still fails."""
    opening = "0123-4567-89ab-cdef-ghjk-mnpq-rs"
    assert parse_opening(opening).hex() == "0110c8531d0952d8d73e1194e95b5f19"
    expected = "151ac26383fc37635215560d0568e4497ddedccaaaaa01fecd5cae4c0b881083"
    assert code_commitment(parse_opening(opening), " ab-c d ", CODE_FORM_FOLDED).hex() == expected
    got = compare(tmp_path, [{"code": " ab-c d ", "opening": opening, "form": CODE_FORM_FOLDED,
                              "commitment": "0x" + expected}])
    assert got[0]["commitment"] == expected and got[0]["opens"] is True
    assert got[0]["canon"] == b"ABCD".hex()


def test_hand_picked_vectors_match_python(tmp_path):
    vectors = hand_picked()
    got = compare(tmp_path, vectors)
    # The vectors reach every branch: matches and mismatches, good and bad openings, each code error.
    assert {r["opens"] for r in got} >= {True, False, "!opening"}
    assert {r["canon"] for r in got if r["canon"].startswith("!")} == {"!empty", "!form", "!encoding"}
    assert sum(not r["opening"].startswith("!") for r in got) > 20
    by_text = {v["opening"]: r["opening"] for v, r in zip(vectors, got, strict=True)}
    assert by_text["OI23-4567-89ab-cdef-ghjk-mnpq-rs"] == ALIASED_BYTES.hex()
    assert by_text["ol23 4567 89AB CDEF GHJK MNPQ RS"] == ALIASED_BYTES.hex()
    assert by_text["8000-0000-0000-0000-0000-0000-00"] == "!opening"


def test_random_vectors_match_python(tmp_path):
    vectors = random_vectors(600)
    got = compare(tmp_path, vectors)
    assert sum(r["opens"] is True for r in got) > 50 and sum(r["opening"].startswith("!") for r in got) > 50


def test_without_webcrypto_the_module_says_so(tmp_path):
    out = run_module(tmp_path, r"""
import * as cc from %(module)s;
const r = {};
r.none = cc.webCrypto({}) === null && cc.webCrypto({crypto: {}}) === null;
r.some = cc.webCrypto(globalThis) !== null;
try { await cc.commitment(new Uint8Array(16), "code", 0, null); r.kind = "none"; }
catch (e) { r.kind = e instanceof cc.CodeCheckError ? e.kind : String(e); }
try { await cc.opens("code", "0000-0000-0000-0000-0000-0000-00", 0, "0x" + "00".repeat(32), null); r.opens = "none"; }
catch (e) { r.opens = e.kind; }
process.stdout.write(JSON.stringify(r));
""")
    assert json.loads(out) == {"none": True, "some": True, "kind": "unavailable", "opens": "unavailable"}


def test_importing_the_module_outside_a_page_does_nothing(tmp_path):
    # Under node there is no document: importing only defines the functions (the DOM wiring stays apart).
    out = run_module(tmp_path, 'import * as cc from %(module)s; process.stdout.write(Object.keys(cc).sort().join(","));')
    assert {"parseOpening", "canonicalCode", "commitment", "opens", "attach"} <= set(out.split(","))


def test_module_uses_no_network_storage_or_url_api():
    src = MODULE.read_text(encoding="utf-8")
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)  # comments may name what is not used
    code = "\n".join(line.split("//")[0] for line in src.splitlines())
    for api in ("fetch", "XMLHttpRequest", "sendBeacon", "WebSocket", "EventSource", "localStorage",
                "sessionStorage", "indexedDB", "cookie", "location", "history", "postMessage", "import(",
                "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval", "Function(", "src", "href",
                "action", "submit()", "requestSubmit", "caches", "serviceWorker", "open("):
        assert api not in code, api
    assert "preventDefault()" in code


# ---------------------------------------------------------------------------------------------------- page

def answer(leaf: dict | None, verdict: str = "authentic") -> dict:
    """A card answer with the keys the page reads (the shape of GET /v1/cards/{serial})."""
    known = leaf is not None
    address = "0x" + "ab" * 20 if known else None
    return {
        "serial": "0123-4567-89AB-CDEF-G", "verdict": verdict, "reason": None, "checked_at": "2026-01-02T03:04:05Z",
        "chain": {"state": "live", "last_block": 42},
        "issuer": {"address": address, "name": "Acme" if known else None, "has_role": True if known else None},
        "product": {"sku": "GC-25" if known else None, "face_value": 2500 if known else None,
                    "currency": "USD" if known else None, "expiry": 0 if known else None},
        "batch": {"id": "0x" + "cd" * 32 if known else None, "card_count": 10 if known else None, "root": None,
                  "anchored_root": None, "anchor_tx": None, "anchor_block": None, "anchored_at": None,
                  "chain_id": None, "registry": None},
        "proof": {"leaf": leaf if known else {}},
        "fraud": {"signal": "none", "scans": 0, "first_scan_at": None},
        "links": {"self": "/v1/cards/0123-4567-89AB-CDEF-G", "page": "http://cards.test/c/0123-4567-89AB-CDEF-G",
                  "anchor_tx": None},
    }


COMMITMENT = "0x" + code_commitment(OPENINGS[0], "ACME-1", CODE_FORM_FOLDED).hex()
LEAF = {"version": "2", "codeForm": "1", "codeCommitment": COMMITMENT}


def _render(v: dict, lang: str = "en"):
    from verify_api.routes.pages import render_card

    return render_card(v, lang, None)


@pytest.mark.parametrize("lang", ["en", "zh-CN", "zh-TW", "es", "pt-BR", "id", "vi", "th", "ar"])
def test_page_has_the_form_in_every_language(lang):
    from verify_api.i18n import LANGUAGES, LOCALES_DIR

    assert lang in LANGUAGES and set(LANGUAGES) == {p.stem for p in LOCALES_DIR.glob("*.json")}
    resp = _render(answer(LEAF), lang)
    html = resp.body.decode()
    own = json.loads((LOCALES_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    en = json.loads((LOCALES_DIR / "en.json").read_text(encoding="utf-8"))
    for key in KEYS:
        assert own.get(key) and (lang == "en" or own[key] != en[key] or key == "codecheck.opening.hint"), key
        assert own[key] in html.replace("&#39;", "'"), key
    form = re.search(r"<form\b[^>]*>", html).group(0)
    assert "data-codecheck" in form and " hidden" in form and 'autocomplete="off"' in form
    assert "action=" not in form and "method=" not in form
    assert f'data-commitment="{COMMITMENT}"' in form and 'data-code-form="1"' in form
    inputs = re.findall(r"<input\b[^>]*>", html)
    assert len(inputs) == 2
    for tag in inputs:
        assert "name=" not in tag and 'autocomplete="off"' in tag and 'spellcheck="false"' in tag
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == [f'<script type="module" src="/static/codecheck.js?v={scripts[0].split("?v=")[1][:16]}">']
    assert "<script>" not in html and not re.search(r"\son[a-z]+\s*=", html)  # no inline script or handler
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "form-action 'none'" in csp
    # connect-src and img-src fall back to default-src 'none': nothing on the page can reach a server
    assert "connect-src" not in csp and "img-src" not in csp
    assert ("dir=\"rtl\"" in html) == (lang == "ar")


@pytest.mark.parametrize("leaf", [None, {"version": "1", "codeForm": "0", "codeCommitment": COMMITMENT},
                                  {"version": "2", "codeForm": "7", "codeCommitment": COMMITMENT},
                                  {"version": "2", "codeForm": "0", "codeCommitment": "0x1234"},
                                  {"version": "2", "codeForm": "0", "codeCommitment": None}])
def test_no_form_without_a_leaf_the_script_knows(leaf):
    html = _render(answer(leaf, "authentic" if leaf else "unknown")).body.decode()
    assert "data-codecheck" not in html and "<script" not in html


def test_the_script_is_served_by_the_app():
    import warnings

    from verify_api.app import create_app
    from verify_api.routes.pages import static_url

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    client = TestClient(create_app())  # no lifespan: only the static mount is used
    r = client.get(static_url("codecheck.js"))
    assert r.status_code == 200 and r.content == MODULE.read_bytes()
    assert r.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert client.get("/static/nothing.js").status_code == 404
