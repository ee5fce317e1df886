"""The public pages' languages and serial form (verify_api/i18n.py, verify_api/routes/pages.py, templates):
Traditional Chinese for zh-TW / zh-Hant / zh-HK, Simplified for zh-CN / zh-Hans / zh; a language switch of plain
links on every page that keeps the page; a serial form at ``/`` that asks for the serial number only (never the
card's secret code: no 卡密 in its Chinese wording) and puts nothing typed into it into a URL unless it is a
serial."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest

from tests.api.world import World
from verify_api.i18n import LANGUAGES, LOCALES_DIR, choose, negotiate, translator

NINE = ("en", "zh-CN", "zh-TW", "es", "pt-BR", "id", "vi", "th", "ar")


def own(lang: str) -> dict[str, str]:
    return json.loads((LOCALES_DIR / f"{lang}.json").read_text(encoding="utf-8"))


def switch_links(html: str) -> list[tuple[str, str]]:
    nav = re.search(r'<nav class="langs" id="languages"[^>]*>(.*?)</nav>', html, re.S)
    assert nav is not None, "no language switch"
    return re.findall(r'<a href="([^"]+)" hreflang="([^"]+)"', nav.group(1))


# ---------------------------------------------------------------------------------------------- languages


def test_nine_languages_each_with_every_message():
    assert LANGUAGES == NINE and {p.stem for p in LOCALES_DIR.glob("*.json")} == set(NINE)
    keys = set(own("en"))
    for lang in NINE:
        messages = own(lang)
        assert keys - {"scans.one"} <= set(messages), (lang, keys - set(messages))
        for k in keys & set(messages):
            assert set(re.findall(r"\{(\w+)\}", messages[k])) == set(re.findall(r"\{(\w+)\}", own("en")[k])), (lang, k)


@pytest.mark.parametrize("header,expected", [
    ("zh-TW", "zh-TW"), ("zh-Hant", "zh-TW"), ("zh-HK", "zh-TW"), ("zh-MO", "zh-TW"), ("zh-Hant-TW", "zh-TW"),
    ("zh-hk,zh;q=0.8", "zh-TW"), ("fr-FR,zh-TW;q=0.5", "zh-TW"),
    ("zh-CN", "zh-CN"), ("zh-Hans", "zh-CN"), ("zh", "zh-CN"), ("zh-SG", "zh-CN"), ("zh-Hans-HK", "zh-CN"),
    ("en-US,zh-TW;q=0.9", "en"), ("ar-EG", "ar"), ("fr", "en"),
])
def test_accept_language_picks_the_chinese_script(header, expected):
    assert negotiate(header) == expected


def test_lang_parameter_wins_over_accept_language():
    assert choose("zh-tw", "en") == "zh-TW" and choose("AR", "zh-CN") == "ar"
    assert choose("klingon", "es") == "es" and choose("", None) == "en" and choose("x" * 5000, "th") == "th"


@pytest.mark.parametrize("header", ["zh-TW", "zh-Hant", "zh-HK"])
def test_traditional_chinese_is_served(api, world: World, header):
    serial, _ = world.card()
    r = api.get(f"/c/{serial}", headers={"Accept-Language": header})
    assert r.status_code == 200 and '<html lang="zh-TW" dir="ltr">' in r.text
    assert "正品" in r.text and "發行商" in r.text and "區塊鏈紀錄" in r.text  # Traditional characters
    assert "发行方" not in r.text and "区块链记录" not in r.text  # not Simplified
    assert translator("zh-TW").money(2500, "USD") in r.text


def test_simplified_chinese_stays(api, world: World):
    serial, _ = world.card()
    r = api.get(f"/c/{serial}", headers={"Accept-Language": "zh-Hans"})
    assert '<html lang="zh-CN" dir="ltr">' in r.text and "发行方" in r.text and "發行商" not in r.text


# ---------------------------------------------------------------------------------------------- the switch


def _pages(serial: str) -> list[tuple[str, int]]:
    return [("/", 200), ("/c", 200), (f"/c/{serial}", 200), ("/c/not-a-serial", 422), ("/o/nope", 422)]


def test_every_page_has_a_language_switch_that_keeps_the_page(api, world: World):
    serial, _ = world.card()
    for path, status in _pages(serial):
        r = api.get(path, headers={"Accept-Language": "es"})
        assert r.status_code == status, (path, r.text[:300])
        links = switch_links(r.text)
        assert [code for _href, code in links] == list(NINE), path
        for href, code in links:
            assert href == f"{path}?lang={code}", (path, href)
        current = re.findall(r'<a [^>]*aria-current="page"[^>]*>', r.text)
        assert len(current) == 1 and 'hreflang="es"' in current[0], path
        assert "<script>" not in r.text  # no script needed for the switch
    # Following a link: the same page, in the language chosen, whatever Accept-Language says.
    href = dict((code, href) for href, code in switch_links(api.get(f"/c/{serial}").text))["zh-TW"]
    r = api.get(href, headers={"Accept-Language": "en-US"})
    assert r.status_code == 200 and '<html lang="zh-TW"' in r.text and serial in r.text and "發行商" in r.text
    assert 'hreflang="zh-TW" lang="zh-TW" aria-current="page"' in r.text
    ar = api.get(f"/c/{serial}?lang=ar")
    assert '<html lang="ar" dir="rtl">' in ar.text
    fallback = api.get(f"/c/{serial}?lang=xx-YY", headers={"Accept-Language": "vi"})
    assert fallback.status_code == 200 and '<html lang="vi"' in fallback.text


# ---------------------------------------------------------------------------------------------- the form


@pytest.mark.parametrize("lang", NINE)
def test_root_serves_the_serial_form(api, lang):
    r = api.get("/", headers={"Accept-Language": lang})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'data-state="form"' in r.text
    messages = own(lang)
    form = re.search(r"<form\b[^>]*>(.*?)</form>", r.text, re.S)
    tag = re.search(r"<form\b[^>]*>", r.text).group(0)
    assert 'method="post"' in tag and 'action="/c"' in tag
    inputs = re.findall(r"<input\b[^>]*>", form.group(1))
    names = sorted(re.search(r'name="(\w+)"', i).group(1) for i in inputs)
    assert names == ["lang", "serial"]
    assert f'<label for="s">{messages["serial"]}</label>' in form.group(1)
    button = re.search(r"<button\b[^>]*>(.*?)</button>", form.group(1)).group(1)
    assert button == messages["form.button"] and messages["form.title"] in r.text
    # Nothing on the serial form asks for the code: its button and heading name the serial number.
    for text in (button, messages["form.title"], messages["serial"]):
        assert "卡密" not in text and messages["codecheck.code"] not in text


@pytest.mark.parametrize("lang", ["zh-CN", "zh-TW"])
def test_chinese_serial_form_never_says_kami(api, lang):
    for path in ("/", "/c", "/c/not-a-serial"):
        r = api.get(path, headers={"Accept-Language": lang})
        assert "卡密" not in r.text, path
    assert "序列号查验" in api.get("/", headers={"Accept-Language": "zh-CN"}).text


def test_form_posts_a_serial_to_its_page(api, world: World):
    serial, _ = world.card()
    typed = serial.replace("-", "").lower()
    r = api.post("/c", data={"serial": f"  {typed} ", "lang": "th"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/c/{serial}?lang=th"
    page = api.get(r.headers["location"])
    assert '<html lang="th"' in page.text and 'data-verdict="authentic"' in page.text
    r = api.post("/c", data={"serial": serial}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/c/{serial}"
    empty = api.post("/c", data={"serial": " "}, follow_redirects=False)
    assert empty.status_code == 200 and 'data-state="form"' in empty.text


@pytest.mark.parametrize("how", ["post", "get"])
def test_a_code_typed_into_the_serial_field_goes_into_no_url(api, world: World, how):
    _serial, code = world.card()
    if how == "post":
        r = api.post("/c", data={"serial": code, "lang": "es"}, follow_redirects=False)
    else:
        r = api.get("/c", params={"serial": code}, headers={"Accept-Language": "es"}, follow_redirects=False)
    assert r.status_code == 422 and "location" not in r.headers
    assert code not in r.text and code.lower() not in r.text.lower()
    assert 'data-state="malformed"' in r.text and 'lang="es"' in r.text
    for href, _code in switch_links(r.text):
        assert code not in href and urlsplit(href).path == "/c"


def test_oversized_form_body_is_refused_without_echo(api):
    r = api.post("/c", content=b"serial=" + b"A" * 5000, headers={"content-type": "application/x-www-form-urlencoded"},
                 follow_redirects=False)
    assert r.status_code == 422 and "AAAA" not in r.text
