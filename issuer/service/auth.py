"""Who may redeem: the issuer's redeemers, by API key (stored hashed) or by a signed request.

API key
    ``Authorization: Bearer cpk_<key_id>_<secret>`` (or ``X-API-Key: ...``). The database keeps the
    key id and SHA-256 of the secret (the secret has 256 bits of entropy, so a fast hash is enough);
    the comparison is constant-time. A key is bound to one issuer and redeems only its cards.

Signed request
    Headers ``X-Cardproof-Address``, ``X-Cardproof-Timestamp`` (unix seconds), ``X-Cardproof-Nonce``
    (16-64 of ``[A-Za-z0-9_-]``) and ``X-Cardproof-Signature``: an EIP-191 ``personal_sign`` by that
    address of::

        cardproof-request-v1\\n{METHOD}\\n{PATH}\\n{TIMESTAMP}\\n{NONCE}\\n{sha256(body) hex}

    The timestamp must be within the signature window and each nonce is accepted once. The signer
    must be the card's issuer or one of its redeemers on chain (``isRedeemer``). Nonces fail closed: with
    Redis configured but down the answer is 503 ``rate_limiter_unavailable``, and a request signed before the
    nonce store started (the service restarted, or Redis lost its data) is refused: sign again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from issuer.service.errors import ServiceError
from issuer.storage.models import API_KEY_ROLES, ApiKey, ApiKeyRole
from issuer.storage.repository import checksum_address

__all__ = ["KEY_PREFIX", "Principal", "api_key_role", "authenticate", "create_api_key", "list_api_keys",
           "revoke_api_key", "sign_request", "signing_message"]

KEY_PREFIX = "cpk_"
_KEY_RE = re.compile(r"^cpk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SIG_RE = re.compile(r"^0x[0-9a-fA-F]{130}$")
_ADDR_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class Principal:
    #: api_key | signature
    kind: str
    #: key id, or the signer's address
    ident: str
    #: The issuer an API key is bound to; None for signatures (checked per card on chain).
    issuer: str | None
    label: str = ""
    #: redeemer (keys made without a role, and signed requests) or erp (``create_api_key(role="erp")``): an ERP
    #: key reaches ``/v1/erp/*`` only, a redeemer's key never does.
    role: str = "redeemer"

    @property
    def redeemed_by(self) -> str:
        return f"key:{self.ident}" if self.kind == "api_key" else f"sig:{self.ident}"


def unauthorized(message: str) -> ServiceError:
    return ServiceError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="cardproof"'})


# --------------------------------------------------------------------------- API keys


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def create_api_key(session: Session, issuer_address: str, label: str = "", *,
                   role: str = "redeemer") -> tuple[str, ApiKey]:
    """A new key for ``issuer_address``: (the full key, shown once; its row). Caller commits.

    ``role``: ``redeemer`` (the default: redeems the issuer's cards) or ``erp`` (the supplier's ERP API,
    ``/v1/erp/*``, and nothing else); an ERP key is only ever made by asking for it."""
    if role not in API_KEY_ROLES:
        raise ValueError(f"unknown API key role {role!r}: use one of {', '.join(API_KEY_ROLES)}")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(key_id=key_id, key_hash=_hash(secret), issuer_address=checksum_address(issuer_address),
                 label=label[:200])
    session.add(row)
    session.flush()
    if role != "redeemer":
        session.add(ApiKeyRole(api_key_pk=row.id, role=role))
        session.flush()
    return f"{KEY_PREFIX}{key_id}_{secret}", row


def api_key_role(session: Session, row: ApiKey) -> str:
    """The role of a key: redeemer unless ``api_key_roles`` says otherwise."""
    return session.scalar(select(ApiKeyRole.role).where(ApiKeyRole.api_key_pk == row.id)) or "redeemer"


def list_api_keys(session: Session, issuer_address: str | None = None) -> list[ApiKey]:
    q = select(ApiKey).order_by(ApiKey.id)
    if issuer_address:
        q = q.where(ApiKey.issuer_address == checksum_address(issuer_address))
    return list(session.scalars(q))


def revoke_api_key(session: Session, key_id: str) -> bool:
    """Revoke a key by its id (or the whole key); False when no such active key. Caller commits."""
    key_id = key_id.strip().removeprefix(KEY_PREFIX).split("_")[0]
    result = session.execute(update(ApiKey).where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
                             .values(revoked_at=dt.datetime.now(dt.UTC)))
    return result.rowcount == 1


# Spend the same time on unknown key ids as on known ones.
_DUMMY_HASH = _hash("x" * 43)


def _check_api_key(session: Session, presented: str) -> Principal:
    m = _KEY_RE.match(presented.strip())
    if m is None:
        raise unauthorized("malformed API key")
    key_id, secret = m.groups()
    row = session.scalars(select(ApiKey).where(ApiKey.key_id == key_id)).one_or_none()
    good = hmac.compare_digest(_hash(secret), bytes(row.key_hash) if row is not None else _DUMMY_HASH)
    if row is None or not good or row.revoked_at is not None:
        raise unauthorized("invalid or revoked API key")
    role = api_key_role(session, row)
    session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=dt.datetime.now(dt.UTC)))
    session.commit()
    return Principal("api_key", key_id, row.issuer_address, row.label, role)


# --------------------------------------------------------------------------- signatures


def signing_message(method: str, path: str, timestamp: int | str, nonce: str, body: bytes) -> str:
    return "\n".join(["cardproof-request-v1", method.upper(), path, str(timestamp), nonce,
                      hashlib.sha256(body).hexdigest()])


def sign_request(account: Any, method: str, path: str, body: bytes, *, timestamp: int | None = None,
                 nonce: str | None = None) -> dict[str, str]:
    """Headers of a request signed by ``account`` (an eth_account LocalAccount)."""
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(16)
    msg = signing_message(method, path, ts, nonce, body)
    sig = account.sign_message(encode_defunct(text=msg)).signature
    return {"X-Cardproof-Address": account.address, "X-Cardproof-Timestamp": str(ts), "X-Cardproof-Nonce": nonce,
            "X-Cardproof-Signature": "0x" + bytes(sig).hex()}


def _check_signature(headers: Any, method: str, path: str, body: bytes, limiter: Any, window: int) -> Principal:
    address = headers.get("x-cardproof-address", "")
    ts = headers.get("x-cardproof-timestamp", "")
    nonce = headers.get("x-cardproof-nonce", "")
    sig = headers.get("x-cardproof-signature", "")
    if not (_ADDR_RE.match(address) and ts.isdigit() and len(ts) <= 12 and _NONCE_RE.match(nonce)
            and _SIG_RE.match(sig)):
        raise unauthorized("malformed signature headers")
    if abs(int(ts) - time.time()) > window:
        raise unauthorized(f"signature timestamp is more than {window} s away from the server's clock")
    try:
        signer = Account.recover_message(encode_defunct(text=signing_message(method, path, ts, nonce, body)),
                                         signature=sig)
    except Exception:  # noqa: BLE001 - any malformed signature
        raise unauthorized("invalid signature") from None
    if signer.lower() != address.lower():
        raise unauthorized("invalid signature")
    # Single use, failing closed: Redis down is 503 rate_limiter_unavailable (never a per-worker memory), and a
    # request signed before the nonce store started (a restarted worker, a Redis that lost its data) is refused,
    # since it may have been accepted by the store that was lost.
    if not limiter.once(f"{signer.lower()}:{nonce}", 2 * window + 5, signed_at=int(ts)):
        raise unauthorized("this nonce was used already (or signed before the nonce store started: sign again)")
    return Principal("signature", checksum_address(signer), None)


def authenticate(session: Session, headers: Any, method: str, path: str, body: bytes, limiter: Any,
                 window: int = 300) -> Principal:
    """The principal of a request, or ServiceError 401 ``unauthorized``."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return _check_api_key(session, auth[7:])
    if headers.get("x-api-key"):
        return _check_api_key(session, headers["x-api-key"])
    if headers.get("x-cardproof-signature"):
        return _check_signature(headers, method, path, body, limiter, window)
    raise unauthorized("authenticate with an API key (Authorization: Bearer cpk_...) or a signed request")
