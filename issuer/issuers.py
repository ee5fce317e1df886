"""Issuers: the platform grants ISSUER_ROLE and keeps a display name, and removes issuers (revokes the role);
issuers appoint redeemers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from chain.registry import Registry
from issuer.errors import IssuerError
from issuer.lookup import issuer_track_record
from issuer.storage import repository as repo
from issuer.storage.models import Issuer


class InvalidAddress(IssuerError, ValueError):
    """Not an Ethereum address."""

    code = "invalid_address"


def check_address(address: str) -> str:
    if not isinstance(address, str) or not Web3.is_address(address.strip()):
        raise InvalidAddress(f"{address!r} is not an account address (0x followed by 40 hex digits)")
    return Web3.to_checksum_address(address.strip())


def add_issuer(sessions: sessionmaker[Session], registry: Registry, address: str, name: str) -> dict[str, Any]:
    """Grant ISSUER_ROLE on chain with the display name recorded there (``grantIssuer``), unless the role is
    held under that name already, and store the name locally too."""
    address = check_address(address)
    name = " ".join(name.split())
    if not name or len(name.encode("utf-8")) > 64:
        raise IssuerError("the issuer name must be 1-64 bytes of text (it is recorded on chain)")
    granted = False
    if not registry.is_issuer(address) or registry.issuer_name(address) != name:
        registry.grant_issuer(address, name)
        granted = True
    with sessions.begin() as session:
        repo.upsert_issuer(session, address, name)
    return {"address": address, "name": name, "granted": granted, "registry": registry.address}


def remove_issuer(sessions: sessionmaker[Session], registry: Registry, address: str) -> dict[str, Any]:
    """Revoke ISSUER_ROLE on chain (as the registry's admin), unless the account does not hold it, and drop the
    supplier's record of the issuer if there is one (its batches keep their history). Idempotent: an account that
    is neither an issuer nor recorded sends nothing. The on-chain display name stays as history."""
    address = check_address(address)
    revoked = False
    if registry.is_issuer(address):
        registry.revoke_issuer(address)
        revoked = True
    with sessions.begin() as session:
        record = repo.get_issuer(session, address)
        name = record.name if record is not None else registry.issuer_name(address)
        if record is not None:
            session.delete(record)
    return {"address": address, "name": name, "revoked": revoked, "record_removed": record is not None,
            "registry": registry.address}


def list_issuers(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    with sessions() as session:
        addresses = list(session.scalars(select(Issuer.address).order_by(Issuer.created_at)))
        return [issuer_track_record(session, a) for a in addresses]


def set_redeemer(registry: Registry, redeemer: str, allowed: bool) -> None:
    registry.set_redeemer(check_address(redeemer), allowed)
