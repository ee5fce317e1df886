"""The order page /o/{id} once the order is settled, and its language switch and test network banner
(verify_api/routes/orders.py, templates/order.html): a confirmed, released, resolved or refunded order shows its
total and when it settled, never "Total in escrow" or an open dispute window; amounts stay left to right in
Arabic. On the order API's eth-tester world (tests/orders/test_orders_api.py), built again for this module."""

from __future__ import annotations

import json
import re

import pytest

from tests.orders.test_orders_api import api, ow  # noqa: F401 - the order API's world and its client
from verify_api.i18n import LANGUAGES, LOCALES_DIR, translator

SETTLED = ("confirmed", "released", "resolved", "cancelled")


def own(lang: str) -> dict[str, str]:
    return json.loads((LOCALES_DIR / f"{lang}.json").read_text(encoding="utf-8"))


def details(html: str) -> str:
    return re.search(r"<h2>[^<]*</h2>\s*<dl>(.*?)</dl>", html, re.S).group(1)


@pytest.mark.parametrize("name", SETTLED)
def test_settled_order_is_not_in_escrow(api, ow, name):  # noqa: F811
    oid = ow.ids[name]
    body = api.get(f"/v1/orders/{oid}").json()
    assert body["status"] == name
    html = api.get(f"/o/{oid}", headers={"Accept-Language": "en"}).text
    assert 'data-state="' + name + '"' in html
    assert "Total in escrow" not in html and "Order total" in details(html)
    assert "Disputes possible until" not in html and 'id="dispute-window"' not in html
    settled = [s["time"] for s in body["timeline"] if s["step"] in ("confirmed", "released", "resolved", "refunded")]
    assert settled, body["timeline"]
    assert f'<dd id="settled-at">{translator("en").datetime(max(settled))}</dd>' in html
    zh = api.get(f"/o/{oid}", headers={"Accept-Language": "zh-CN"}).text
    assert own("zh-CN")["order.total"] not in zh and own("zh-CN")["order.total.settled"] in zh


@pytest.mark.parametrize("name", ["funded", "delivered"])
def test_open_order_is_in_escrow_with_its_window(api, ow, name):  # noqa: F811
    html = api.get(f"/o/{ow.ids[name]}", headers={"Accept-Language": "en"}).text
    assert "Total in escrow" in html and 'id="dispute-window"' in html and 'id="settled-at"' not in html
    if name == "delivered":
        assert "Disputes possible until" in html


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_language_says_the_settled_total(api, ow, lang):  # noqa: F811
    html = api.get(f"/o/{ow.ids['released']}?lang={lang}").text
    assert f'<html lang="{lang}"' in html
    assert own(lang)["order.total.settled"] in html and own(lang)["order.total"] not in html


def test_arabic_order_amounts_are_left_to_right(api, ow):  # noqa: F811
    html = api.get(f"/o/{ow.ids['confirmed']}", headers={"Accept-Language": "ar"}).text
    assert '<html lang="ar" dir="rtl">' in html
    total = re.search(r'<dd class="big" id="total">(.*?)</dd>', html).group(1)
    assert total == '<bdi dir="ltr">19.00 tUSD</bdi>'
    assert '<bdi dir="ltr">9.50 tUSD</bdi>' in html and '<bdi dir="ltr">1 %</bdi>' in html
    amounts = list(re.finditer(r"[\d,]+\.\d+ tUSD", html))
    assert len(amounts) >= 5
    for m in amounts:  # every amount on the page is isolated left to right
        assert html[:m.start()].endswith('<bdi dir="ltr">'), html[m.start() - 60:m.end()]


def test_order_page_switch_and_test_network(api, ow):  # noqa: F811
    oid = ow.ids["delivered"]
    html = api.get(f"/o/{oid}", headers={"Accept-Language": "pt-BR"}).text
    nav = re.search(r'<nav class="langs" id="languages"[^>]*>(.*?)</nav>', html, re.S).group(1)
    assert re.findall(r'href="([^"]+)"', nav) == [f"/o/{oid}?lang={lang}" for lang in LANGUAGES]
    chain_id = ow.admin.chain_id
    banner = re.search(r'<div class="note testnet" id="testnet" role="note">(.*?)</div>', html).group(1)
    assert str(chain_id) in banner and "Rede de teste" in banner
    tw = api.get(f"/o/{oid}?lang=zh-TW").text
    assert '<html lang="zh-TW"' in tw and "託管總額" in tw and "测试" not in tw and "測試網路" in tw
    missing = api.get("/o/999", headers={"Accept-Language": "es"})
    assert missing.status_code == 404 and 'data-state="unknown"' in missing.text
    assert re.findall(r'<a href="(/o/999\?lang=[^"]+)"', missing.text)
