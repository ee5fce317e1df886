"""Mint a batch: codes (generated or imported), serials, commitments, leaves, the tree, storage.

The batch id is the issuer's address followed by 12 random bytes, so only that issuer can anchor it.
A fresh 32-byte batch secret yields the commitment key and the code encryption key (HKDF); the secret
itself is stored wrapped by the master key. Everything is written in one database transaction: a
failure leaves nothing behind.

A million cards take well under 30 s on two cores (``scripts/bench_mint``): serials are formatted
column-wise, commitments use precomputed HMAC pads, the per-card cryptography and leaf hashing of the
second half of a batch run in a forked process with ``workers=2``, and a code already stored in another
batch is caught by the unique index on fingerprints (its CSV line is looked up only then).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from issuer.codes import DEFAULT_FORMAT, CodeFormat, generate_codes
from issuer.core._fork import run_forked
from issuer.core.commitment import CODE_DOMAIN, canonical_code, derive_batch_keys, openings
from issuer.core.errors import CoreError, InvalidCode
from issuer.core.keccak import keccak256
from issuer.core.leaf import (
    CODE_FORM_EXACT,
    LEAF_ENCODING,
    LEAF_VERSION,
    CardLeaf,
    currency_to_bytes3,
    leaf_hashes,
    sku_to_bytes32,
)
from issuer.core.merkle import build_tree
from issuer.core.serial import ALPHABET, CHECK_ALPHABET, SERIAL_BITS, SERIAL_SYMBOLS
from issuer.csv_import import read_codes_csv
from issuer.errors import DuplicateCode, InvalidCount, InvalidCsv, IssuerError
from issuer.products import check_currency, check_sku, parse_expiry, parse_face_value
from issuer.secrets_store import CodeCipher, MasterKey, code_fingerprints
from issuer.storage import repository as repo

#: The registry stores cardCount as uint32; batches this large are also impractical to export.
MAX_BATCH_CARDS = 10_000_000
MANIFEST_FORMAT = "cardproof-batch/v2"

ProgressFn = Callable[[str, int, int], None]


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class MintRequest:
    sku: str
    face_value: str | int | Decimal
    currency: str
    count: int | None = None
    codes_csv: Path | None = None
    expires: str | None = None
    code_format: CodeFormat = DEFAULT_FORMAT
    #: Imported codes only: the leaf's ``codeForm`` (exact unless the import says otherwise:
    #: ``CODE_FORM_FOLDED``, ``cardproof mint --codes-from FILE --codes-normalize``).
    imported_code_form: int = CODE_FORM_EXACT


@dataclass(frozen=True)
class MintResult:
    batch_id: str
    count: int
    root: str
    manifest_hash: str
    issuer: str
    sku: str
    face_value: int
    currency: str
    expiry: int
    code_form: int = CODE_FORM_EXACT
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- serials -------------------------------------------------------------------------------------

_CROCKFORD = ALPHABET.encode()
_CHECK = CHECK_ALPHABET.encode()
_TO_CROCKFORD = bytes.maketrans(bytes(range(32)), _CROCKFORD)
_SERIAL_BYTES = SERIAL_BITS // 8  # 10
_SERIAL_LEN = SERIAL_SYMBOLS + 1  # 16 data symbols + the check symbol


def _symbol_plan() -> list[tuple[int, int, int, int]]:
    """For data symbol k (most significant first) of an 80-bit serial: (byte j, right shift of byte j,
    mask of byte j's bits, bits taken from byte j+1). Symbol k is bits 5k .. 5k+4 of the 10 big-endian
    bytes; it lies in byte j alone or straddles bytes j and j+1."""
    plan = []
    for k in range(SERIAL_BITS // 5):
        j, off = divmod(5 * k, 8)
        if off <= 3:
            plan.append((j, 3 - off, 31, 0))
        else:
            own = 8 - off  # bits of byte j
            plan.append((j, 0, (1 << own) - 1, 5 - own))
    return plan


_SYMBOL_PLAN = _symbol_plan()


def canonical_serials(values: Sequence[int], raw: bytes | None = None) -> list[str]:
    """Canonical stored form (16 Crockford symbols + check symbol, no dashes) of 80-bit serial values.

    Same result as ``issuer.core.serial.format_serial`` without the dashes (tests check it, edge values
    included). ``raw`` is the values as consecutive 10-byte big-endian words, if the caller has it.

    Computed column-wise, about 0.3 µs a serial: byte column j of all serials (``raw[j::10]``) is read
    as one big integer, so masks and shifts act on every serial at once ("SIMD within a register": the
    masks keep each serial's byte lane from spilling into its neighbours), and ``bytes.translate``
    maps the 5-bit lanes to Crockford symbols.
    """
    n = len(values)
    if n == 0:
        return []
    if raw is None:
        try:
            raw = b"".join([v.to_bytes(_SERIAL_BYTES, "big") for v in values])
        except (OverflowError, AttributeError, TypeError):
            raise ValueError(f"serials are ints in 0 .. 2**{SERIAL_BITS} - 1") from None
    elif len(raw) != _SERIAL_BYTES * n:
        raise ValueError("raw serial bytes do not match the values")
    fb = int.from_bytes
    cols = [fb(raw[j::_SERIAL_BYTES], "big") for j in range(_SERIAL_BYTES)]
    lane = {m: fb(bytes((m,)) * n, "big") for m in {31, *(mask for _, _, mask, _ in _SYMBOL_PLAN)}}
    lane.update({(1 << t) - 1: fb(bytes(((1 << t) - 1,)) * n, "big") for _, _, _, t in _SYMBOL_PLAN if t})
    width = _SERIAL_LEN + 1  # each serial and a newline
    out = bytearray(width * n)
    for k, (j, shift, mask, take) in enumerate(_SYMBOL_PLAN):
        if take == 0:
            x = (cols[j] >> shift) & lane[mask]
        else:
            x = ((cols[j] & lane[mask]) << take) | ((cols[j + 1] >> (8 - take)) & lane[(1 << take) - 1])
        out[k::width] = x.to_bytes(n, "big").translate(_TO_CROCKFORD)
    out[16::width] = bytes([_CHECK[v % 37] for v in values])
    out[17::width] = b"\n" * n
    return out[:-1].decode("ascii").split("\n")


def _new_serials(n: int) -> tuple[bytes, list[int]]:
    """n distinct 80-bit serials from the OS CSPRNG, as 10-byte big-endian words and as ints."""
    raw = secrets.token_bytes(_SERIAL_BYTES * n)
    fb = int.from_bytes
    values = [fb(raw[i : i + _SERIAL_BYTES], "big") for i in range(0, _SERIAL_BYTES * n, _SERIAL_BYTES)]
    if len(set(values)) != n:  # astronomically unlikely; never silently accept a clash
        seen: set[int] = set()
        for i, v in enumerate(values):
            while v in seen:
                v = secrets.randbits(SERIAL_BITS)
            seen.add(v)
            values[i] = v
        raw = b"".join([v.to_bytes(_SERIAL_BYTES, "big") for v in values])
    return raw, values


def new_serial_values(n: int) -> list[int]:
    """n distinct 80-bit serials from the OS CSPRNG."""
    return _new_serials(n)[1]


# --- the manifest --------------------------------------------------------------------------------


def manifest(batch_id: bytes, issuer: str, sku: str, face_value: int, currency: str, expiry: int,
             card_count: int, root: bytes, code_form: int = CODE_FORM_EXACT) -> dict[str, Any]:
    """The public description of a batch whose keccak256 is emitted when the batch is anchored."""
    return {
        "format": MANIFEST_FORMAT,
        "batch_id": "0x" + batch_id.hex(),
        "issuer": issuer,
        "sku": sku,
        "face_value": str(face_value),
        "currency": currency,
        "expiry": str(expiry),
        "code_form": code_form,
        "card_count": card_count,
        "root": "0x" + root.hex(),
        "leaf_encoding": LEAF_ENCODING,
    }


def manifest_hash(m: dict[str, Any]) -> bytes:
    return keccak256(json.dumps(m, sort_keys=True, separators=(",", ":")).encode())


# --- the issuer role ------------------------------------------------------------------------------


class NotAnIssuer(IssuerError, PermissionError):
    """The account minting is not an approved issuer in the registry: its batches could never be anchored."""

    code = "not_issuer"
    http_status = 403


def check_issuer_role(registry: Callable[[], Any] | None, address: str) -> str | None:
    """Check before minting that ``address`` holds ISSUER_ROLE in the registry (``registry()`` builds it), so that
    a batch is not minted only to be refused at ``anchor``. Raises NotAnIssuer when the chain says it does not.

    Returns None when the role was confirmed, else a one-line note of why it was not checked: ``registry`` None
    (minting offline, or no chain configured), no registry deployed on the chain, or a chain that does not
    answer. Minting needs no chain; ``cardproof anchor`` checks the role again in any case."""
    from chain.errors import ChainUnreachable, NotDeployed

    later = "`cardproof anchor` checks it"
    if registry is None:
        return f"the issuer role of {address} was not checked (offline, or no chain configured); {later}"
    try:
        reg = registry()
        if reg.is_issuer(address):
            return None
    except NotDeployed:
        return f"no registry is deployed on the configured chain: the issuer role was not checked; {later}"
    except ChainUnreachable:
        return f"the chain does not answer: the issuer role of {address} was not checked; {later}"
    raise NotAnIssuer(f"{address} is not an approved issuer in the registry {reg.address} (no ISSUER_ROLE): its "
                      "batches could not be anchored; nothing was minted. The platform approves issuers "
                      "(`cardproof issuer add`)")


# --- minting -------------------------------------------------------------------------------------

#: Below this many cards ``workers > 1`` is ignored: forking costs more than it saves.
PARALLEL_MIN_CARDS = 1 << 15
#: Leaves are built and hashed this many at a time (bounds the CardLeaf objects alive at once).
_LEAF_CHUNK = 1 << 16


def _resolve_codes(request: MintRequest) -> tuple[list[str], list[int] | None]:
    """The batch's codes (white space stripped, as they are committed to) and, when imported, the CSV
    line of each."""
    if request.codes_csv is not None:
        imported = read_codes_csv(Path(request.codes_csv))
        if request.count is not None and request.count != len(imported.codes):
            raise InvalidCount(request.count, len(imported.codes), len(imported.codes))
        return imported.codes, imported.lines
    count = request.count
    if count is None or isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BATCH_CARDS:
        raise InvalidCount(count, 1, MAX_BATCH_CARDS)
    return generate_codes(count, request.code_format), None


def _check_in_file_duplicates(codes: list[str], lines: list[int] | None, code_form: int = CODE_FORM_EXACT) -> None:
    """Two equal codes in one import, naming both lines. Codes are stripped, so equal codes are exactly
    those with equal fingerprints (``secrets_store.code_fingerprint`` strips, then HMACs). Codes read folded
    (``--codes-normalize``) are equal when they fold alike (``ab-1`` and ``AB1`` are one code to a cashier), and
    one that folds to nothing (``--``) is refused."""
    first_seen: dict[bytes | str, int] = {}
    for i, code in enumerate(codes):
        key: bytes | str = code
        if code_form != CODE_FORM_EXACT:
            try:
                key = canonical_code(code, code_form)
            except InvalidCode as exc:
                raise InvalidCsv(lines[i] if lines else None, f"invalid code once case, spaces and dashes are "
                                                              f"ignored: {exc}") from None
        j = first_seen.setdefault(key, i)
        if j != i:
            raise DuplicateCode(lines[i] if lines else None, lines[j] if lines else None)


def _check_duplicates(session: Session, fingerprints: list[bytes], lines: list[int] | None) -> None:
    """Codes already stored in another batch (the first one in file order is named)."""
    clash = repo.existing_fingerprints(session, fingerprints)
    if clash:
        first = next(i for i, fp in enumerate(fingerprints) if fp in clash)
        raise DuplicateCode(lines[first] if lines else None, other_batch=True)


@dataclass
class _Part:
    """What is computed per card for cards lo .. hi-1 of a batch."""

    commitments: list[bytes]
    fingerprints: list[bytes]
    leaf_hashes: list[bytes]
    ciphertexts: list[bytes]


@dataclass(frozen=True)
class _Job:
    batch_id: bytes
    sku32: bytes
    face_value: int
    cur3: bytes
    expiry: int
    code_form: int
    open_key: bytes
    enc_key: bytes
    fp_key: bytes


def _compute_part(job: _Job, codes: list[str], serial_values: list[int], lo: int, hi: int) -> _Part:
    """Commitments, fingerprints, leaf hashes and ciphertexts of cards lo .. hi-1 (codes are stripped)."""
    part_codes = codes[lo:hi]
    form = job.code_form
    canon = [canonical_code(code, form) for code in part_codes]
    sha = hashlib.sha256
    commitments = [sha(CODE_DOMAIN + op + c).digest() for op, c in zip(openings(job.open_key, lo, hi), canon)]
    # Fingerprints are of the code as stored (stripped), whatever the batch's code form: a generated code
    # (committed folded) imported again as it was printed (committed exactly) must still clash.
    fingerprints = code_fingerprints(job.fp_key, part_codes)
    del canon
    hashes: list[bytes] = []
    b, sku, fv, cur, exp = job.batch_id, job.sku32, job.face_value, job.cur3, job.expiry
    for c0 in range(lo, hi, _LEAF_CHUNK):
        c1 = min(c0 + _LEAF_CHUNK, hi)
        hashes += leaf_hashes([CardLeaf(LEAF_VERSION, b, i, serial_values[i], sku, fv, cur, exp, form,
                                        commitments[i - lo]) for i in range(c0, c1)])
    ciphertexts = CodeCipher(job.enc_key).encrypt_many(job.batch_id, part_codes, start_index=lo)
    return _Part(commitments, fingerprints, hashes, ciphertexts)


def _pack_part(part: _Part) -> bytes:
    lengths = array("I", map(len, part.ciphertexts))
    k = len(part.commitments)
    return b"".join((k.to_bytes(8, "big"), lengths.tobytes(), *part.commitments, *part.fingerprints,
                     *part.leaf_hashes, *part.ciphertexts))


def _unpack_part(data: bytes) -> _Part:
    k = int.from_bytes(data[:8], "big")
    lengths = array("I")
    lengths.frombytes(data[8 : 8 + 4 * k])
    pos = 8 + 4 * k

    def fixed(size: int) -> list[bytes]:
        nonlocal pos
        start, pos = pos, pos + size * k
        return [data[j : j + size] for j in range(start, pos, size)]

    commitments, fingerprints, hashes = fixed(32), fixed(32), fixed(32)
    ciphertexts = []
    append = ciphertexts.append
    for m in lengths:
        append(data[pos : pos + m])
        pos += m
    if pos != len(data):
        raise CoreError("minting worker process returned a malformed result")
    return _Part(commitments, fingerprints, hashes, ciphertexts)


def _compute_cards(job: _Job, codes: list[str], serial_values: list[int], workers: int) -> _Part:
    """_compute_part over the whole batch; with ``workers > 1`` the second half in a forked process
    (the work is CPU-bound: HMACs, keccak, AES-GCM)."""
    n = len(codes)
    if workers < 2 or n < PARALLEL_MIN_CARDS or not hasattr(os, "fork"):
        return _compute_part(job, codes, serial_values, 0, n)
    m = n // 2
    tail, head = run_forked(lambda: _pack_part(_compute_part(job, codes, serial_values, m, n)),
                            lambda: _compute_part(job, codes, serial_values, 0, m))
    rest = _unpack_part(tail)
    del tail
    if len(rest.commitments) != n - m:
        raise CoreError("minting worker process returned a malformed result")
    head.commitments += rest.commitments
    head.fingerprints += rest.fingerprints
    head.leaf_hashes += rest.leaf_hashes
    head.ciphertexts += rest.ciphertexts
    return head


def mint_batch(
    sessions: sessionmaker[Session],
    master_key: MasterKey,
    issuer_address: str,
    request: MintRequest,
    *,
    progress: ProgressFn = _no_progress,
    workers: int = 1,
) -> MintResult:
    """Create and store a batch for `issuer_address`; returns its id, size and Merkle root.

    ``workers=2`` uses a second process (fork) for the per-card cryptography and the tree: for the CLI
    and scripts, not for a multi-threaded server.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sku = check_sku(request.sku)
    currency = check_currency(request.currency)
    face_value = parse_face_value(request.face_value, currency)
    expiry = parse_expiry(request.expires)
    issuer = repo.checksum_address(issuer_address)

    codes, lines = _resolve_codes(request)
    if lines is not None:
        _check_in_file_duplicates(codes, lines, request.imported_code_form)
    n = len(codes)
    progress("codes", n, n)
    timings["codes_s"] = time.perf_counter() - t0

    batch_id = bytes.fromhex(issuer[2:]) + secrets.token_bytes(12)
    batch_secret = secrets.token_bytes(32)
    open_key, enc_key = derive_batch_keys(batch_secret)
    code_form = request.code_format.code_form if lines is None else request.imported_code_form

    t = time.perf_counter()
    serial_raw, serial_values = _new_serials(n)
    job = _Job(batch_id, sku_to_bytes32(sku), face_value, currency_to_bytes3(currency), expiry, code_form,
               open_key, enc_key, master_key.fingerprint_key())
    cards = _compute_cards(job, codes, serial_values, workers)
    del codes
    timings["cards_s"] = time.perf_counter() - t
    progress("commitments", n, n)

    t = time.perf_counter()
    tree = build_tree(cards.leaf_hashes, workers=workers)
    cards.leaf_hashes = []
    tree_pos = tree.tree_indices
    timings["tree_s"] = time.perf_counter() - t
    progress("tree", n, n)

    serials = canonical_serials(serial_values, serial_raw)
    del serial_values, serial_raw
    m = manifest(batch_id, issuer, sku, face_value, currency, expiry, n, tree.root, code_form)
    mhash = manifest_hash(m)
    t = time.perf_counter()
    try:
        with sessions.begin() as session:
            batch = repo.insert_batch(
                session,
                batch_id=batch_id,
                issuer_address=issuer,
                sku=sku,
                face_value=face_value,
                currency=currency,
                expiry=expiry or None,
                card_count=n,
                root="0x" + tree.root.hex(),
                manifest_hash="0x" + mhash.hex(),
                secret_ct=master_key.wrap_batch_secret(batch_id, batch_secret),
                code_form=code_form,
            )
            # How a typed code of this batch is read (issuer.codes.typed_code): by the generated codes' format;
            # imported codes as their code form says.
            batch.code_format = request.code_format.to_json() if lines is None else None
            step = max(n // 100, 10_000)
            cols = (serials, cards.ciphertexts, cards.commitments, cards.fingerprints, tree_pos)

            def rows() -> Iterator[tuple]:
                for lo in range(0, n, step):
                    progress("store", lo, n)
                    hi = min(lo + step, n)
                    yield from zip(range(lo, hi), *(c[lo:hi] for c in cols))
                progress("store", n, n)

            # A code stored in another batch trips the unique index on fingerprints; the CSV line is
            # found afterwards (checking a million fingerprints up front costs seconds).
            repo.bulk_insert_cards(session, batch.id, rows())
            repo.save_tree(session, batch.id, tree.nodes)
    except DuplicateCode as exc:
        if exc.line is not None or exc.first_line is not None:
            raise
        with sessions() as session:
            _check_duplicates(session, cards.fingerprints, lines)
        raise
    timings["store_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return MintResult(
        batch_id="0x" + batch_id.hex(),
        count=n,
        root="0x" + tree.root.hex(),
        manifest_hash="0x" + mhash.hex(),
        issuer=issuer,
        sku=sku,
        face_value=face_value,
        currency=currency,
        expiry=expiry,
        code_form=code_form,
        timings={k: round(v, 3) for k, v in timings.items()},
    )
