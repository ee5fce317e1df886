"""`cardproof verify` tried as an attacker: each attack is refused, with a clear message.

The verifier's trust anchor is the registry pinned per chain id (verify_api/trust.py), checked to hold exactly the
shipped CardRegistry's runtime code; only the chain confirms a claim (verify_api/verifier.py).

These tests need no API server or database: batches are minted with the pure core (leaves v2 with their code
commitments and openings, the Merkle tree) and anchored on the chain of ``chain_env`` (the in-process chain and
anvil); answers are built in the shape of ``GET /v1/cards/{serial}`` from what the chain says, then edited as a
counterfeiter would. The library is checked for each claim's outcome, the console (``cardproof.console.main``) end
to end for exit codes and one-line errors, through a fake API on loopback or a saved answer (``--proof``).
"""

from __future__ import annotations

import copy
import io
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hexbytes import HexBytes

import chain.client
from chain.artifacts import load_artifact
from chain.registry import CardStatus, ProductSpec, Registry
from issuer.core.commitment import code_commitment, derive_opening, format_opening
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED, LEAF_ENCODING, LEAF_FIELDS, CardLeaf, \
    currency_to_bytes3, leaf_hash, sku_to_bytes32
from issuer.core.merkle import build_tree
from issuer.core.serial import canonical_serial, format_serial, new_serial_value
from tests.chainkit import ChainEnv
from tests.clikit import Cli, Run, in_process_cli
from verify_api import trust
from verify_api.verifier import (EXIT_MISMATCH, EXIT_UNKNOWN, EXIT_UNVERIFIABLE, CardSecret, InvalidCardSecret, Outcome,
                                 read_card_secret, verify)

NAME = "Acme Gift Cards"
_VERDICT = {CardStatus.VALID: "authentic", CardStatus.REVOKED: "revoked", CardStatus.REDEEMED: "redeemed",
            CardStatus.EXPIRED: "expired"}


# --------------------------------------------------------------------------------------------------- the kit


@dataclass
class Card:
    leaf: CardLeaf
    proof: list[bytes]
    code: str
    opening: bytes

    @property
    def serial(self) -> str:
        return format_serial(self.leaf.serial)

    def secret_text(self) -> str:
        return f"{self.code}\n{format_opening(self.opening)}\n"


@dataclass
class MadeBatch:
    issuer: str
    batch_id: bytes
    root: bytes
    cards: list[Card]
    sku: str
    face_value: int
    currency: str
    anchor_tx: str | None = None
    anchor_block: int | None = None
    name: str | None = NAME
    extra: dict[str, Any] = field(default_factory=dict)


def make_batch(issuer: str, n: int = 4, *, sku: str = "GC-25-USD", face_value: int = 2500, currency: str = "USD",
               code_form: int = CODE_FORM_FOLDED, name: str | None = NAME) -> MadeBatch:
    """A batch minted with the pure core: v2 leaves committing to known codes under openings from a batch key."""
    batch_id = bytes.fromhex(issuer[2:]) + os.urandom(12)
    open_key = os.urandom(32)
    leaves, codes, openings = [], [], []
    for i in range(n):
        code = f"ATK{i}-{os.urandom(5).hex().upper()}"
        opening = derive_opening(open_key, i)
        leaves.append(CardLeaf(2, batch_id, i, new_serial_value(), sku_to_bytes32(sku), face_value,
                               currency_to_bytes3(currency), 0, code_form, code_commitment(opening, code, code_form)))
        codes.append(code)
        openings.append(opening)
    tree = build_tree([leaf_hash(leaf) for leaf in leaves])
    cards = [Card(leaves[i], tree.proof_for(i), codes[i], openings[i]) for i in range(n)]
    return MadeBatch(issuer, batch_id, tree.root, cards, sku, face_value, currency, name=name)


def anchor(registry: Registry, batch: MadeBatch) -> MadeBatch:
    leaf = batch.cards[0].leaf  # anchored with the leaves' product and expiry
    receipt = registry.anchor_batch(batch.batch_id, batch.root, len(batch.cards), os.urandom(32),
                                    ProductSpec(leaf.sku, leaf.face_value, leaf.currency), expiry=leaf.expiry)
    batch.anchor_tx = HexBytes(receipt["transactionHash"]).to_0x_hex()
    batch.anchor_block = int(receipt["blockNumber"])
    return batch


def honest_answer(registry: Registry, batch: MadeBatch, index: int = 0) -> dict[str, Any]:
    """What an honest API serving ``registry`` answers about card ``index`` (verify_api/service.py's shape)."""
    card = batch.cards[index]
    leaf = card.leaf
    onchain = registry.batch(batch.batch_id)
    anchored = onchain.anchored
    if anchored:
        ok, st = registry.verify_card(leaf.as_tuple(), card.proof)
        verdict = _VERDICT[st] if ok else "unknown"
        revoked, redeemed = registry.is_revoked(batch.batch_id, index), registry.is_redeemed(batch.batch_id, index)
    else:
        verdict, revoked, redeemed = "not_yet_anchored", None, None
    hx = lambda b: "0x" + bytes(b).hex()  # noqa: E731
    return {
        "serial": card.serial, "verdict": verdict, "reason": "ok" if verdict == "authentic" else verdict,
        "status": {"revoked": revoked, "redeemed": redeemed, "source": "chain" if anchored else None},
        "issuer": {"address": batch.issuer, "name": batch.name, "has_role": registry.is_issuer(batch.issuer)},
        "product": {"sku": batch.sku, "face_value": batch.face_value, "currency": batch.currency, "expiry": 0,
                    "expiry_iso": None},
        "batch": {"id": hx(batch.batch_id), "card_count": len(batch.cards), "root": hx(batch.root),
                  "state": "anchored" if anchored else "minted", "anchor_tx": batch.anchor_tx,
                  "anchor_block": batch.anchor_block, "anchored": anchored,
                  "anchored_root": hx(onchain.root) if anchored else None,
                  "anchored_at": onchain.anchored_at if anchored else None,
                  "revoked": onchain.revoked if anchored else None,
                  "chain_id": registry.client.chain_id, "registry": registry.address},
        "proof": {"index": index, "leaf": dict(zip([n for n, _ in LEAF_FIELDS], leaf.to_json(), strict=True)),
                  "value": leaf.to_json(), "leaf_encoding": list(LEAF_ENCODING), "leaf_hash": hx(leaf_hash(leaf)),
                  "proof": [hx(p) for p in card.proof], "root": hx(batch.root)},
    }


UNKNOWN_ANSWER = {
    "serial": "0000-0000-0000-0000-0", "verdict": "unknown", "reason": "no_such_card",
    "status": {"revoked": None, "redeemed": None, "source": None},
    "issuer": {"address": None, "name": None, "has_role": None},
    "product": {"sku": None, "face_value": None, "currency": None, "expiry": None},
    "batch": {"id": None, "card_count": None, "root": None, "anchored": None, "chain_id": None, "registry": None},
    "proof": {"index": None, "leaf": {n: None for n, _ in LEAF_FIELDS}, "value": [], "leaf_hash": None, "proof": []},
}


def deploy_lookalike(env: ChainEnv, who: str = "stranger") -> Registry:
    """A second CardRegistry from the very same artifact, whose admin (``who``) makes itself an issuer named
    like the real one: its runtime code is byte for byte the real registry's."""
    client = env.client(who)
    art = load_artifact("CardRegistry")
    receipt = client.wait(client.send_deploy(art.abi, art.bytecode, client.address, gas=3_000_000).tx_hash)
    fake = Registry(client, receipt["contractAddress"])
    fake.grant_issuer(client.address, NAME)
    return fake


def deploy_runtime(env: ChainEnv, runtime: bytes) -> str:
    """Deploy a contract whose runtime code is exactly ``runtime`` (init code: CODECOPY the tail, RETURN it)."""
    n = len(runtime)
    init = bytes([0x61, n >> 8, n & 0xFF, 0x80, 0x61, 0x00, 0x0D, 0x60, 0x00, 0x39, 0x60, 0x00, 0xF3]) + runtime
    client = env.client("stranger")
    receipt = client.wait(client.send_deploy([], "0x" + init.hex(), gas=3_000_000).tx_hash)
    return receipt["contractAddress"]


def outcomes(claims) -> dict[str, Outcome]:
    return {c.claim: c.outcome for c in claims}


class FakeApi:
    """A counterfeiter's API on loopback: serves the answers it is given at /v1/cards/{serial}."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                serial = self.path.rsplit("/", 1)[-1]
                try:
                    body, status = answers[canonical_serial(serial)], 200
                except (KeyError, ValueError):
                    body, status = {"error": {"code": "not_found", "message": "no such card"}}, 404
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-api", daemon=True)

    def serve(self, answer: dict[str, Any]) -> str:
        """Serve ``answer``; returns the card page URL a QR code would hold."""
        self.answers[canonical_serial(answer["serial"])] = answer
        return f"{self.url}/c/{answer['serial']}"

    def __enter__(self) -> FakeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def real(chain_env: ChainEnv) -> Registry:
    """The platform's registry as a reader sees it; the issuer is granted under its name on chain."""
    chain_env.registry("admin").grant_issuer(chain_env.address("issuer"), NAME)
    return chain_env.registry("stranger")


@pytest.fixture
def anchored(chain_env: ChainEnv, real: Registry) -> MadeBatch:
    return anchor(chain_env.registry("issuer"), make_batch(chain_env.address("issuer")))


@pytest.fixture
def cli(chain_env: ChainEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Iterator[Cli]:
    """`cardproof` in process, reading the chain of ``chain_env``, with an empty CARDPROOF_HOME (nothing pinned)."""
    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        c.env("CARDPROOF_REGISTRIES", None)
        if chain_env.backend == "eth-tester":  # CARDPROOF_RPC_URL=eth-tester: the process's chain is this one
            monkeypatch.setattr(chain.client, "_in_process", (chain_env.extra["tester"], chain_env.admin.w3))
        else:
            c.env("CARDPROOF_RPC_URL", chain_env.extra["node"].url)
        yield c


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as fake:
        yield fake


def pin(cli: Cli, address: str) -> None:
    cli.ok("registry", "pin", address)


def assert_one_line(r: Run, *needles: str) -> None:
    assert r.err.endswith("\n") and r.err.count("\n") == 1 and r.err.startswith("cardproof: "), r
    assert "Traceback" not in r.err
    for needle in needles:
        assert needle in r.err, r


def assert_never_confirmed(r: Run) -> None:
    assert "claims confirmed on chain" not in r.out, r


# ------------------------------------------------------------------------------------------ the honest baseline


def test_honest_answer_is_confirmed_claim_by_claim(chain_env, real, anchored):
    card = anchored.cards[1]
    result = verify(honest_answer(real, anchored, 1), real, serial=card.serial,
                    secret=CardSecret(card.code, card.opening))
    assert result.outcome is Outcome.CONFIRMED and result.exit_status == 0, [c for c in result.claims
                                                                             if not c.confirmed]
    got = outcomes(result.claims)
    for wanted in ("the registry", "the chain id", "the batch is anchored", "the proof leads to the anchored root",
                   "the product is the leaf's", "the issuer's role", "the issuer's name", "the revocation bit",
                   "the redemption bit", "the anchor transaction", "the verdict 'authentic'",
                   "the code opens the card's commitment"):
        assert got[wanted] is Outcome.CONFIRMED, wanted
    assert result.chain_verdict == "authentic" and result.issuer_has_role is True and result.issuer_name == NAME
    assert result.issuer == chain_env.address("issuer")
    # A revoked card's honest answer is confirmed too: 'revoked' is what the chain says.
    chain_env.registry("issuer").revoke_cards(anchored.batch_id, [1], 1)
    result = verify(honest_answer(real, anchored, 1), real, serial=card.serial)
    assert result.outcome is Outcome.CONFIRMED and result.chain_verdict == "revoked"


def test_cli_pin_list_and_verify_an_honest_answer(chain_env, real, anchored, cli, api, tmp_path):
    assert cli.ok("registry", "list").out.startswith("no registry pinned")
    r = cli.ok("registry", "pin", real.address.lower())
    assert f"pinned CardRegistry {real.address} for chain {real.client.chain_id}" in r.out
    saved = json.loads((cli.home / "registries.json").read_text())
    assert saved == {"format": trust.FORMAT, "registries": {str(real.client.chain_id): real.address}}
    listed = cli.ok("registry", "list", "--json").json
    assert listed == [{"chain_id": real.client.chain_id, "address": real.address,
                       "pinned_by": str(cli.home / "registries.json"), "overrides_shipped": None}]

    url = api.serve(honest_answer(real, anchored, 0))
    r = cli.ok("verify", url)
    assert f"registry {real.address} on chain {real.client.chain_id}, pinned by" in r.out
    assert f"issuer {chain_env.address('issuer')}: holds ISSUER_ROLE; name on chain '{NAME}'" in r.out
    assert "✓ the registry:" in r.out and "  ✗ " not in r.out and "  ? " not in r.out
    assert r.out.rstrip().splitlines()[-1].startswith("all ") and "claims confirmed on chain" in r.out
    data = cli.ok("verify", url, "--json").json
    assert data["outcome"] == "confirmed" and data["confirmed"] is True and data["chain_verdict"] == "authentic"
    assert data["registry"]["address"] == real.address and data["issuer"]["name_on_chain"] == NAME
    # A saved answer, and CARDPROOF_REGISTRIES naming the user's file.
    f = tmp_path / "answer.json"
    f.write_text(json.dumps(honest_answer(real, anchored, 2)))
    cli.env("CARDPROOF_REGISTRIES", str(cli.home / "registries.json"))
    cli.ok("verify", "--proof", f)


# ------------------------------------------------------------------------------------- no trust anchor, no verdict


def test_no_pinned_registry_is_one_line_saying_how_to_pin(chain_env, real, anchored, cli, api):
    url = api.serve(honest_answer(real, anchored))  # names the real registry: still not taken from the answer
    r = cli.fails("verify", url)
    assert_one_line(r, f"no CardRegistry is pinned for chain {real.client.chain_id}", "cardproof registry pin",
                    "--registry")
    assert r.rc == 1
    # --registry pins it for one run.
    cli.ok("verify", url, "--registry", real.address)
    # A malformed registries file is one line too.
    cli.home.mkdir(parents=True, exist_ok=True)
    (cli.home / "registries.json").write_text('{"format": "something else"}')
    assert_one_line(cli.fails("verify", url), "is not a registries file")


def test_resolve_pin_order_and_the_shipped_list(tmp_path):
    shipped, mine = tmp_path / "shipped.json", tmp_path / "mine.json"
    a, b, c = ("0x" + d * 40 for d in "abc")
    shipped.write_text(json.dumps({"format": trust.FORMAT, "registries": {"7": a, "8": a}}))
    mine.write_text(json.dumps({"format": trust.FORMAT, "registries": {"8": b}}))
    p = trust.resolve_pin(7, user_file=mine, shipped_file=shipped)
    assert (p.address.lower(), p.source, p.overrides_shipped) == (a, trust.SOURCE_SHIPPED, None)
    p = trust.resolve_pin(8, user_file=mine, shipped_file=shipped)
    assert (p.address.lower(), p.source, p.overrides_shipped.lower()) == (b, str(mine), a)
    p = trust.resolve_pin(8, c, user_file=mine, shipped_file=shipped)
    assert (p.address.lower(), p.source) == (c, "--registry")
    with pytest.raises(trust.NoPinnedRegistry, match="chain 9: pin the platform's registry"):
        trust.resolve_pin(9, user_file=mine, shipped_file=shipped)
    for bad in ({"format": trust.FORMAT, "registries": {"one": a}},
                {"format": trust.FORMAT, "registries": {"1": "0x12"}}, [], {"registries": {}}):
        mine.write_text(json.dumps(bad))
        with pytest.raises(trust.RegistriesFileError):
            trust.load_pins(mine)
    with pytest.raises(trust.InvalidRegistryAddress):
        trust.resolve_pin(7, "not-an-address", user_file=mine, shipped_file=shipped)
    # The list shipped with the package: the documented format, empty for now.
    assert trust.load_pins(trust.SHIPPED_REGISTRIES, missing_ok=False) == {}
    assert json.loads(trust.SHIPPED_REGISTRIES.read_text())["format"] == trust.FORMAT


# ------------------------------------------------------------------------------------------ look-alike registries


def test_the_real_registry_runtime_code_is_the_artifact_exactly(chain_env, real):
    """CardRegistry has no immutables: a genuine deployment's runtime code is the artifact's deployedBytecode."""
    code = HexBytes(chain_env.admin.w3.eth.get_code(real.address))
    assert code == HexBytes(load_artifact("CardRegistry").deployed_bytecode)
    assert "immutable" not in (Path(__file__).resolve().parents[2] / "contracts" / "CardRegistry.sol").read_text()
    trust.check_registry_code(real.client, real.address)


def test_lookalike_registry_with_a_fabricated_batch_is_refused(chain_env, real, anchored, cli, api):
    fake = deploy_lookalike(chain_env)
    forged = anchor(fake, make_batch(fake.client.address))
    lie = honest_answer(fake, forged)  # all true, in the look-alike: 'authentic', anchored, role held, same name
    assert lie["verdict"] == "authentic" and lie["issuer"]["has_role"] and lie["batch"]["registry"] == fake.address
    # Same artifact, same code: the bytecode check alone cannot tell them apart; the pin does.
    trust.check_registry_code(real.client, fake.address)

    result = verify(lie, real, serial=lie["serial"])
    got = outcomes(result.claims)
    for contradicted in ("the registry", "the batch is not anchored", "the issuer's role", "the verdict 'authentic'"):
        assert got[contradicted] is Outcome.MISMATCH, contradicted
    assert got["the product is the leaf's"] is Outcome.UNVERIFIABLE  # consistent, but not on the real chain
    assert result.outcome is Outcome.MISMATCH and result.exit_status == EXIT_MISMATCH
    assert not any(c.confirmed for c in result.claims if "leaf" in c.claim or "product" in c.claim)

    pin(cli, real.address)
    r = cli("verify", api.serve(lie))
    assert r.rc == EXIT_MISMATCH
    assert_one_line(r, "claims contradicted by the chain", "the registry", "the issuer's role")
    assert_never_confirmed(r)
    assert f"the answer names '{fake.address}'; the registry pinned for chain" in r.out
    # The same answer without the registry it names: still refused.
    del lie["batch"]["registry"]
    assert cli("verify", api.serve(lie)).rc == EXIT_MISMATCH


def test_a_contract_with_other_bytecode_pinned_by_mistake_is_refused(chain_env, real, anchored, cli, api):
    runtime = bytearray(HexBytes(load_artifact("CardRegistry").deployed_bytecode))
    runtime[-20] ^= 0x01  # one bit of the metadata hash: same behaviour, not the shipped build
    other = deploy_runtime(chain_env, bytes(runtime))
    with pytest.raises(trust.NotTheRegistry, match="runtime bytecode differs"):
        trust.check_registry_code(real.client, other)
    with pytest.raises(trust.NoContractAtAddress):
        trust.check_registry_code(real.client, chain_env.address("buyer"))

    r = cli.fails("registry", "pin", other)
    assert_one_line(r, f"the contract at {other}", "is not the CardRegistry this cardproof ships")
    assert not (cli.home / "registries.json").exists()
    url = api.serve(honest_answer(real, anchored))
    assert_one_line(cli.fails("verify", url, "--registry", other), "runtime bytecode differs")
    assert_one_line(cli.fails("verify", url, "--registry", chain_env.address("buyer")), "there is no contract at")
    # Pinned in the user's file by hand: refused the same way.
    cli.home.mkdir(parents=True, exist_ok=True)
    (cli.home / "registries.json").write_text(json.dumps(
        {"format": trust.FORMAT, "registries": {str(real.client.chain_id): other}}))
    assert_one_line(cli.fails("verify", url), "is not the CardRegistry this cardproof ships")


# ------------------------------------------------------------------------------------------------- a fake API


def test_fake_api_claims_authentic_for_a_revoked_card(chain_env, real, anchored, cli, api):
    chain_env.registry("issuer").revoke_cards(anchored.batch_id, [0], 1)
    lie = honest_answer(real, anchored, 0)
    assert lie["verdict"] == "revoked"
    lie.update(verdict="authentic", reason="ok")
    lie["status"].update(revoked=False)
    got = outcomes(verify(lie, real, serial=lie["serial"]).claims)
    assert got["the verdict 'authentic'"] is Outcome.MISMATCH and got["the revocation bit"] is Outcome.MISMATCH
    assert got["the proof leads to the anchored root"] is Outcome.CONFIRMED  # the card is real, only the status lies

    pin(cli, real.address)
    r = cli("verify", api.serve(lie))
    assert r.rc == EXIT_MISMATCH
    assert_one_line(r, "2 of", "contradicted by the chain", "the revocation bit", "the verdict 'authentic'")
    assert "✗ the verdict 'authentic': CardRegistry.verifyCard says revoked (REVOKED)" in r.out
    # The whole batch revoked, the answer still says authentic.
    chain_env.registry("issuer").revoke_batch(anchored.batch_id, 2)
    lie = honest_answer(real, anchored, 1)
    lie.update(verdict="authentic")
    lie["status"].update(revoked=False)
    lie["batch"].update(revoked=False)
    assert cli("verify", api.serve(lie)).rc == EXIT_MISMATCH


@pytest.mark.parametrize("edit, contradicted", [
    (lambda a: a["product"].update(face_value=a["product"]["face_value"] * 40), "the product is the leaf's"),
    (lambda a: a["product"].update(currency="EUR"), "the product is the leaf's"),
    # The leaf edited too: it no longer folds to the anchored root.
    (lambda a: (a["product"].update(face_value=100_000), a["proof"]["value"].__setitem__(5, "100000"),
                a["proof"]["leaf"].update(faceValue="100000")), "the proof leads to the anchored root"),
])
def test_fake_api_changes_the_face_value(chain_env, real, anchored, cli, api, edit, contradicted):
    lie = copy.deepcopy(honest_answer(real, anchored, 3))
    edit(lie)
    result = verify(lie, real, serial=lie["serial"])
    assert outcomes(result.claims)[contradicted] is Outcome.MISMATCH and result.exit_status == EXIT_MISMATCH
    pin(cli, real.address)
    r = cli("verify", api.serve(lie))
    assert r.rc == EXIT_MISMATCH and contradicted in r.err
    assert_one_line(r)
    assert_never_confirmed(r)


def test_leaf_claiming_another_product_than_its_batch_is_not_authentic(chain_env, real, cli, api):
    """The "wrong product" attack: an issuer anchors a batch as 1.00 USD cards whose leaves (and so whose root)
    say 100.00 USD. The proof folds to the anchored root, but the chain fixed the batch's product when it was
    anchored: verifyCard rejects the leaf, and the answer's 'authentic' (and its product) are never confirmed."""
    made = make_batch(chain_env.address("issuer"), 2, sku="GC-1-USD", face_value=100_00)
    leaf = made.cards[0].leaf
    receipt = chain_env.registry("issuer").anchor_batch(made.batch_id, made.root, len(made.cards), os.urandom(32),
                                                        ProductSpec.of("GC-1-USD", 1_00, "USD"), expiry=leaf.expiry)
    made.anchor_tx, made.anchor_block = HexBytes(receipt["transactionHash"]).to_0x_hex(), int(receipt["blockNumber"])
    onchain = real.batch(made.batch_id)
    assert onchain.anchored and onchain.root == made.root
    assert real.product(onchain.product_id) == ProductSpec.of("GC-1-USD", 1_00, "USD")
    assert real.verify_card(leaf.as_tuple(), made.cards[0].proof) == (False, CardStatus.UNKNOWN)

    lie = honest_answer(real, made, 0)
    assert lie["verdict"] == "unknown"  # an honest reader of the chain does not call it authentic
    lie.update(verdict="authentic", reason="ok")
    result = verify(lie, real, serial=lie["serial"])
    got = outcomes(result.claims)
    assert result.chain_verdict == "unknown" and result.exit_status == EXIT_MISMATCH
    assert got["the verdict 'authentic'"] is Outcome.MISMATCH
    assert got["the proof leads to the anchored root"] is Outcome.CONFIRMED  # the root alone proves nothing
    assert got["the product is the leaf's"] is not Outcome.CONFIRMED
    assert not any(c.confirmed for c in result.claims if "leaf" in c.claim or "product" in c.claim)

    pin(cli, real.address)
    r = cli("verify", api.serve(lie))
    assert r.rc == EXIT_MISMATCH and "the verdict 'authentic'" in r.err
    assert_one_line(r)
    assert_never_confirmed(r)
    # Even an answer that does not claim authenticity is not confirmed: the chain does not hold this leaf.
    assert verify(honest_answer(real, made, 1), real).outcome is not Outcome.CONFIRMED


# ------------------------------------------------------------------------------------ cards the chain never saw


def test_fabricated_unanchored_card_is_unverifiable_never_confirmed(chain_env, real, anchored, cli, api):
    # The counterfeiter mints its own leaf under the real issuer's address, with a product of its choice, and
    # says "not yet anchored": the answer is consistent, the issuer real and named on chain.
    invented = make_batch(chain_env.address("issuer"), 1, sku="GC-500-USD", face_value=50_000)
    lie = honest_answer(real, invented)
    assert lie["verdict"] == "not_yet_anchored"
    result = verify(lie, real, serial=lie["serial"])
    got = outcomes(result.claims)
    assert result.outcome is Outcome.UNVERIFIABLE and result.exit_status == EXIT_UNVERIFIABLE
    for claim in ("the product is the leaf's", "the serial is the leaf's", "the leaf hash",
                  "the proof leads to the claimed root", "the verdict 'not_yet_anchored'"):
        assert got[claim] is Outcome.UNVERIFIABLE, claim
    assert got["the batch is not anchored"] is Outcome.CONFIRMED  # the chain confirms only that
    assert got["the issuer's role"] is Outcome.CONFIRMED and result.chain_verdict == "not_yet_anchored"
    product = next(c for c in result.claims if c.claim == "the product is the leaf's")
    assert "the chain does not hold this card" in product.detail

    pin(cli, real.address)
    r = cli("verify", api.serve(lie))
    assert r.rc == EXIT_UNVERIFIABLE == 3
    assert_one_line(r, "not confirmed: the chain cannot confirm", "the product is the leaf's")
    assert_never_confirmed(r)
    assert "? the product is the leaf's" in r.out
    data = cli("verify", api.serve(lie), "--json").json
    assert data["outcome"] == "unverifiable" and data["confirmed"] is False

    # Under an invented issuer, the chain contradicts it: no such issuer.
    nobody = make_batch("0x" + os.urandom(20).hex(), 1, name=None)
    lie = honest_answer(real, nobody)
    assert outcomes(verify(lie, real).claims)["the issuer's role"] is Outcome.MISMATCH
    assert cli("verify", api.serve(lie)).rc == EXIT_MISMATCH
    # Claiming "not yet anchored" for a card of an anchored batch is contradicted.
    lie = honest_answer(real, anchored, 2)
    lie.update(verdict="not_yet_anchored")
    lie["batch"].update(anchored=False)
    assert outcomes(verify(lie, real).claims)["the batch is anchored"] is Outcome.MISMATCH


def test_unknown_card_is_not_genuine_and_never_confirmed(chain_env, real, cli, api):
    result = verify(copy.deepcopy(UNKNOWN_ANSWER), real, serial=UNKNOWN_ANSWER["serial"])
    assert result.outcome is Outcome.UNKNOWN and not any(c.confirmed for c in result.claims)
    pin(cli, real.address)
    r = cli("verify", api.serve(copy.deepcopy(UNKNOWN_ANSWER)))
    assert r.rc == EXIT_UNKNOWN
    assert_one_line(r, "unknown card", "not genuine")
    assert_never_confirmed(r)
    # 'authentic' without any leaf or proof is contradicted.
    bare = copy.deepcopy(UNKNOWN_ANSWER)
    bare.update(verdict="authentic")
    assert verify(bare, real).exit_status == EXIT_MISMATCH


# ------------------------------------------------------------------------------------------------- the issuer


def test_struck_off_issuer_fails_even_in_an_anchored_batch(chain_env, real, anchored, cli, api):
    chain_env.registry("admin").revoke_issuer(chain_env.address("issuer"))
    honest = honest_answer(real, anchored, 0)
    assert honest["verdict"] == "authentic" and honest["issuer"]["has_role"] is False  # verifyCard ignores roles
    for answer in (honest, {**honest, "issuer": {**honest["issuer"], "has_role": True}},
                   {**honest, "issuer": {**honest["issuer"], "has_role": None}}):
        result = verify(answer, real, serial=answer["serial"])
        role = next(c for c in result.claims if c.claim == "the issuer's role")
        assert role.outcome is Outcome.MISMATCH and "does not hold ISSUER_ROLE" in role.detail
        assert result.exit_status == EXIT_MISMATCH and result.issuer_has_role is False
    pin(cli, real.address)
    r = cli("verify", api.serve(honest))
    assert r.rc == EXIT_MISMATCH
    assert_one_line(r, "the issuer's role")
    assert "does NOT hold ISSUER_ROLE (struck off" in r.out
    assert_never_confirmed(r)


def test_issuer_name_comes_from_the_chain(chain_env, real, anchored, cli, api):
    lie = honest_answer(real, anchored, 0)
    lie["issuer"]["name"] = "Acme Gift Cards Official"
    named = next(c for c in verify(lie, real).claims if c.claim == "the issuer's name")
    assert named.outcome is Outcome.MISMATCH and "on chain: 'Acme Gift Cards'" in named.detail
    pin(cli, real.address)
    assert_one_line(cli("verify", api.serve(lie)), "the issuer's name")

    # issuer2 holds the role, granted without a name: a name in the answer is not backed by the chain.
    plain = anchor(chain_env.registry("issuer2"), make_batch(chain_env.address("issuer2"), name="Beta Vouchers"))
    answer = honest_answer(real, plain, 0)
    result = verify(answer, real)
    named = next(c for c in result.claims if c.claim == "the issuer's name")
    assert named.outcome is Outcome.UNVERIFIABLE and named.detail.startswith("no name on chain")
    assert result.exit_status == EXIT_UNVERIFIABLE and result.issuer_name == ""
    r = cli("verify", api.serve(answer))
    assert r.rc == EXIT_UNVERIFIABLE and "; no name on chain" in r.out
    # Claiming no name, when the chain has none, is fine.
    answer["issuer"]["name"] = None
    assert verify(answer, real).exit_status == 0


# --------------------------------------------------------------------------------------------- the card's code


def test_code_and_opening_from_stdin(chain_env, real, anchored, cli, api, monkeypatch):
    card = anchored.cards[2]
    pin(cli, real.address)
    url = api.serve(honest_answer(real, anchored, 2))
    secrets = (card.code, format_opening(card.opening), card.opening.hex())

    def run(stdin: str, *args: str) -> Run:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        r = cli("verify", url, "--code", "-", *args)
        for s in secrets:
            assert s not in r.out and s not in r.err and s.lower() not in r.out.lower() + r.err.lower(), r
        return r

    r = run(card.secret_text())
    assert r.rc == 0 and "✓ the code opens the card's commitment" in r.out, r
    # The folded form: typed in lower case without dashes, with blank lines around.
    assert run(f"\n  {card.code.lower().replace('-', '')}  \n\n{format_opening(card.opening).lower()}\n").rc == 0
    assert run(card.secret_text(), "--json").json["outcome"] == "confirmed"

    other = anchored.cards[0]
    for wrong in (f"{other.code}\n{format_opening(card.opening)}\n",       # another card's code
                  f"{card.code}\n{format_opening(other.opening)}\n",       # another card's opening
                  f"{card.code}X\n{format_opening(card.opening)}\n"):      # a typo
        r = run(wrong)
        assert r.rc == EXIT_MISMATCH
        assert_one_line(r, "the code opens the card's commitment")
        assert "✗ the code opens the card's commitment: the code and opening given do not open" in r.out

    for bad, why in (("", "stdin holds no code"), (f"{card.code}\n", "no opening on a second line"),
                     (f"{card.code}\n{format_opening(card.opening)[:-3]}\n", "is not an opening")):
        r = run(bad)
        assert r.rc == 1 and r.out == ""
        assert_one_line(r, why)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    r = cli("verify", url, "--code", card.code)
    assert r.rc == 1 and card.code not in r.err + r.out
    assert_one_line(r, "--code -")


def test_code_checks_in_the_library(chain_env, real, anchored):
    card = anchored.cards[0]
    exact = anchor(chain_env.registry("issuer"), make_batch(chain_env.address("issuer"), 2,
                                                              code_form=CODE_FORM_EXACT))
    e = exact.cards[1]
    ok = verify(honest_answer(real, exact, 1), real, secret=read_card_secret(e.secret_text()))
    assert outcomes(ok.claims)["the code opens the card's commitment"] is Outcome.CONFIRMED
    folded = read_card_secret(f"{e.code.lower()}\n{format_opening(e.opening)}")
    assert outcomes(verify(honest_answer(real, exact, 1), real, secret=folded).claims)[
        "the code opens the card's commitment"] is Outcome.MISMATCH  # codeForm 0: exact
    # A right code for a card the chain does not hold is unverifiable, never confirmed.
    pending = make_batch(chain_env.address("issuer"), 1)
    p = pending.cards[0]
    claims = verify(honest_answer(real, pending), real, secret=read_card_secret(p.secret_text())).claims
    assert outcomes(claims)["the code opens the card's commitment"] is Outcome.UNVERIFIABLE
    assert outcomes(verify(copy.deepcopy(UNKNOWN_ANSWER), real, secret=read_card_secret(card.secret_text())).claims)[
        "the code opens the card's commitment"] is Outcome.UNVERIFIABLE
    # The secret never shows.
    s = read_card_secret(card.secret_text())
    assert card.code not in repr(s) + str(s) and format_opening(card.opening) not in repr(s)
    with pytest.raises(InvalidCardSecret) as err:
        read_card_secret(f"{card.code}\nnot-an-opening-{card.code}")
    assert card.code not in str(err.value)
