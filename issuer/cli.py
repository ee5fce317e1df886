"""Issuer commands: issuer add|list|serve|node|api-key, mint, anchor, batches, export, revoke, redeem, reconcile, redeemer,
db upgrade.

Thin layers: parse options, call the issuer library, present the result (`--json`: one JSON value).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from chain.cli_output import emit_json, err_console, progress, say

if TYPE_CHECKING:
    from issuer.runtime import Runtime


def Runtime() -> Runtime:  # noqa: N802 - issuer.runtime (SQLAlchemy, web3) loads only when a command runs
    from issuer.runtime import Runtime as _Runtime

    return _Runtime()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (or array).")]

issuer_app = typer.Typer(help="Manage issuers (suppliers allowed to anchor batches).", no_args_is_help=True)
redeemer_app = typer.Typer(help="Appoint or dismiss redeemers of the configured issuer's cards.",
                           no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
api_key_app = typer.Typer(help="API keys of the issuer's redeemers (POST /v1/cards/{serial}/redeem on "
                               "`cardproof issuer serve`).", no_args_is_help=True)
issuer_app.add_typer(api_key_app, name="api-key")


@issuer_app.command("add")
def issuer_add(name: Annotated[str, typer.Option(help="Display name shown to buyers.")],
               address: Annotated[str, typer.Option(help="The issuer's account address.")],
               json_out: JsonOpt = False) -> None:
    """Grant ISSUER_ROLE to ADDRESS (admin account) and keep its display name."""
    from chain.addresses import parse_address
    from issuer.issuers import add_issuer

    # A wrong EIP-55 checksum is refused before anything is sent.
    address = parse_address(address, "--address", noun="account address")
    rt = Runtime()
    result = add_issuer(rt.sessions, rt.registry, address, name)
    if json_out:
        emit_json(result)
    else:
        say(f"issuer {result['name']!r} {result['address']} {'granted ISSUER_ROLE' if result['granted'] else 'already had ISSUER_ROLE'}")


@issuer_app.command("remove")
def issuer_remove(address: Annotated[str, typer.Argument(metavar="ADDRESS", help="The issuer's account address.")],
                  json_out: JsonOpt = False) -> None:
    """Revoke ISSUER_ROLE from ADDRESS and drop its local record (run as the registry's admin, normally its deployer).

    It can anchor nothing more and vouches for nothing; its batches stay on chain. Sends nothing if ADDRESS is not
    an issuer."""
    from issuer.issuers import remove_issuer

    rt = Runtime()
    result = remove_issuer(rt.sessions, rt.registry, address)
    if json_out:
        emit_json(result)
    elif result["revoked"]:
        say(f"issuer {result['address']} ({result['name'] or 'no name'}) removed: ISSUER_ROLE revoked")
    else:
        say(f"{result['address']} is already not an issuer; nothing sent"
            + (" (its local record was dropped)" if result["record_removed"] else ""))


@issuer_app.command("list")
def issuer_list(json_out: JsonOpt = False) -> None:
    """List known issuers with their track record."""
    from issuer.issuers import list_issuers

    rows = list_issuers(Runtime().sessions)
    if json_out:
        emit_json(rows)
        return
    for r in rows:
        say(f"{r['address']}  {r['name'] or '-':20}  batches {r['batches']}  cards {r['cards']}")


def mint(
    sku: Annotated[str, typer.Option(help="Product SKU (1-32 printable ASCII characters).")],
    face_value: Annotated[str, typer.Option("--face-value", help="Face value, e.g. 20.00.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 currency, e.g. USD.")],
    count: Annotated[int | None, typer.Option(help="Number of cards to generate.")] = None,
    codes_from: Annotated[Path | None, typer.Option("--codes-from", help="CSV with a 'code' column to import.")] = None,
    expires: Annotated[str | None, typer.Option(help="Expiry date YYYY-MM-DD (UTC end of day).")] = None,
    codes_normalize: Annotated[bool, typer.Option(
        "--codes-normalize", help="With --codes-from: read the imported codes as generated ones are read, case, "
                                  "spaces and dashes ignored (default: exactly as in the file).")] = False,
    offline: Annotated[bool, typer.Option(
        "--offline", help="Do not check that the configured account is an approved issuer in the registry (checked "
                          "by default when a chain is configured or running; skipped with a note when none is, "
                          "or it does not answer).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Mint a batch for the configured account (generated codes, or imported with --codes-from). Checks first that
    the account is an approved issuer (unless --offline): a non-issuer mints nothing."""
    from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED
    from issuer.minting import MintRequest, check_issuer_role, mint_batch

    if count is None and codes_from is None:
        raise typer.BadParameter("give --count N or --codes-from FILE.csv", param_hint="--count")
    if codes_normalize and codes_from is None:
        raise typer.BadParameter("--codes-normalize goes with --codes-from FILE.csv", param_hint="--codes-normalize")
    rt = Runtime()
    issuer = _issuer_address(rt)
    chain = not offline and bool(rt.settings.rpc_url or _chain_running(rt))
    note = check_issuer_role((lambda: rt.registry) if chain else None, issuer)
    request = MintRequest(sku=sku, face_value=face_value, currency=currency, count=count, codes_csv=codes_from,
                          expires=expires, imported_code_form=CODE_FORM_FOLDED if codes_normalize else CODE_FORM_EXACT)
    with progress("minting", count) as bar:
        result = mint_batch(rt.sessions, rt.master_key, issuer, request,
                            progress=lambda phase, done, total: bar.update(done) if phase == "store" else None,
                            workers=2)
    if json_out:
        emit_json({**result.to_json(), "issuer_role": "not_checked" if note else "confirmed",
                   **({"note": note} if note else {})})
    else:
        say(f"minted batch {result.batch_id}: {result.count} cards, root {result.root}")
        if note:
            say(f"note: {note}")
        say(f"next: cardproof anchor {result.batch_id}")


def _issuer_address(rt: Runtime) -> str:
    """The account minting is for. A configured key (CARDPROOF_PRIVATE_KEY / CARDPROOF_KEYSTORE) needs no
    chain: minting works offline; otherwise the dev chain's account, or a one-line AccountError."""
    s = rt.settings
    if s.private_key is not None or s.keystore is not None:
        return _account_only(rt)
    return rt.client.address if s.rpc_url or _chain_running(rt) else _account_only(rt)


def _chain_running(rt: Runtime) -> bool:
    from chain import local_node

    return local_node.status(rt.settings.home) is not None


def _account_only(rt: Runtime) -> str:
    """The issuer address when no chain is up: the configured key (minting needs no chain)."""
    from chain.client import load_account

    return load_account(rt.settings).address


def anchor(batch: Annotated[str, typer.Argument(help="Batch id (0x...).")], json_out: JsonOpt = False) -> None:
    """Anchor a minted batch's root on chain (idempotent; resumes an interrupted attempt)."""
    from issuer.anchoring import anchor_batch

    rt = Runtime()
    quiet = json_out or not err_console.is_terminal
    status = None if quiet else err_console.status("anchoring...")
    if status:
        status.start()
    try:
        result = anchor_batch(rt.sessions, rt.registry, batch,
                              progress=None if quiet else (lambda msg: status.update(msg)))  # type: ignore[union-attr]
    finally:
        if status:
            status.stop()
    if json_out:
        emit_json(result.to_json())
    else:
        verb = "was already anchored" if result.already else "anchored"
        say(f"batch {result.batch_id} {verb} in block {result.anchor_block} (tx {result.anchor_tx})")


def batches(json_out: JsonOpt = False) -> None:
    """List batches with their state, root and anchor transaction."""
    from issuer.batches import list_batch_summaries

    rows = list_batch_summaries(Runtime().sessions)
    if json_out:
        emit_json(rows)
        return
    if not rows:
        say("no batches yet (cardproof mint ...)")
    for r in rows:
        say(f"{r['batch_id']}  {r['state']:9}  {r['card_count']:>9} x {r['sku']} {r['face_value']} {r['currency']}  "
            f"root {r['root'][:12]}…  tx {r['anchor_tx'] or '-'}")


def export(batch: Annotated[str, typer.Argument(help="Batch id (0x...).")],
           out: Annotated[Path, typer.Option("--out", help="Folder to write cards.csv, qr/, tree.json.")],
           qr: Annotated[bool, typer.Option("--qr/--no-qr", help="Write one QR image per card.")] = True,
           qr_format: Annotated[str, typer.Option("--format", help="QR image format: png, or svg (vector, for "
                                                  "print).")] = "png",
           public_url: Annotated[str | None, typer.Option("--public-url", help="Base URL the QR codes point to "
                                                          "(default: CARDPROOF_PUBLIC_URL).")] = None,
           allow_loopback: Annotated[bool, typer.Option("--allow-loopback", help="Allow QR codes pointing to "
                                                        "127.0.0.1/localhost/::1 (local tests only).")] = False,
           workers: Annotated[int | None, typer.Option(min=1, max=64, help="QR writing processes (default: one "
                                                       "per core).")] = None,
           force: Annotated[bool, typer.Option(help="Overwrite an earlier export in that folder.")] = False,
           json_out: JsonOpt = False) -> None:
    """Export a batch's codes (cards.csv, mode 0600), QR codes and OpenZeppelin tree dump."""
    from issuer.export import batch_card_count, export_batch
    from issuer.export_qr import check_format, default_workers
    from issuer.export_url import qr_public_url

    rt = Runtime()
    url = public_url or rt.settings.public_url
    url = qr_public_url(url, allow_loopback=allow_loopback) if qr else url.rstrip("/")
    check_format(qr_format)
    with progress("exporting", batch_card_count(rt.sessions, batch)) as bar:
        result = export_batch(rt.sessions, rt.master_key, batch, out, url, qr=qr, qr_format=qr_format, force=force,
                              workers=workers or default_workers(), progress=lambda _p, done, _t: bar.update(done))
    if json_out:
        emit_json(result.to_json())
    else:
        images = f", QR codes ({result.qr_format}) point to {result.public_url}/c/SERIAL" if result.qr_dir else ""
        say(f"exported {result.cards} cards of {result.batch_id} to {result.out_dir}{images}")


def publish(batch: Annotated[str, typer.Argument(help="Batch id (0x...).")],
            api: Annotated[list[str] | None, typer.Option("--api", help="Public service base URL; repeat for "
                                                          "mirrors (default: CARDPROOF_PUBLIC_URL).")] = None,
            json_out: JsonOpt = False) -> None:
    """Send the batch's public dump (leaves only, no codes) to public services, which check it against the chain."""
    from issuer.publishing import publish_batch

    rt = Runtime()
    results = [publish_batch(rt.sessions, batch, url) for url in (api or [rt.settings.public_url])]
    if json_out:
        emit_json(results if len(results) > 1 else results[0])
        return
    for r in results:
        say(f"{r['batch_id']}: {'published' if r['stored'] else 'already published'} at {r['api']} "
            f"({r['cards']} cards, root {r['root'][:12]}…)")


def revoke(serials: Annotated[list[str], typer.Argument(help="Serials of the cards to revoke.")],
           reason: Annotated[str, typer.Option(help="leaked, fraud, recalled, damaged or unspecified.")],
           json_out: JsonOpt = False) -> None:
    """Revoke cards on chain (one transaction per batch). Cards revoked already are reported so and nothing is sent
    for them (exit 0)."""
    from issuer.revocation import RevokeReason, parse_reason, revoke_serials

    rt = Runtime()
    results = revoke_serials(rt.sessions, rt.registry, serials, parse_reason(reason), repeat_ok=True)
    if json_out:
        emit_json([{**r.to_json(), "reason_name": RevokeReason(r.reason).name.lower()} for r in results])
        return
    for r in results:
        if r.already:
            say(f"already revoked: {len(r.indices)} card(s) of {r.batch_id} ({', '.join(r.serials)}), reason "
                f"{RevokeReason(r.reason).name.lower()}; nothing sent")
            continue
        say(f"revoked {len(r.indices)} card(s) of {r.batch_id}, reason {RevokeReason(r.reason).name.lower()} "
            f"(tx {r.tx_hash})")


def redeem(serial: Annotated[str, typer.Argument(help="The card's serial.")],
           code: Annotated[str | None, typer.Option(help="The card's secret code ('-' reads it from stdin).")] = None,
           json_out: JsonOpt = False) -> None:
    """Check a card's code, then mark it redeemed in the database and on chain (exactly once). Without --code the
    code is asked for (not echoed) on a terminal, and read from stdin when it is piped (`echo CODE | cardproof
    redeem SERIAL`). Typed as printed: a generated code's case, spaces and dashes do not matter."""
    from issuer.redemption import redeem_card

    if code == "-" or (code is None and sys.stdin is not None and not sys.stdin.isatty()):
        code = sys.stdin.readline().rstrip("\r\n")
    elif code is None:
        code = typer.prompt("code", hide_input=True)
    rt = Runtime()
    result = redeem_card(rt.sessions, rt.master_key, rt.registry, serial, code, rt.client.address)
    if json_out:
        emit_json(result.to_json())
    else:
        say(f"redeemed {result.serial} (tx {result.tx_hash})")


def reconcile(batch: Annotated[str | None, typer.Argument(help="Batch id (0x...); or --issuer, or --all.")] = None,
              issuer: Annotated[str | None, typer.Option("--issuer", help="Every batch of this issuer.")] = None,
              all_batches: Annotated[bool, typer.Option("--all", help="Every batch.")] = False,
              json_out: JsonOpt = False) -> None:
    """Compare the database with the chain (anchors, revocations, redemptions, recorded acts), repair what can be
    repaired (re-send lost acts, record mined ones, release claims the chain does not hold), report the rest.
    Exit 0 when consistent, 1 when something is pending or could not be repaired."""
    from issuer.reconcile import reconcile as run

    if sum(x is not None and x is not False for x in (batch, issuer, all_batches or None)) != 1:
        raise typer.BadParameter("give one of BATCH, --issuer ADDR or --all", param_hint="BATCH")
    if issuer is not None:
        from chain.addresses import parse_address

        issuer = parse_address(issuer, "--issuer")
    rt = Runtime()
    report = run(rt.sessions, rt.registry, batch_id=batch, issuer=issuer,
                 escrow=None if batch is not None else _deployed_escrow(rt))
    if json_out:
        emit_json(report.to_json())
    else:
        for f in report.findings:
            if f.status != "ok":
                say(f.line())
        say(f"{report.batches} batch(es): {'consistent' if report.consistent else 'NOT consistent'}")
    if not report.consistent:
        raise typer.Exit(1)


def stock(json_out: JsonOpt = False) -> None:
    """List the configured supplier's cards per product and batch: available, reserved for an order, delivered,
    redeemed, revoked, expired (from its database and, when an escrow is deployed, the chain)."""
    from issuer.node.stock import Stock
    from issuer.stock_listing import STATES, stock_listing

    rt = Runtime()
    supplier = rt.client.address
    escrow = _deployed_escrow(rt)
    reader = Stock(escrow, rt.registry, supplier, word_ttl=0.0) if escrow is not None else None
    with rt.sessions() as session:
        products = stock_listing(session, supplier, reader)
    if json_out:
        emit_json({"supplier": supplier, "escrow": escrow.address if escrow else None,
                   "products": [p.to_json() for p in products]})
        return
    if not products:
        say("no anchored batches")
    for p in products:
        say(f"{p.sku} {p.face_value_text} {p.currency} (product {p.product_id or '-'}): "
            + ", ".join(f"{name} {p.counts[name]}" for name in reversed(STATES)))
        for b in p.batches:
            say(f"  {b.batch_id}  {b.cards:>9} cards: " + ", ".join(f"{name} {b.counts[name]}"
                                                                   for name in reversed(STATES)))


# ----------------------------------------------------------------------------- the supplier's escrow acts
# `cardproof order deliver` and `cardproof order withdraw` as recorded acts (issuer.escrow_acts): registered into
# the public side's `order` group by cardproof/console.py (register_order_commands), replacing its own two.


def _arg_error(message: str) -> Exception:
    from issuer.errors import IssuerError

    return type("InvalidArgument", (IssuerError, ValueError), {"code": "invalid_argument"})(message)


def _batch_arg(batch: str) -> bytes:
    import re

    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", batch or ""):
        raise _arg_error(f"--batch: {batch!r} is not a batch id (0x + 64 hex digits)")
    return bytes.fromhex(batch[2:] if batch.lower().startswith("0x") else batch)


def order_deliver(
    order_id: Annotated[int, typer.Argument(help="The order id.", min=1)],
    batch: Annotated[str | None, typer.Option("--batch", help="The supplier's anchored batch id (0x + 64 hex), "
                                                             "with --range.")] = None,
    ranges: Annotated[list[str] | None, typer.Option("--range", help="Cards START:COUNT of the batch "
                                                                    "(repeatable).")] = None,
    serials: Annotated[list[str] | None, typer.Option("--serials", help="The cards by serial: S1,S2,... "
                                                                       "(repeatable; all of one batch).")] = None,
    serials_from: Annotated[Path | None, typer.Option("--serials-from", help="A file of serials (one or more a "
                                                      "line, or a CSV with a 'serial' column).")] = None,
    auto: Annotated[bool, typer.Option("--auto", help="Pick the cards from stock as the supplier's node "
                                                      "does.")] = False,
    upload: Annotated[bool, typer.Option("--upload/--no-upload", help="Upload the sealed delivery to the public "
                                                                     "service (CARDPROOF_PUBLIC_URL).")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Deliver an order (supplier): seal the cards' codes to the buyer's seal key, assign exactly QUANTITY cards
    of one of the supplier's own batches on chain with the sealed delivery's hash, and upload the sealed delivery
    to the public service. The cards: --batch with --range, or --serials / --serials-from, or --auto (reserved as
    the node reserves them: never a card the node gives). Recorded before it is sent; run again, it settles an
    interrupted delivery, redoes one the chain lost, and uploads what was not uploaded."""
    from chain.escrow import Escrow
    from chain.escrow_view import parse_ranges, ranges_json
    from issuer.delivery_seal import deliver_sealed

    by_serial = bool(serials) or serials_from is not None
    if sum((by_serial, auto, batch is not None or bool(ranges))) != 1:
        raise typer.BadParameter("give the cards one way: --batch with --range, --serials/--serials-from, or "
                                 "--auto")
    if by_serial or auto:
        from issuer.delivery_pick import read_serials, reserve_delivery

        listed = read_serials(serials or [], serials_from) if by_serial else None
    else:
        if batch is None or not ranges:
            raise typer.BadParameter("give the batch with --batch and its cards with --range START:COUNT",
                                     param_hint="--batch" if batch is None else "--range")
        batch_id = _batch_arg(batch)
        try:
            rs = parse_ranges(ranges)
        except ValueError as exc:
            raise _arg_error(str(exc)) from None
    rt = Runtime()
    escrow = Escrow.deployed(rt.client, rt.settings.home)
    if by_serial or auto:
        chosen = reserve_delivery(rt.sessions, rt.master_key, escrow, rt.registry, order_id, serials=listed,
                                  auto=auto)
        batch_id, rs = chosen.batch_id, chosen.ranges
    result = deliver_sealed(rt.sessions, rt.master_key, escrow, rt.registry,
                            order_id, batch_id, rs, public_url=rt.settings.public_url if upload else None)
    out = {"order_id": order_id, "tx": result.act.tx_hash, "status": "delivered", "batch_id": "0x" + batch_id.hex(),
           "ranges": ranges_json(rs), "sealed_hash": "0x" + result.sealed_hash.hex(), "uploaded": result.uploaded,
           "upload_error": result.upload_error}
    if result.act.already:  # a repeat (the key is there only then)
        out["already"] = True
    if json_out:
        emit_json(out)
        return
    if result.act.already:  # run again: the chain holds this delivery; nothing was sent
        say(f"order {order_id} already delivered: {result.cards} cards of batch {out['batch_id']} (sealed hash "
            f"{out['sealed_hash']}, tx {out['tx']}); nothing sent")
    else:
        say(f"order {order_id} delivered: {result.cards} cards of batch {out['batch_id']}, sealed to the buyer "
            f"(sealed hash {out['sealed_hash']}, tx {out['tx']})")
    if result.uploaded:
        say(f"the sealed delivery is on {rt.settings.public_url}: the buyer runs `cardproof order receive {order_id}`")
    elif result.upload_error:
        say(f"warning: {result.upload_error}; run `cardproof order upload {order_id}` to try again")


def order_upload(
    order_id: Annotated[int, typer.Argument(help="The order id.", min=1)],
    json_out: JsonOpt = False,
) -> None:
    """Upload an order's sealed delivery (stored when it was delivered) to the public service (supplier)."""
    from chain.escrow import Escrow
    from issuer.delivery_seal import upload_sealed

    rt = Runtime()
    escrow = Escrow.deployed(rt.client, rt.settings.home)
    body = upload_sealed(rt.sessions, rt.settings.public_url, chain_id=rt.client.chain_id, escrow=escrow.address,
                         order_id=order_id)
    if json_out:
        emit_json(body)
        return
    say(f"the sealed delivery of order {order_id} is on {rt.settings.public_url}")


def order_prove(
    order_id: Annotated[int, typer.Argument(help="The order id.", min=1)],
    chunk: Annotated[int, typer.Option(min=1, max=4096, help="Cards proven per transaction.")] = 512,
    json_out: JsonOpt = False,
) -> None:
    """Answer a membership dispute (supplier): prove the order's delivered cards in their anchored batch on chain,
    with their public leaf fields and multiproofs. Cards left unproven at the dispute's deadline are refunded."""
    from chain.escrow import Escrow
    from issuer.delivery_proof import prove_order

    rt = Runtime()
    result = prove_order(rt.sessions, Escrow.deployed(rt.client, rt.settings.home), order_id, chunk=chunk)
    if json_out:
        emit_json(result.to_json())
        return
    say(f"order {order_id}: {result.proven_now} cards proven in {len(result.txs)} transaction(s); "
        f"{result.proven_total} of {result.quantity} proven" + ("; the order is settled" if result.settled else ""))


@issuer_app.command("withdraw")
def order_withdraw(
    token: Annotated[str | None, typer.Option("--token", help="ERC-20 address (default: the dev chain's test "
                                                               "stablecoin).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Pay to this address instead of the account.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Withdraw the configured account's whole credit in a token (payouts, refunds, fees), as a recorded act."""
    from web3 import Web3
    from web3.logs import DISCARD

    from chain.addresses import parse_address
    from chain.escrow import Escrow, stablecoin_address
    from chain.escrow_view import token_meta
    from issuer.escrow_acts import withdraw_credit

    token = parse_address(token, "--token") if token is not None else None
    to = parse_address(to, "--to") if to is not None else None
    rt = Runtime()
    address = token or stablecoin_address(rt.client, rt.settings.home)
    meta = token_meta(rt.client, parse_address(address, "--token"))
    escrow = Escrow.deployed(rt.client, rt.settings.home)
    result = withdraw_credit(rt.sessions, escrow, meta.address, to)
    receipt = rt.client.get_receipt(result.tx_hash) if result.tx_hash else None
    events = escrow.contract.events.Withdrawn().process_receipt(receipt, errors=DISCARD) if receipt else []
    amount = int(events[0]["args"]["amount"]) if events else 0
    to_addr = Web3.to_checksum_address(to) if to else None
    out = {"account": rt.client.address, "to": to_addr or rt.client.address, "amount": meta.money(amount),
           "token": meta.to_json()}
    if json_out:
        emit_json(out)
        return
    say(f"withdrew {meta.fmt(amount)} {meta.symbol} to {out['to']}")


def register_order_commands(order_app: typer.Typer) -> None:
    """Register `order deliver` (the supplier's escrow act, recorded) into the public side's `order` group; the
    supplier's recorded withdrawal is `issuer withdraw` (buyers and the platform withdraw with `order withdraw`)."""
    order_app.command("deliver")(order_deliver)
    order_app.command("upload")(order_upload)
    order_app.command("prove")(order_prove)


def _deployed_escrow(rt: Runtime):  # -> chain.escrow.Escrow | None (imported lazily)
    """The CardEscrow recorded for this chain, or None when there is none."""
    from chain.deployments import recorded
    from chain.escrow import ESCROW, Escrow

    record = recorded(rt.settings.home, rt.client.chain_id, ESCROW)
    return Escrow(rt.client, record.address) if record is not None else None


@issuer_app.command("serve")
def issuer_serve(host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
                 port: Annotated[int, typer.Option(help="TCP port.")] = 8100,
                 workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes (more than one "
                                                                           "needs CARDPROOF_REDIS_URL).")] = 1,
                 log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
                 node: Annotated[bool, typer.Option("--node/--no-node", help="Also run the supplier's node (watch "
                                                    "the escrow, deliver and publish orders) when the escrow is "
                                                    "deployed.")] = True,
                 config: Annotated[Path | None, typer.Option("--config", help="The node's TOML configuration "
                                                             "(default: CARDPROOF_NODE_CONFIG, "
                                                             "$CARDPROOF_HOME/node.toml).")] = None) -> None:
    """Run the supplier's redemption service for its redeemers (API keys, EIP-191 signed requests), and the
    supplier's node in the background (`--no-node` to leave it out; `cardproof issuer node` runs it alone)."""
    import uvicorn

    from chain.errors import ConfigError
    from chain.settings import get_settings

    if workers > 1 and not get_settings().redis_url:
        # Signed requests' nonces and the rate limits must be shared by the workers.
        raise ConfigError("--workers above 1 needs CARDPROOF_REDIS_URL (shared nonces and rate limits)")
    running = _start_background_node(config) if node else None
    say(f"cardproof issuer service on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''})")
    try:
        uvicorn.run("issuer.service.app:create_app", factory=True, host=host, port=port, workers=workers,
                    lifespan="on", access_log=False, log_level=log_level, proxy_headers=False)
    finally:
        if running is not None:
            running.stop()


def _node_logging() -> None:
    """One line per handled order on stderr (``cardproof node: ...``); never a code."""
    import logging

    logger = logging.getLogger("cardproof.node")
    if not any(getattr(h, "_cardproof_node", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("cardproof node: %(message)s"))
        handler._cardproof_node = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _build_node(config_path: Path | None):  # -> issuer.node.SupplierNode | None (imported lazily)
    """The node of the configured supplier, or None when no escrow is deployed on this chain."""
    from issuer.node import SupplierNode, load_config

    import dataclasses

    from chain.deployments import recorded
    from chain.escrow import ESCROW

    rt = Runtime()
    cfg = load_config(config_path, settings=rt.settings)
    if cfg.escrow is not None:  # the escrow named in the node's configuration (checksum checked there)
        from chain.escrow import Escrow

        escrow = Escrow(rt.client, cfg.escrow)
    else:
        escrow = _deployed_escrow(rt)
    if escrow is None:
        return None
    record = recorded(rt.settings.home, rt.client.chain_id, ESCROW)
    if record is not None and record.address.lower() != escrow.address.lower():
        record = None  # another escrow than the recorded one: its deployment block is unknown
    if cfg.start_block == 0 and record is not None and record.block_number:
        cfg = dataclasses.replace(cfg, start_block=int(record.block_number))  # no order is older than the escrow
    from issuer.webhooks import hook

    # The node's events (delivered, published, out of stock, low stock) go to the supplier's webhooks, if any.
    return SupplierNode(rt, escrow, rt.registry, cfg, on_event=hook(rt.sessions, home=rt.settings.home))


def _start_background_node(config_path: Path | None):  # -> SupplierNode | None
    """Start the node next to the service; a node that cannot start is one line, and the service runs anyway."""
    from chain.errors import ChainError
    from issuer.errors import IssuerError

    _node_logging()
    try:
        running = _build_node(config_path)
    except (ChainError, IssuerError, OSError) as exc:
        sys.stderr.write(f"cardproof: the node is not running: {' '.join(str(exc).split())[:300]}\n")
        sys.stderr.flush()
        return None
    if running is None:
        say("no CardEscrow is deployed on this chain: the node is not running")
        return None
    running.start()
    say(f"cardproof node: watching escrow {running.escrow.address} for orders to {running.escrow.client.address} "
        f"({running.config.workers} workers)")
    return running


@issuer_app.command("node")
def issuer_node(once: Annotated[bool, typer.Option("--once", help="One pass (read new orders, fulfil what can "
                                                                  "be), then exit.")] = False,
                config: Annotated[Path | None, typer.Option("--config", help="The node's TOML configuration "
                                                            "(default: CARDPROOF_NODE_CONFIG, "
                                                            "$CARDPROOF_HOME/node.toml).")] = None,
                json_out: JsonOpt = False) -> None:
    """Run the supplier's node alone: watch the escrow for orders to this supplier; pick cards from stock, seal
    them to the buyer, deliver them on chain and publish the sealed delivery; one line per handled order on
    stderr. Safe to kill at any point: a restart delivers each order exactly once."""
    import signal
    import threading

    from chain.errors import ConfigError

    _node_logging()
    running = _build_node(config)
    if running is None:
        raise ConfigError("no CardEscrow is deployed on this chain (cardproof deploy)")
    if once:
        summary = running.run_once(wait_for_orders=True)
        running.stop()
        if json_out:
            emit_json(summary)
        else:
            say(" ".join(f"{state}={n}" for state, n in summary["orders"].items()) or "no orders")
        return
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    running.start()
    if not json_out:
        say(f"cardproof node: watching escrow {running.escrow.address} for orders to "
            f"{running.escrow.client.address} ({running.config.workers} workers); Ctrl-C stops")
    else:
        emit_json({"escrow": running.escrow.address, "supplier": running.escrow.client.address,
                   "config": running.config.to_json()})
    while not done.wait(0.5):
        pass
    running.stop()


@api_key_app.command("create")
def api_key_create(issuer: Annotated[str, typer.Option(help="The issuer whose cards the key may redeem.")],
                   label: Annotated[str, typer.Option(help="A note, e.g. the shop or till.")] = "",
                   role: Annotated[str, typer.Option(help="redeemer (redeems cards at a till) or erp (the "
                                                          "supplier's own systems: stock, mint jobs, orders, "
                                                          "revocation, webhooks).")] = "redeemer",
                   json_out: JsonOpt = False) -> None:
    """Create a key; it is printed once and stored only hashed."""
    from chain.addresses import parse_address
    from issuer.service.auth import create_api_key

    if role not in ("redeemer", "erp"):
        raise _arg_error(f"--role: {role!r} is not a role (redeemer or erp)")
    address = parse_address(issuer, "--issuer", noun="account address")
    with Runtime().sessions.begin() as session:
        key, row = create_api_key(session, address, label, role=role)
        info = {"key": key, "key_id": row.key_id, "issuer": row.issuer_address, "label": row.label, "role": role}
    if json_out:
        emit_json(info)
    else:
        say(f"API key for issuer {info['issuer']} (shown once, keep it secret):\n{key}")


@api_key_app.command("list")
def api_key_list(issuer: Annotated[str | None, typer.Option(help="Only this issuer's keys.")] = None,
                 json_out: JsonOpt = False) -> None:
    """List keys (ids only; secrets are never stored)."""
    from chain.addresses import parse_address
    from issuer.service.auth import list_api_keys

    address = parse_address(issuer, "--issuer") if issuer else None
    with Runtime().sessions() as session:
        rows = [{"key_id": k.key_id, "issuer": k.issuer_address, "label": k.label,
                 "created_at": k.created_at.isoformat(), "revoked": k.revoked_at is not None,
                 "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None}
                for k in list_api_keys(session, address)]
    if json_out:
        emit_json(rows)
        return
    for r in rows:
        say(f"{r['key_id']}  {r['issuer']}  {'revoked' if r['revoked'] else 'active'}  {r['label']}")
    if not rows:
        say("no API keys")


@api_key_app.command("revoke")
def api_key_revoke(key_id: Annotated[str, typer.Argument(help="The key id (or the whole key).")],
                   json_out: JsonOpt = False) -> None:
    """Revoke a key at once."""
    from issuer.service.auth import revoke_api_key

    with Runtime().sessions.begin() as session:
        done = revoke_api_key(session, key_id)
    if json_out:
        emit_json({"revoked": done})
    else:
        say("revoked" if done else "no such active key")
    if not done:
        raise typer.Exit(3)


@redeemer_app.command("add")
def redeemer_add(address: Annotated[str, typer.Argument(help="Account that may redeem your cards.")],
                 json_out: JsonOpt = False) -> None:
    """Appoint a redeemer for all of the configured issuer's batches."""
    _set_redeemer(address, True, json_out)


@redeemer_app.command("remove")
def redeemer_remove(address: Annotated[str, typer.Argument(help="Redeemer to dismiss.")],
                    json_out: JsonOpt = False) -> None:
    """Dismiss a redeemer."""
    _set_redeemer(address, False, json_out)


def _set_redeemer(address: str, allowed: bool, json_out: bool) -> None:
    from chain.addresses import parse_address
    from issuer.issuers import set_redeemer

    redeemer = parse_address(address, "ADDRESS", noun="account address")
    rt = Runtime()
    set_redeemer(rt.registry, redeemer, allowed)
    if json_out:
        emit_json({"issuer": rt.client.address, "redeemer": redeemer, "allowed": allowed,
                   "registry": rt.registry.address})
    elif allowed:
        say(f"{redeemer} may now redeem cards of {rt.client.address}")
    else:
        say(f"{redeemer} may no longer redeem cards of {rt.client.address}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (also done automatically on first use)."""
    from issuer.storage.db import head_revision, make_engine, safe_url, upgrade

    settings = Runtime().settings
    settings.home.mkdir(parents=True, exist_ok=True)
    url = settings.database_url or f"sqlite:///{settings.home}/cardproof.db"
    engine = make_engine(url)
    upgrade(engine)
    say(f"database {safe_url(url)} is at revision {head_revision()}")


def register(app: typer.Typer) -> None:
    app.add_typer(issuer_app, name="issuer")
    app.add_typer(redeemer_app, name="redeemer")
    app.add_typer(db_app, name="db")
    for fn in (mint, anchor, batches, publish, export, revoke, redeem, reconcile, stock):
        app.command(fn.__name__)(fn)
