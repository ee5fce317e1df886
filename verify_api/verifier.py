"""The independent verifier: re-check an API answer about a card against the registry on chain.

Trust nothing from the API but what the chain confirms. The registry is the one pinned for the chain
(:mod:`verify_api.trust`), never the one the answer names. Given the API's JSON answer (``GET /v1/cards/{serial}``),
:func:`verify` checks each claim and gives it one of three outcomes:

* ``confirmed``: the chain confirms it;
* ``mismatch``: the chain contradicts it (or the answer contradicts itself);
* ``unverifiable``: nothing contradicts it, but the chain cannot confirm it.

The claims about the card itself (serial, product, batch, index, issuer address, leaf hash, proof, and the
code given with ``--code -``) are read from the answer's leaf. They are confirmed only when the chain holds
that leaf: the pinned registry's ``verifyCard`` accepts the leaf and its proof, i.e. the proof folds to the
root anchored for the batch, over a card count covering the index. For a batch the registry does not hold
(``not_yet_anchored``, or a card made up by the API), every such claim is unverifiable; for an ``unknown``
serial the chain can confirm nothing at all. Chain facts are compared directly: the batch's anchoring, root,
issuer, card count, time, revocation, the anchor transaction, the card's bits, and the verdict.

The issuer's ``ISSUER_ROLE`` and its display name (``issuerName``, recorded by the platform with
``grantIssuer``) are always read from the chain and reported. An issuer without the role (struck off) is a
mismatch whatever the answer says; a name that differs from the chain's is a mismatch; a name with no name
on chain is unverifiable.

:func:`exit_status`: 0 when every claim is confirmed, 1 on any mismatch, 3 when nothing is contradicted but
some claim is unverifiable. An ``unknown`` answer (no card has this serial, and no leaf is offered) is not a card
at all: :attr:`Verification.outcome` is ``unknown``, exit 1 (``EXIT_UNKNOWN``), never "confirmed".

The card's code and opening (:class:`CardSecret`) are only ever passed to
:func:`issuer.core.commitment.opens`: they appear in no claim, message or ``repr``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from web3 import Web3

from chain.errors import CardproofError, ChainUnreachable
from chain.registry import CardStatus, Registry, batch_id_owner
from issuer.core.commitment import opens, parse_opening
from issuer.core.errors import CoreError
from issuer.core.leaf import LEAF_FIELDS, CardLeaf, bytes32_to_sku, leaf_hash
from issuer.core.merkle import process_proof
from issuer.core.serial import format_serial, parse_serial
from verify_api.verdict import hex_bytes

__all__ = ["EXIT_CONFIRMED", "EXIT_MISMATCH", "EXIT_UNKNOWN", "EXIT_UNVERIFIABLE", "CardSecret", "Claim",
           "InvalidCardSecret", "Outcome", "UnknownCard", "Verification", "exit_status", "mismatches", "overall",
           "printable", "read_card_secret", "unverifiable",
           "verify", "verify_answer"]

#: Exit status of `cardproof verify`: every claim confirmed.
EXIT_CONFIRMED = 0
#: Some claim is contradicted by the chain (also any error: one line on stderr).
EXIT_MISMATCH = 1
#: Nothing is contradicted, but the chain cannot confirm some claim (unanchored card, no name on chain).
EXIT_UNVERIFIABLE = 3
#: The answer knows no card with this serial: not a genuine card (or not published), like a contradiction.
EXIT_UNKNOWN = 1


class Outcome(str, Enum):
    CONFIRMED = "confirmed"
    MISMATCH = "mismatch"
    UNVERIFIABLE = "unverifiable"
    #: Of a whole verification only (never of a claim): no card has this serial.
    UNKNOWN = "unknown"


_MARK = {Outcome.CONFIRMED: "✓", Outcome.MISMATCH: "✗", Outcome.UNVERIFIABLE: "?", Outcome.UNKNOWN: "✗"}


class UnknownCard(CardproofError):
    """`cardproof verify` of a serial no card has: not a genuine card, or one not published."""

    code = "unknown_card"


_CHAIN_VERDICT = {CardStatus.VALID: "authentic", CardStatus.REVOKED: "revoked", CardStatus.REDEEMED: "redeemed",
                  CardStatus.EXPIRED: "expired"}
_ANCHORED_VERDICTS = frozenset(_CHAIN_VERDICT.values())


@dataclass(frozen=True)
class Claim:
    claim: str
    outcome: Outcome
    detail: str

    @property
    def confirmed(self) -> bool:
        return self.outcome is Outcome.CONFIRMED

    @property
    def mark(self) -> str:
        return _MARK[self.outcome]

    def to_json(self) -> dict[str, Any]:
        return {"claim": self.claim, "outcome": self.outcome.value, "confirmed": self.confirmed,
                "detail": self.detail}


def mismatches(claims: Sequence[Claim]) -> list[Claim]:
    """The claims the chain contradicts."""
    return [c for c in claims if c.outcome is Outcome.MISMATCH]


def unverifiable(claims: Sequence[Claim]) -> list[Claim]:
    """The claims the chain cannot confirm (and does not contradict)."""
    return [c for c in claims if c.outcome is Outcome.UNVERIFIABLE]


def overall(claims: Sequence[Claim]) -> Outcome:
    """mismatch if any claim is; else unverifiable if any claim is (or there is none); else confirmed."""
    if mismatches(claims):
        return Outcome.MISMATCH
    if not claims or unverifiable(claims):
        return Outcome.UNVERIFIABLE
    return Outcome.CONFIRMED


def exit_status(claims: Sequence[Claim]) -> int:
    return {Outcome.CONFIRMED: EXIT_CONFIRMED, Outcome.MISMATCH: EXIT_MISMATCH,
            Outcome.UNVERIFIABLE: EXIT_UNVERIFIABLE}[overall(claims)]


# ------------------------------------------------------------------------------------------- the card's secret


class InvalidCardSecret(CardproofError, ValueError):
    """The code and opening given on stdin are unusable. The message never quotes either."""

    code = "invalid_card_secret"


@dataclass(frozen=True, repr=False)
class CardSecret:
    """A card's code and its 16-byte opening. Hidden from ``repr``/``str``; only :func:`opens` reads them."""

    code: str = field(repr=False)
    opening: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "CardSecret(<hidden>)"

    __str__ = __repr__


def read_card_secret(text: str) -> CardSecret:
    """The code (first non-empty line) and its opening (second non-empty line, 26 Crockford symbols)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InvalidCardSecret("--code -: stdin holds no code (first line: the code, second line: its opening)")
    if len(lines) < 2:
        raise InvalidCardSecret("--code -: stdin holds no opening on a second line (26 symbols, "
                                "XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XX, printed with the code)")
    try:
        opening = parse_opening(lines[1])
    except CoreError as exc:  # its messages never repeat the text (issuer/core/commitment.py)
        raise InvalidCardSecret(f"--code -: the second line of stdin is not an opening: {exc}") from None
    return CardSecret(lines[0], opening)


# ------------------------------------------------------------------------------------------------ the checks


@dataclass
class Verification:
    """The claims, and the chain's facts worth showing on their own."""

    claims: list[Claim]
    #: What the registry's verifyCard says of the answer's leaf (authentic, revoked, ...; None when no leaf).
    chain_verdict: str | None = None
    issuer: str | None = None
    issuer_has_role: bool | None = None
    #: The issuer's name on chain; "" when the chain has none, None when not read.
    issuer_name: str | None = None
    #: The answer says no card has this serial ('unknown', no leaf): there is no card to confirm.
    unknown: bool = False

    @property
    def outcome(self) -> Outcome:
        """``unknown`` for an unknown card (unless a claim is contradicted), else :func:`overall` of the claims."""
        outcome = overall(self.claims)
        return Outcome.UNKNOWN if self.unknown and outcome is not Outcome.MISMATCH else outcome

    @property
    def exit_status(self) -> int:
        return EXIT_UNKNOWN if self.outcome is Outcome.UNKNOWN else exit_status(self.claims)

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "confirmed": self.outcome is Outcome.CONFIRMED,
                "chain_verdict": self.chain_verdict,
                "issuer": {"address": self.issuer, "has_role": self.issuer_has_role,
                           "name_on_chain": self.issuer_name or None},
                "claims": [c.to_json() for c in self.claims]}


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def printable(value: Any, limit: int = 80) -> str:
    """Text from the answer or the chain, fit for one terminal line: no control characters, bounded; numbers as
    they are, anything else quoted."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else "\ufffd" for ch in str(value))
    return repr(text if len(text) <= limit else text[:limit] + "…")


class _Checker:
    """Claims in order. Claims about the card's leaf are *pending* until we know whether the chain holds it."""

    def __init__(self) -> None:
        self._entries: list[tuple[str, Outcome | bool, str]] = []

    def add(self, claim: str, outcome: Outcome, detail: str) -> Outcome:
        self._entries.append((claim, outcome, detail))
        return outcome

    def direct(self, claim: str, ok: bool, detail: str) -> bool:
        """A claim the chain confirms (ok) or contradicts."""
        self.add(claim, Outcome.CONFIRMED if ok else Outcome.MISMATCH, detail)
        return ok

    def pending(self, claim: str, ok: bool, detail: str) -> bool:
        """A claim read from the answer's leaf: a mismatch if the answer contradicts its leaf, else confirmed
        if and only if the chain holds the leaf (settled by :meth:`claims`)."""
        self._entries.append((claim, bool(ok), detail))
        return bool(ok)

    def attempt(self, claim: str, fn: Callable[[], tuple[Outcome | bool, str]], *, pending: bool = False) -> None:
        try:
            ok, detail = fn()
        except ChainUnreachable:
            raise
        except Exception as exc:  # noqa: BLE001 - a check that cannot run on this answer fails closed
            ok, detail = False, f"could not check: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        if isinstance(ok, Outcome):
            self.add(claim, ok, detail)
        elif pending:
            self.pending(claim, ok, detail)
        else:
            self.direct(claim, ok, detail)

    def claims(self, proven: bool, why_not: str) -> list[Claim]:
        out = []
        for claim, state, detail in self._entries:
            if isinstance(state, Outcome):
                out.append(Claim(claim, state, detail))
            elif not state:
                out.append(Claim(claim, Outcome.MISMATCH, detail))
            elif proven:
                out.append(Claim(claim, Outcome.CONFIRMED, detail))
            else:
                out.append(Claim(claim, Outcome.UNVERIFIABLE, f"{detail}; but {why_not}"))
        return out


def verify_answer(answer: dict[str, Any], registry: Registry, *, serial: str | None = None,
                  secret: CardSecret | None = None) -> list[Claim]:
    """The claims of :func:`verify`."""
    return verify(answer, registry, serial=serial, secret=secret).claims


def verify(answer: dict[str, Any], registry: Registry, *, serial: str | None = None,
           secret: CardSecret | None = None) -> Verification:
    """Check every claim of ``answer`` (a ``GET /v1/cards/{serial}`` body) against ``registry``.

    ``registry``: the trusted one (pinned and code-checked, :func:`verify_api.trust.trusted_registry`); the
    registry the answer names is only a claim. ``serial``: the serial that was asked about. ``secret``: the
    card's code and opening, checked against the leaf's commitment.
    """
    c = _Checker()
    result = Verification([])
    verdict = answer.get("verdict")
    api_serial = answer.get("serial")
    batch = answer.get("batch") if isinstance(answer.get("batch"), dict) else {}
    product = answer.get("product") if isinstance(answer.get("product"), dict) else {}
    issuer_claim = answer.get("issuer") if isinstance(answer.get("issuer"), dict) else {}
    status = answer.get("status") if isinstance(answer.get("status"), dict) else {}
    chain_id = registry.client.chain_id

    if serial is not None:
        c.attempt("the answer is about the serial asked for",
                  lambda: (parse_serial(serial) == parse_serial(str(api_serial)), f"asked {serial}, answered "
                           f"{printable(api_serial, 40)}"), pending=True)

    value = _get(answer, "proof", "value") or []
    if not value:
        if verdict == "unknown":
            result.unknown = True
            c.add("the verdict 'unknown'", Outcome.UNVERIFIABLE, "the answer offers no leaf: no card with this "
                  "serial is known, so there is nothing to confirm (and an absence is not on chain)")
        else:
            c.add(f"the verdict {printable(verdict, 30)}", Outcome.MISMATCH, "the answer offers no leaf and proof: a "
                  "card that is not 'unknown' must come with them")
        if secret is not None:
            c.add("the code opens the card's commitment", Outcome.UNVERIFIABLE, "no leaf to check the code against")
        result.claims = c.claims(False, "the answer offers no leaf")
        return result

    # ---------------------------------------------------------------- the leaf (pending until proven on chain)
    try:
        leaf = CardLeaf.from_json(value)
    except (CoreError, TypeError, ValueError) as exc:
        c.direct("the leaf is well formed", False, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
        result.claims = c.claims(False, "the leaf is malformed")
        return result
    c.pending("the leaf is well formed", True, f"{len(LEAF_FIELDS)} fields, leaf version {leaf.version}")
    named = _get(answer, "proof", "leaf") or {}
    c.pending("the named leaf fields are the leaf's",
              isinstance(named, dict) and [named.get(n) for n, _t in LEAF_FIELDS] == leaf.to_json(),
              "proof.leaf matches proof.value")
    c.attempt("the serial is the leaf's", lambda: (parse_serial(str(api_serial)) == leaf.serial,
                                                   f"leaf serial {format_serial(leaf.serial)}"), pending=True)
    c.pending("the product is the leaf's",
              (product.get("sku"), product.get("face_value"), product.get("currency"), product.get("expiry") or 0)
              == (bytes32_to_sku(leaf.sku), leaf.face_value, leaf.currency_str, leaf.expiry),
              f"leaf: sku {bytes32_to_sku(leaf.sku)}, face value {leaf.face_value} {leaf.currency_str} (minor units), "
              f"expiry {leaf.expiry or 'none'}; answer: sku {printable(product.get('sku'), 40)}, face value "
              f"{printable(product.get('face_value'), 40)} {printable(product.get('currency'), 8)}")
    batch_id = leaf.batch_id
    c.pending("the batch is the leaf's", hex_bytes(batch.get("id")) == batch_id, f"batch 0x{batch_id.hex()}")
    index = leaf.index
    c.pending("the index is the leaf's", _get(answer, "proof", "index") == index, f"index {index}")
    issuer_address = issuer_claim.get("address") or ""
    owner = batch_id_owner(batch_id)
    c.pending("the batch id belongs to the issuer", str(issuer_address).lower() == owner.lower(),
              f"batch id starts with {owner}, answer's issuer {printable(issuer_address, 44)}")
    lh = leaf_hash(leaf)
    c.attempt("the leaf hash", lambda: ((registry.leaf_hash(leaf.as_tuple()) == lh
                                         and hex_bytes(_get(answer, "proof", "leaf_hash")) == lh),
                                        f"CardRegistry.leafHash = 0x{lh.hex()}"), pending=True)
    proof = [hex_bytes(p) for p in (_get(answer, "proof", "proof") or [])]
    try:
        folded: bytes | None = process_proof(lh, proof)
    except CoreError as exc:
        folded = None
        c.direct("the proof is well formed", False, str(exc))
    claimed_root = hex_bytes(batch.get("anchored_root") or batch.get("root"))
    if folded is not None:
        c.pending("the proof leads to the claimed root", folded == claimed_root,
                  f"{len(proof)} proof nodes fold to 0x{folded.hex()}")

    # ---------------------------------------------------------------- the chain
    if batch.get("chain_id") is not None:
        c.direct("the chain id", batch.get("chain_id") == chain_id,
                 f"the node is chain {chain_id}, the answer says {printable(batch.get('chain_id'), 24)}")
    if batch.get("registry") is not None:
        named_registry = str(batch.get("registry"))
        c.direct("the registry", named_registry.lower() == registry.address.lower(),
                 f"the answer names {printable(named_registry, 44)}; the registry pinned for chain {chain_id} is "
                 f"{registry.address}")

    onchain = registry.batch(batch_id)  # a failed read here is an error, not a claim
    anchored = onchain.anchored
    says_anchored = batch.get("anchored") is True or verdict in _ANCHORED_VERDICTS
    says_pending = batch.get("anchored") is False or verdict == "not_yet_anchored"
    if anchored:
        c.direct("the batch is anchored", not says_pending,
                 f"registry {registry.address} holds batch 0x{batch_id.hex()}"
                 + ("" if not says_pending else ", but the answer says it is not anchored"))
    else:
        c.direct("the batch is not anchored", not says_anchored,
                 f"registry {registry.address} holds no batch 0x{batch_id.hex()}"
                 + ("; the answer claims it is anchored" if says_anchored else ""))

    authentic, card_status = False, CardStatus.UNKNOWN
    if folded is not None:  # a malformed proof was reported above; verifyCard cannot take it
        try:
            authentic, card_status = registry.verify_card(leaf.as_tuple(), proof)
        except ChainUnreachable:
            raise
        except Exception as exc:  # noqa: BLE001 - fails closed, with the reason
            c.direct("the registry accepts the leaf", False,
                     f"verifyCard failed: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
    proven = bool(authentic)
    # Appended to each unproven claim about the leaf (the claims above say where and why at length).
    why_not = ("the chain does not hold this card (its batch is not anchored)" if not anchored
               else "the chain does not hold this leaf (CardRegistry.verifyCard rejects the leaf and proof)")

    if anchored:
        c.direct("the proof leads to the anchored root",
                 folded == onchain.root and claimed_root == onchain.root,
                 f"registry root 0x{onchain.root.hex()}"
                 + ("" if folded == onchain.root else f"; the proof folds to 0x{(folded or b'').hex()}")
                 + ("" if claimed_root == onchain.root else f"; the answer claims 0x{claimed_root.hex()}"))
        c.direct("the issuer anchored it", str(issuer_address).lower() == onchain.issuer.lower(),
                 f"registry issuer {onchain.issuer}")
        c.direct("the card count", batch.get("card_count") == onchain.card_count and index < onchain.card_count,
                 f"registry card count {onchain.card_count}, index {index}")
        if batch.get("anchored_at") is not None:
            c.direct("the anchoring time", batch.get("anchored_at") == onchain.anchored_at,
                     f"registry anchoredAt {onchain.anchored_at}")
        if batch.get("revoked") is not None:
            c.direct("the batch revocation flag", batch.get("revoked") == onchain.revoked,
                     f"registry says {'revoked' if onchain.revoked else 'not revoked'}")
        tx = batch.get("anchor_tx")
        if tx:
            c.attempt("the anchor transaction", lambda: _check_anchor_tx(registry, tx, batch, batch_id, onchain.root))
        if status.get("revoked") is not None:
            c.attempt("the revocation bit", lambda: _same(status.get("revoked"),
                                                          registry.is_revoked(batch_id, index),
                                                          "registry isRevoked"))
        if status.get("redeemed") is not None:
            c.attempt("the redemption bit", lambda: _same(status.get("redeemed"), registry.is_redeemed(batch_id, index),
                                                          "registry isRedeemed"))

    # ---------------------------------------------------------------- the issuer, always from the chain
    issuer = onchain.issuer if anchored else owner
    result.issuer = Web3.to_checksum_address(issuer)
    has_role = registry.is_issuer(issuer)
    result.issuer_has_role = has_role
    role_claim = issuer_claim.get("has_role")
    if not has_role:
        c.direct("the issuer's role", False,
                 f"{result.issuer} does not hold ISSUER_ROLE in the registry (struck off, or never an issuer): "
                 "its cards are not vouched for" + (", though the answer says it does" if role_claim else ""))
    else:
        c.direct("the issuer's role", role_claim is not False,
                 f"{result.issuer} holds ISSUER_ROLE" + {None: " (the answer does not say)", True: "",
                                                         False: "; the answer says it does not"}.get(role_claim, ""))
    chain_name = registry.issuer_name(issuer)
    result.issuer_name = chain_name
    answer_name = issuer_claim.get("name")
    if not chain_name:
        if answer_name:
            c.add("the issuer's name", Outcome.UNVERIFIABLE,
                  f"no name on chain: the answer's name {printable(answer_name)} is not backed by the platform")
        else:
            c.add("the issuer's name", Outcome.CONFIRMED, "no name on chain, and the answer claims none")
    elif not answer_name:
        c.add("the issuer's name", Outcome.CONFIRMED, f"on chain: {printable(chain_name)} (the answer names none)")
    else:
        c.direct("the issuer's name", answer_name == chain_name,
                 f"on chain: {printable(chain_name)}" + ("" if answer_name == chain_name
                                                     else f"; the answer says {printable(answer_name)}"))

    # ---------------------------------------------------------------- the verdict
    claimed_verdict = f"the verdict {printable(verdict, 30)}"
    if authentic:
        chain_verdict = _CHAIN_VERDICT.get(card_status, "unknown")
        c.direct(claimed_verdict, verdict == chain_verdict, f"CardRegistry.verifyCard says {chain_verdict} "
                 f"({card_status.name})")
    else:
        chain_verdict = "not_yet_anchored" if not anchored else "unknown"
        if verdict in ("not_yet_anchored", "unknown"):
            c.add(claimed_verdict, Outcome.UNVERIFIABLE, f"CardRegistry.verifyCard rejects the leaf: {why_not}")
        else:
            c.direct(claimed_verdict, False, f"CardRegistry.verifyCard rejects the leaf: {why_not}")
    result.chain_verdict = chain_verdict

    # ---------------------------------------------------------------- the code, with its opening
    if secret is not None:
        if opens(secret.code, secret.opening, leaf.code_form, leaf.code_commitment):
            c.pending("the code opens the card's commitment", True,
                      f"code and opening open codeCommitment 0x{leaf.code_commitment.hex()[:16]}… "
                      f"(codeForm {leaf.code_form})")
        else:
            c.direct("the code opens the card's commitment", False,
                     "the code and opening given do not open this card's codeCommitment "
                     f"(codeForm {leaf.code_form}): wrong code, wrong opening, or not this card's")

    result.claims = c.claims(proven, why_not)
    return result


def _same(claimed: Any, actual: bool, what: str) -> tuple[bool, str]:
    return claimed == actual, f"{what}: {actual}" + ("" if claimed == actual else f"; the answer says {claimed}")


def _check_anchor_tx(registry: Registry, tx: str, batch: dict, batch_id: bytes, root: bytes) -> tuple[bool, str]:
    from web3.logs import DISCARD

    receipt = registry.client.w3.eth.get_transaction_receipt(tx)
    if receipt is None:
        return False, f"no receipt for {printable(tx, 70)}"
    ok = receipt["status"] == 1 and Web3.to_checksum_address(receipt["to"]) == registry.address
    if batch.get("anchor_block") is not None:
        ok = ok and int(receipt["blockNumber"]) == int(batch["anchor_block"])
    events = registry.contract.events.BatchAnchored().process_receipt(receipt, errors=DISCARD)
    ok = ok and any(bytes(e["args"]["batchId"]) == batch_id and bytes(e["args"]["root"]) == root for e in events)
    if ok:
        return True, f"{tx} in block {receipt['blockNumber']} emitted BatchAnchored for this batch and root"
    return False, (f"{printable(tx, 70)} (block {receipt['blockNumber']}) does not anchor this batch with this root "
                   "in this registry")
