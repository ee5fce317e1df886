"""Languages of the QR landing page: Accept-Language negotiation, messages, Babel formatting.

Supported: en, zh-CN (Simplified Chinese), zh-TW (Traditional Chinese), es, pt-BR, id, vi, th and ar (right to
left). Anything else is English. Chinese goes by script, then region: zh-Hant, zh-TW, zh-HK and zh-MO are
Traditional; zh-Hans, zh-CN, zh-SG and a bare zh are Simplified. A page's ``?lang=`` (its language switch) wins
over Accept-Language (:func:`choose`).
Messages live in ``verify_api/locales/<tag>.json``; numbers, amounts and dates are formatted by
Babel (CLDR) for the chosen locale. In right-to-left pages an amount is written "25.00 USD" (number, then ISO
code), which the templates isolate left to right (``<bdi dir="ltr">``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, get_currency_precision

__all__ = ["LANGUAGES", "DEFAULT", "RTL", "Translator", "choose", "negotiate", "translator"]

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
LANGUAGES = ("en", "zh-CN", "zh-TW", "es", "pt-BR", "id", "vi", "th", "ar")
DEFAULT = "en"
RTL = frozenset({"ar"})
#: Our tag -> Babel locale.
_BABEL = {"en": "en", "zh-CN": "zh_Hans_CN", "zh-TW": "zh_Hant_TW", "es": "es", "pt-BR": "pt_BR", "id": "id",
          "vi": "vi", "th": "th", "ar": "ar"}
#: Primary language subtag -> our tag (a region/script of a supported language maps to it).
_PRIMARY = {"en": "en", "zh": "zh-CN", "es": "es", "pt": "pt-BR", "id": "id", "in": "id", "vi": "vi", "th": "th",
            "ar": "ar"}
#: Chinese subtags (script or region, lower case) that mean Traditional characters.
_TRADITIONAL = frozenset({"hant", "tw", "hk", "mo"})
_BY_LOWER = {lang.lower(): lang for lang in LANGUAGES}
_RANGE = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$|^\*$")


@functools.lru_cache(maxsize=1024)
def negotiate(accept_language: str | None) -> str:
    """The best supported language for an Accept-Language header (RFC 9110 q-values), else English."""
    if not accept_language:
        return DEFAULT
    ranked: list[tuple[float, int, str]] = []
    for pos, part in enumerate(accept_language[:1000].split(",")[:32]):
        fields = [f.strip() for f in part.split(";")]
        tag = fields[0]
        if not tag or not _RANGE.match(tag):
            continue
        q = 1.0
        for f in fields[1:]:
            if f.lower().startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if q <= 0 or q > 1:
            continue
        ranked.append((-q, pos, tag))
    for _q, _pos, tag in sorted(ranked):
        if tag == "*":
            return DEFAULT
        lang = _language_of(tag)
        if lang is not None:
            return lang
    return DEFAULT


def _language_of(tag: str) -> str | None:
    """Our language for one language tag, or None."""
    parts = tag.lower().split("-")
    lang = _PRIMARY.get(parts[0])
    if lang == "zh-CN":
        for sub in parts[1:]:
            if sub in ("hans", "cn", "sg"):
                return "zh-CN"
            if sub in _TRADITIONAL:
                return "zh-TW"
    return lang


def choose(requested: str | None, accept_language: str | None) -> str:
    """The page's language: ``requested`` (a page's ``?lang=``, one of :data:`LANGUAGES`, any case) if
    supported, else :func:`negotiate` on Accept-Language."""
    if requested:
        lang = _BY_LOWER.get(requested.strip().lower()[:16])
        if lang is not None:
            return lang
    return negotiate(accept_language)


@functools.cache
def _messages(lang: str) -> dict[str, str]:
    data = json.loads((LOCALES_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    if lang != DEFAULT:
        return {**_messages(DEFAULT), **data}
    return data


@functools.cache
def _messages_own(lang: str) -> dict[str, str]:
    """The language's own messages (no English fallback): plural variants are per language."""
    return json.loads((LOCALES_DIR / f"{lang}.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Translator:
    lang: str

    @property
    def rtl(self) -> bool:
        return self.lang in RTL

    @property
    def dir(self) -> str:
        return "rtl" if self.rtl else "ltr"

    @property
    def locale(self) -> Locale:
        return _locale(self.lang)

    def t(self, key: str, **values: Any) -> str:
        text = _messages(self.lang).get(key, key)
        if values:
            try:
                return text.format(**values)
            except (KeyError, IndexError, ValueError):
                return text
        return text

    __call__ = t

    def plural(self, key: str, count: int, **values: Any) -> str:
        """``key.<CLDR plural category>`` for ``count`` (one, two, few, ...), else ``key``."""
        messages = _messages_own(self.lang)
        try:
            category = self.locale.plural_form(count)
        except Exception:  # noqa: BLE001
            category = "other"
        name = f"{key}.{category}" if f"{key}.{category}" in messages else key
        return self.t(name, count=self.number(count), **values)

    def number(self, value: int | None) -> str:
        return "" if value is None else format_decimal(value, locale=self.locale)

    def money(self, minor_units: int, currency: str) -> str:
        """A face value: "$25.00" in English; "25.00 USD" (number, then ISO code) in right-to-left pages, where
        CLDR's pattern would put a right-to-left mark and a symbol around the number."""
        try:
            digits = get_currency_precision(currency)
            value = Decimal(minor_units).scaleb(-digits)
            if self.rtl:
                return format_currency(value, currency, format="#,##0.00 ¤¤", locale="en", currency_digits=True)
            return format_currency(value, currency, locale=self.locale)
        except Exception:  # noqa: BLE001 - an odd currency must not break the page
            return f"{minor_units} {currency} (minor units)"

    def datetime(self, value: dt.datetime | int | None) -> str:
        if value is None or value == 0:
            return ""
        if isinstance(value, int):
            value = dt.datetime.fromtimestamp(value, dt.UTC)
        return format_datetime(value, format="medium", tzinfo=dt.UTC, locale=self.locale) + " UTC"

    def date(self, value: dt.datetime | int | None) -> str:
        if value is None or value == 0:
            return ""
        if isinstance(value, int):
            value = dt.datetime.fromtimestamp(value, dt.UTC)
        return format_date(value.astimezone(dt.UTC).date(), format="long", locale=self.locale)

    @property
    def language_name(self) -> str:
        return _messages(self.lang).get("_language", self.lang)


@functools.cache
def _locale(lang: str) -> Locale:
    return Locale.parse(_BABEL[lang])


@functools.cache
def translator(lang: str) -> Translator:
    return Translator(lang if lang in LANGUAGES else DEFAULT)
