"""The independent verifier: re-check an API answer about a card against the registry on chain.

Trust nothing from the API but what the chain confirms. Given the API's JSON answer and a registry,
:func:`verify_answer` checks, each as one claim:

* the leaf: the API's leaf fields, product and serial are the leaf's, and its hash is the contract's;
* the proof leads from the leaf to the claimed root, and that root is the one anchored on chain for
  the batch, by the claimed issuer, over the claimed card count, on the claimed chain;
* the anchor transaction is the claimed one, in the claimed block, and emitted ``BatchAnchored``;
* the issuer holds ``ISSUER_ROLE`` as claimed;
* the revocation and redemption bits are as claimed, and the contract's own ``verifyCard`` gives
  the claimed verdict.

It returns a list of :class:`Claim` (what, confirmed, detail); any unconfirmed claim is a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from chain.registry import CardStatus, Registry
from issuer.core.errors import CoreError
from issuer.core.leaf import LEAF_FIELDS, CardLeaf, bytes32_to_sku, leaf_hash
from issuer.core.merkle import process_proof
from issuer.core.serial import format_serial, parse_serial
from verify_api.verdict import hex_bytes

__all__ = ["Claim", "verify_answer", "mismatches"]

_CHAIN_VERDICT = {CardStatus.VALID: "authentic", CardStatus.REVOKED: "revoked", CardStatus.REDEEMED: "redeemed",
                  CardStatus.EXPIRED: "expired"}


@dataclass(frozen=True)
class Claim:
    claim: str
    confirmed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"claim": self.claim, "confirmed": self.confirmed, "detail": self.detail}


def mismatches(claims: list[Claim]) -> list[Claim]:
    return [c for c in claims if not c.confirmed]


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


class _Checker:
    def __init__(self) -> None:
        self.claims: list[Claim] = []

    def check(self, claim: str, ok: bool, detail: str) -> bool:
        self.claims.append(Claim(claim, bool(ok), detail))
        return bool(ok)

    def attempt(self, claim: str, fn: Callable[[], tuple[bool, str]]) -> bool:
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - a failed read is an unconfirmed claim, with the reason
            ok, detail = False, f"could not check: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        return self.check(claim, ok, detail)

    def compare(self, claim: str, read: Callable[[], Any], judge: Callable[[Any], bool],
                describe: Callable[[Any], str]) -> bool:
        """`attempt` for a claim about one value read from the chain: read it once, then judge and describe it."""

        def run() -> tuple[bool, str]:
            value = read()
            return judge(value), describe(value)

        return self.attempt(claim, run)


def verify_answer(answer: dict[str, Any], registry: Registry, *, serial: str | None = None,
                  registry_pinned: bool = False) -> list[Claim]:
    """Check every claim of ``answer`` (a ``GET /v1/cards/{serial}`` body) against ``registry``.

    ``serial``: the serial that was asked about (the answer must be about it). ``registry_pinned``:
    the registry address came from the user, not from the answer (so it is checked against it).
    """
    c = _Checker()
    verdict = answer.get("verdict")
    api_serial = answer.get("serial")
    if serial is not None:
        c.attempt("the answer is about the serial asked for",
                  lambda: (format_serial(parse_serial(serial)) == format_serial(parse_serial(str(api_serial))),
                           f"asked {serial}, answered {api_serial}"))

    value = _get(answer, "proof", "value") or []
    if not value:
        # Nothing is claimed to exist: the chain cannot confirm an absence, but nothing contradicts it.
        c.check("no proof offered", verdict in ("unknown",),
                f"verdict {verdict!r} without a proof" + ("" if verdict == "unknown" else ": a card that is not "
                                                          "'unknown' must come with its proof"))
        return c.claims

    # ---------------------------------------------------------------- the leaf
    try:
        leaf = CardLeaf.from_json(value)
    except (CoreError, TypeError, ValueError) as exc:
        c.check("the leaf is well formed", False, f"{type(exc).__name__}: {exc}")
        return c.claims
    c.check("the leaf is well formed", True, "8 fields in OpenZeppelin dump form")
    named = _get(answer, "proof", "leaf") or {}
    c.check("the named leaf fields are the leaf's", [named.get(n) for n, _t in LEAF_FIELDS] == leaf.to_json(),
            "proof.leaf matches proof.value")
    c.attempt("the serial is the leaf's", lambda: (parse_serial(str(api_serial)) == leaf.serial,
                                                   f"{api_serial} = leaf serial {format_serial(leaf.serial)}"))
    product = answer.get("product") or {}
    c.attempt("the product is the leaf's", lambda: (
        (product.get("sku"), product.get("face_value"), product.get("currency"), product.get("expiry") or 0)
        == (bytes32_to_sku(leaf.sku), leaf.face_value, leaf.currency_str, leaf.expiry),
        f"sku {bytes32_to_sku(leaf.sku)}, face value {leaf.face_value} {leaf.currency_str} (minor units), "
        f"expiry {leaf.expiry or 'none'}"))
    batch = answer.get("batch") or {}
    batch_id = leaf.batch_id
    c.check("the batch is the leaf's", hex_bytes(batch.get("id")) == batch_id, f"batch {'0x' + batch_id.hex()}")
    index = leaf.index
    c.check("the index is the leaf's", _get(answer, "proof", "index") == index, f"index {index}")
    issuer = (answer.get("issuer") or {}).get("address") or ""
    c.check("the batch id belongs to the issuer", batch_id[:20].hex() == issuer.lower().removeprefix("0x"),
            f"batch id starts with {issuer}")

    lh = leaf_hash(leaf)
    c.check("the leaf hash is the leaf's", hex_bytes(_get(answer, "proof", "leaf_hash")) == lh, "0x" + lh.hex())
    c.attempt("the registry hashes the leaf the same way",
              lambda: (registry.leaf_hash(leaf.as_tuple()) == lh, "CardRegistry.leafHash"))

    proof = [hex_bytes(p) for p in (_get(answer, "proof", "proof") or [])]
    try:
        folded = process_proof(lh, proof)
    except CoreError as exc:
        folded = None
        c.check("the proof leads to the root", False, str(exc))
    claimed_root = hex_bytes(batch.get("anchored_root") or batch.get("root"))
    if folded is not None:
        c.check("the proof leads to the root", folded == claimed_root,
                f"{len(proof)} proof nodes fold to 0x{folded.hex()}")

    # ---------------------------------------------------------------- the chain
    w3 = registry.client.w3
    c.compare("the chain id", lambda: int(w3.eth.chain_id), lambda v: v == int(batch.get("chain_id") or -1),
              lambda v: f"node reports {v}, answer says {batch.get('chain_id')}")
    if registry_pinned:
        c.check("the registry address", (batch.get("registry") or "").lower() == registry.address.lower(),
                f"checking {registry.address}, answer says {batch.get('registry')}")

    try:
        onchain = registry.batch(batch_id)
    except Exception as exc:  # noqa: BLE001
        c.check("the batch is anchored", False, f"could not read the registry: {type(exc).__name__}: {exc}")
        return c.claims
    anchored = onchain.anchored
    api_anchored = bool(batch.get("anchored"))
    if verdict == "not_yet_anchored" and not api_anchored:
        c.check("the batch is not anchored yet", not anchored, "registry.batch(batchId).anchoredAt == 0"
                if not anchored else "but the registry holds it")
    else:
        c.check("the batch is anchored", anchored, f"in registry {registry.address}" if anchored
                else "the registry does not hold this batch")
    if anchored:
        c.check("the anchored root", onchain.root == claimed_root and folded == onchain.root,
                f"registry root 0x{onchain.root.hex()}")
        c.check("the issuer anchored it", onchain.issuer.lower() == issuer.lower(), f"registry issuer {onchain.issuer}")
        c.check("the card count", onchain.card_count == batch.get("card_count") and index < onchain.card_count,
                f"registry card count {onchain.card_count}, index {index}")
        if batch.get("anchored_at") is not None:
            c.check("the anchoring time", onchain.anchored_at == batch.get("anchored_at"),
                    f"registry anchoredAt {onchain.anchored_at}")
        c.check("the batch revocation flag", batch.get("revoked") in (None, onchain.revoked),
                f"registry says {'revoked' if onchain.revoked else 'not revoked'}")

        tx = batch.get("anchor_tx")
        if tx:
            c.attempt("the anchor transaction", lambda: _check_anchor_tx(registry, tx, batch, batch_id, onchain.root))

    role = (answer.get("issuer") or {}).get("has_role")
    if issuer:
        c.compare("the issuer's role", lambda: registry.is_issuer(issuer),
                  lambda v: v == bool(role) if role is not None else True,
                  lambda v: f"ISSUER_ROLE held: {v}" + ("" if role is not None else " (not claimed)"))

    status = answer.get("status") or {}
    if anchored:
        if status.get("revoked") is not None:
            c.compare("the revocation bit", lambda: registry.is_revoked(batch_id, index),
                      lambda v: v == status.get("revoked"), lambda v: f"registry isRevoked: {v}")
        if status.get("redeemed") is not None:
            c.compare("the redemption bit", lambda: registry.is_redeemed(batch_id, index),
                      lambda v: v == status.get("redeemed"), lambda v: f"registry isRedeemed: {v}")

    def verdict_check() -> tuple[bool, str]:
        authentic, st = registry.verify_card(leaf.as_tuple(), proof)
        chain_verdict = _CHAIN_VERDICT.get(st, "not_yet_anchored" if not anchored else "unknown")
        if not authentic:
            chain_verdict = "not_yet_anchored" if not anchored else "unknown"
        return verdict == chain_verdict, f"CardRegistry.verifyCard says {chain_verdict} ({st.name})"

    c.attempt(f"the verdict '{verdict}'", verdict_check)
    return c.claims


def _check_anchor_tx(registry: Registry, tx: str, batch: dict, batch_id: bytes, root: bytes) -> tuple[bool, str]:
    from web3.logs import DISCARD

    receipt = registry.client.w3.eth.get_transaction_receipt(tx)
    if receipt is None:
        return False, f"no receipt for {tx}"
    ok = receipt["status"] == 1 and Web3.to_checksum_address(receipt["to"]) == registry.address
    if batch.get("anchor_block") is not None:
        ok = ok and int(receipt["blockNumber"]) == int(batch["anchor_block"])
    events = registry.contract.events.BatchAnchored().process_receipt(receipt, errors=DISCARD)
    ok = ok and any(bytes(e["args"]["batchId"]) == batch_id and bytes(e["args"]["root"]) == root for e in events)
    return ok, f"{tx} in block {receipt['blockNumber']} emitted BatchAnchored for this batch and root" if ok else \
        f"{tx} (block {receipt['blockNumber']}) does not anchor this batch with this root in this registry"
