"""The public URL that exported QR codes point to: ``{public_url}/c/{serial}``.

Printed cards live for years and travel to buyers: a QR code pointing at a loopback address (``127.0.0.1``,
``localhost``, ``::1``) reaches no buyer. Such a URL (the default ``CARDPROOF_PUBLIC_URL`` of a development set-up) is
refused for QR images unless the caller allows it explicitly, for a local test.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from issuer.errors import IssuerError


class PublicUrlError(IssuerError, ValueError):
    """The public URL for QR codes is missing, malformed, or a loopback address not allowed."""

    code = "public_url_error"


def card_url(public_url: str, serial: str) -> str:
    return f"{public_url.rstrip('/')}/c/{serial}"


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def qr_public_url(public_url: str | None, *, allow_loopback: bool = False) -> str:
    """``public_url`` without a trailing slash, checked: an http(s) URL with a host, not a loopback address unless
    ``allow_loopback``."""
    url = (public_url or "").strip()
    if not url:
        raise PublicUrlError("no public URL for the QR codes: pass --public-url URL or set CARDPROOF_PUBLIC_URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts is None or parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        raise PublicUrlError(f"the public URL for the QR codes must be an http(s) URL like https://verify.example, "
                             f"not {url[:100]!r}")
    if is_loopback_host(host) and not allow_loopback:
        raise PublicUrlError(f"the QR codes would point to {url[:100]}, a loopback address no buyer can reach: pass "
                             f"--public-url URL (or set CARDPROOF_PUBLIC_URL), or --allow-loopback for a local test")
    return url.rstrip("/")
