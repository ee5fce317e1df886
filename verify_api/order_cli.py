"""`cardproof order ...`, `cardproof faucet` and `cardproof index`: the public side's commands over the escrow,
thin layers over chain/escrow.py (and chain/escrow_view.py) and the event indexer.

The order commands are the buyer's and the platform's: they need no card secret and no database (even
`order deliver` takes only a batch id and card ranges, signed by the configured account). Only `cardproof
index` needs a database, the public one: it imports the indexer (verify_api/indexer.py) and the public database
(verify_api/storage/db.py) lazily, inside the command.

Amounts are typed as decimals in token units (``--unit-price 9.50``) and converted with the token's
``decimals()``; the token is the dev chain's test stablecoin unless ``--token ADDRESS`` names another.
Every failure is a :class:`chain.errors.CardproofError`: the console prints one line and exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from chain.cli_output import emit_json, say
from chain.errors import ChainError, InvalidDeliveryDeadline, InvalidDisputeWindow, NotDeployed, OrderNotFound
from chain.escrow_view import TokenMeta, format_duration, format_time, order_json, parse_duration, token_meta

__all__ = ["InvalidArgument", "NotDevChain", "order_app", "register"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="ERC-20 address (default: the dev chain's test "
                                                                "stablecoin).")]
OrderArg = Annotated[int, typer.Argument(metavar="ORDER", min=0, help="The order id.")]

order_app = typer.Typer(help="Escrow orders paid in a stablecoin: open, deliver, confirm, dispute, resolve, "
                             "release, cancel, withdraw, show.", no_args_is_help=True)


class InvalidArgument(ChainError, ValueError):
    """A malformed address, batch id, card range or SKU given on the command line."""

    code = "invalid_argument"


class NotDevChain(ChainError):
    """The command works on development chains only."""

    code = "not_dev_chain"


@dataclass
class _Ctx:
    client: Any
    home: Path

    @property
    def escrow(self) -> Any:
        from chain.escrow import Escrow

        return Escrow.deployed(self.client, self.home)

    def token(self, address: str | None) -> TokenMeta:
        if address is None:
            from chain.escrow import stablecoin_address

            try:
                address = stablecoin_address(self.client, self.home)
            except NotDeployed:
                raise NotDeployed(f"no test stablecoin is deployed on chain {self.client.chain_id}: pass "
                                  "--token ADDRESS (or run `cardproof deploy` on a dev chain)") from None
        return token_meta(self.client, _address(address, "--token"))


def _ctx() -> _Ctx:
    from chain.client import connect
    from chain.settings import get_settings

    settings = get_settings()
    return _Ctx(connect(settings), settings.home)


def _address(text: str, what: str) -> str:
    """The checksummed address; AddressError (one line) for a malformed one or a wrong EIP-55 checksum."""
    from chain.addresses import parse_address  # eth-utils: loaded by the commands, not by --help

    return parse_address(text, what)


def _tx(receipt: Any) -> str:
    from hexbytes import HexBytes

    return HexBytes(receipt["transactionHash"]).to_0x_hex()


def _event_args(escrow: Any, receipt: Any, name: str) -> dict[str, Any] | None:
    from web3.logs import DISCARD

    logs = getattr(escrow.contract.events, name)().process_receipt(receipt, errors=DISCARD)
    return dict(logs[0]["args"]) if logs else None


def _order(escrow: Any, order_id: int) -> Any:
    order = escrow.order(order_id)
    if not order.exists:
        raise OrderNotFound(order_id=order_id)
    return order


def _when(timestamp: int) -> str:
    return format_time(timestamp)


def _human_order(info: dict[str, Any]) -> list[str]:
    sym = info["token"]["symbol"]
    lines = [f"order {info['order_id']}: {info['status']}",
             f"  buyer    {info['buyer']}",
             f"  supplier {info['supplier']}",
             (f"  {info['quantity']} x {info['unit_price']['amount']} {sym} = {info['amount']['amount']} {sym} "
              f"(fee {info['fee_bps'] / 100:g}%)"),
             (f"  deliver by {_when(info['delivery_deadline'])}; "
              f"dispute window {format_duration(info['dispute_window'])}")]
    if info.get("min_expiry"):
        lines.append(f"  cards valid at least until {_when(info['min_expiry'])}")
    if info["delivery"]:
        ranges = ", ".join(f"{r['start']}..{r['start'] + r['length'] - 1}" for r in info["delivery"]["ranges"])
        lines.append(f"  delivered {_when(info['delivered_at'])}: batch {info['delivery']['batch_id']} cards {ranges}")
        lines.append(f"  dispute window ends {_when(info['dispute_window_end'])}")
    if info.get("dispute_deadline"):
        lines.append(f"  dispute deadline {_when(info['dispute_deadline'])} (then the default outcome applies)")
    return lines


# ---------------------------------------------------------------------------------------------- commands


def _product_id(client: Any, escrow: Any, sku: str | None, face_value: str | None, currency: str | None,
                product: int | None) -> tuple[int, Any]:
    """The registry id of the product named by --product, or by --sku/--face-value/--currency (face value in the
    currency's units, e.g. 20.00 USD)."""
    from decimal import Decimal, InvalidOperation

    from chain.registry import ProductSpec, Registry

    registry = Registry(client, escrow.registry_address)
    if product is not None:
        spec = registry.product(product)
        if spec is None:
            raise InvalidArgument(f"--product: there is no product {product} in the registry")
        return product, spec
    if not (sku and face_value and currency):
        raise InvalidArgument("name the product: --product ID, or --sku, --face-value and --currency")
    if not sku.isascii() or len(sku.encode()) > 32:
        raise InvalidArgument(f"--sku: {sku!r} is not 1 to 32 ASCII characters")
    cur = currency.strip().upper()
    if len(cur) != 3 or not cur.isalpha() or not cur.isascii():
        raise InvalidArgument(f"--currency: {currency!r} is not an ISO 4217 code like USD")
    try:
        from babel.numbers import get_currency_precision

        minor = Decimal(face_value.strip()).scaleb(get_currency_precision(cur))
    except (InvalidOperation, ValueError):
        raise InvalidArgument(f"--face-value: {face_value!r} is not an amount like 20.00") from None
    if minor != minor.to_integral_value() or minor <= 0:
        raise InvalidArgument(f"--face-value: {face_value!r} has more decimals than {cur} has, or is not positive")
    spec = ProductSpec.of(sku, int(minor), cur)
    pid = registry.product_id_of(spec)
    if not pid:
        raise InvalidArgument(f"no batch of {sku} {face_value} {cur} was ever anchored: there is no such product "
                              "to order")
    return pid, spec


def _expiry_arg(text: str | None) -> int:
    import datetime as dt

    if not text:
        return 0
    raw = text.strip()
    if raw.isdigit():  # "2027" is a year, "1796195400" a Unix time: a bare number is not what people mean
        raise InvalidArgument(f"--min-expiry: {text!r} is a bare number; give a date, YYYY-MM-DD (like 2027-12-31)")
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise InvalidArgument(f"--min-expiry: {text!r} is not a date (YYYY-MM-DD)") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def _seal_key_arg(text: str | None) -> bytes | None:
    if text is None:
        return None
    raw = text.strip().removeprefix("0x")
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != 33 or key[0] not in (2, 3):
        raise InvalidArgument("--seal-key: a compressed secp256k1 public key, 0x + 66 hex digits starting 02 or 03")
    return key


@order_app.command("open")
def order_open(
    supplier: Annotated[str, typer.Option(help="The supplier's address (an issuer of the registry).")],
    quantity: Annotated[int, typer.Option(min=1, help="Number of cards.")],
    unit_price: Annotated[str, typer.Option("--unit-price", help="Price of one card in token units, e.g. 9.50.")],
    deadline: Annotated[str, typer.Option(help="Delivery deadline from now, with its unit: 3d, 12h, 1d12h, "
                                               "90m (a bare number is refused).")] = "3d",
    dispute_window: Annotated[str, typer.Option("--dispute-window", help="Time the buyer has to dispute a "
                                                                        "delivery: 1d, 12h, ...")] = "1d",
    permit: Annotated[bool, typer.Option("--permit", help="Approve with an EIP-2612 permit signed here, in the "
                                                          "same transaction (no separate approve).")] = False,
    token: TokenOpt = None,
    sku: Annotated[str | None, typer.Option(help="Product SKU (ASCII, at most 32 bytes).")] = None,
    face_value: Annotated[str | None, typer.Option("--face-value", help="Face value of one card in the "
                                                                         "currency's units, e.g. 20.00.")] = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217 currency of the face value, e.g. USD.")] = None,
    product: Annotated[int | None, typer.Option("--product", min=1, help="The registry's product id (instead of "
                                                                          "--sku/--face-value/--currency).")] = None,
    min_expiry: Annotated[str | None, typer.Option("--min-expiry", help="The cards must be valid at least until "
                                                                         "this date (YYYY-MM-DD).")] = None,
    seal_key: Annotated[str | None, typer.Option("--seal-key", help="Seal the codes to this compressed secp256k1 "
                                                                     "public key (default: your account's key).")]
    = None,
    json_out: JsonOpt = False,
) -> None:
    """Open and fund an order for cards of one product (approve + open, or one transaction with --permit). The
    supplier seals the codes to your seal key; `order receive` fetches and checks them."""
    # What needs no chain is checked first: a bad address, key or duration sends (and reads) nothing.
    supplier_addr = _address(supplier, "--supplier")
    min_expiry_s = _expiry_arg(min_expiry)
    key = _seal_key_arg(seal_key)
    deadline_s = parse_duration(deadline, what="--deadline")
    window_s = parse_duration(dispute_window, what="--dispute-window")
    if token is not None:
        _address(token, "--token")
    ctx = _ctx()
    product_id, spec = _product_id(ctx.client, ctx.escrow, sku, face_value, currency, product)
    meta = ctx.token(token)
    price = meta.parse(unit_price, what="--unit-price")
    escrow = ctx.escrow
    client = ctx.client
    now = int(client.w3.eth.get_block("latest")["timestamp"])
    amount = quantity * price
    # The window rules are checked here too (preflight_open does not), so nothing is approved for an order
    # the escrow would refuse; the errors are the ones the contract would revert with.
    rules = escrow.rules()
    if deadline_s > rules.max_delivery_period:
        raise InvalidDeliveryDeadline(deadline=now + deadline_s, now=now, latest=now + rules.max_delivery_period)
    if not rules.min_dispute_window <= window_s <= rules.max_dispute_window:
        raise InvalidDisputeWindow(dispute_window=window_s, min_window=rules.min_dispute_window,
                                   max_window=rules.max_dispute_window)
    approve_tx = None
    before = client.block_number()
    if permit:
        order_id = escrow.open_order_with_permit(supplier_addr, product_id, quantity, meta.address, price,
                                                 now + deadline_s, window_s, min_expiry=min_expiry_s, seal_key=key)
    else:
        # Check what would make the order revert before spending gas on an approval.
        escrow.preflight_open(supplier_addr, quantity, meta.address, price, check_allowance=False)
        if escrow.token(meta.address).allowance(client.address, escrow.address) < amount:
            approve_tx = _tx(escrow.approve(meta.address, amount))
        # Checked just above (and the approval covers the allowance): the send still simulates the call.
        order_id = escrow.open_order(supplier_addr, product_id, quantity, meta.address, price, now + deadline_s,
                                     window_s, min_expiry=min_expiry_s, seal_key=key, preflight=False)
    logs = escrow.contract.events.OrderOpened().get_logs(argument_filters={"orderId": order_id},
                                                         from_block=before + 1)
    info = order_json(escrow.order(order_id), meta)
    out = {"order_id": order_id, "tx": logs[-1]["transactionHash"].to_0x_hex() if logs else None,
           "approve_tx": approve_tx, "permit": permit, "product_id": product_id, "sku": spec.sku_text,
           "face_value": spec.face_value, "currency": spec.currency_text, "min_expiry": min_expiry_s, "order": info}
    if json_out:
        emit_json(out)
        return
    say(f"order {order_id} opened and funded: {quantity} x {spec.sku_text} (product {product_id}) at "
        f"{info['unit_price']['amount']} {meta.symbol} = {info['amount']['amount']} {meta.symbol} held in escrow "
        f"(tx {out['tx']})")


def _confirmed_already(order: Any, account: str) -> bool:
    """A repeated `order confirm` by the order's buyer: like `anchor`, it says so and sends nothing. Any other state
    is for the chain to answer (a released or resolved order refuses a confirmation: exit 1)."""
    from chain.escrow import OrderStatus

    return order.status == OrderStatus.CONFIRMED and order.buyer.lower() == account.lower()


def _settled(command: str, order_id: int, json_out: bool) -> None:
    ctx = _ctx()
    escrow = ctx.escrow
    order = _order(escrow, order_id)
    meta = token_meta(ctx.client, order.token)
    if command == "confirm" and _confirmed_already(order, ctx.client.address):
        out = {"order_id": order_id, "tx": None, "status": "confirmed", "already": True}
        if json_out:
            emit_json(out)
        else:
            say(f"order {order_id} already confirmed; nothing sent")
        return
    result = escrow.confirm(order_id) if command == "confirm" else escrow.release(order_id)
    out = {"order_id": order_id, "tx": _tx(result.receipt),
           "status": "confirmed" if command == "confirm" else "released",
           "revoked_cards": result.revoked_cards, "supplier_amount": meta.money(result.supplier_amount),
           "fee": meta.money(result.fee), "buyer_refund": meta.money(result.buyer_refund), "token": meta.to_json()}
    if json_out:
        emit_json(out)
        return
    extra = (f"; {result.revoked_cards} revoked cards refunded to the buyer: {meta.fmt(result.buyer_refund)} "
             f"{meta.symbol}") if result.revoked_cards else ""
    say(f"order {order_id} {out['status']}: supplier credited {meta.fmt(result.supplier_amount)} {meta.symbol}, "
        f"fee {meta.fmt(result.fee)} {meta.symbol}{extra} (tx {out['tx']}); withdraw with `cardproof order withdraw`")


@order_app.command("confirm")
def order_confirm(order_id: OrderArg, json_out: JsonOpt = False) -> None:
    """Accept a delivery (buyer) and settle: the supplier is credited, revoked cards are refunded. Run again on the
    confirmed order, it says so and sends nothing."""
    _settled("confirm", order_id, json_out)


@order_app.command("release")
def order_release(order_id: OrderArg, json_out: JsonOpt = False) -> None:
    """Settle a delivered order once its dispute window has passed (anyone)."""
    _settled("release", order_id, json_out)


@order_app.command("dispute")
def order_dispute(
    order_id: OrderArg,
    membership: Annotated[bool, typer.Option("--membership", help="Dispute that the delivered cards are in their "
                                                                   "batch at all: the supplier must prove them on "
                                                                   "chain by the deadline, else they are refunded.")]
    = False,
    json_out: JsonOpt = False,
) -> None:
    """Dispute a delivery within the dispute window (buyer). An arbiter may resolve it until its deadline; after
    it, anyone may settle it with the default outcome (`order release`: what an undisputed release pays; with
    --membership, the cards the supplier did not prove are refunded too)."""
    escrow = _ctx().escrow
    _order(escrow, order_id)
    tx = _tx(escrow.dispute_membership(order_id) if membership else escrow.dispute(order_id))
    deadline = escrow.order(order_id).dispute_deadline
    out = {"order_id": order_id, "tx": tx, "status": "disputed", "membership": membership,
           "dispute_deadline": deadline}
    if json_out:
        emit_json(out)
        return
    if membership:
        say(f"order {order_id}: membership disputed (tx {tx}); the supplier must prove the cards on chain by "
            f"{_date(deadline)}; after that `order release` refunds every card left unproven")
        return
    say(f"order {order_id} disputed (tx {tx}); an arbiter may resolve it until "
        f"{_date(deadline)}, after which anyone may settle it with the default outcome (order release)")


@order_app.command("withdraw-dispute")
def order_withdraw_dispute(order_id: OrderArg, json_out: JsonOpt = False) -> None:
    """Withdraw your dispute (buyer): the order is delivered again while its dispute window is open and the
    deadline has not passed, else it settles at once with the default outcome."""
    escrow = _ctx().escrow
    _order(escrow, order_id)
    result = escrow.withdraw_dispute(order_id)
    status = "released" if result.settled else "delivered"
    out = {"order_id": order_id, "tx": _tx(result.receipt), "status": status, "settled": result.settled}
    if json_out:
        emit_json(out)
        return
    say(f"order {order_id}: dispute withdrawn; " + ("settled with the default outcome" if result.settled
                                                     else "delivered again, its dispute window as it was")
        + f" (tx {out['tx']})")


def _date(ts: int) -> str:
    return format_time(ts)


@order_app.command("resolve")
def order_resolve(
    order_id: OrderArg,
    buyer_amount: Annotated[str, typer.Option("--buyer-amount", help="Share refunded to the buyer, token units.")],
    supplier_amount: Annotated[str, typer.Option("--supplier-amount",
                                                 help="Share paid to the supplier (before the fee), token units.")],
    json_out: JsonOpt = False,
) -> None:
    """Split a disputed order's escrow (arbiter); the two shares must add up to the order's amount."""
    ctx = _ctx()
    escrow = ctx.escrow
    order = _order(escrow, order_id)
    meta = token_meta(ctx.client, order.token)
    buyer = meta.parse(buyer_amount, what="--buyer-amount", allow_zero=True)
    supplier = meta.parse(supplier_amount, what="--supplier-amount", allow_zero=True)
    receipt = escrow.resolve(order_id, buyer, supplier)
    args = _event_args(escrow, receipt, "OrderResolved") or {}
    fee = int(args.get("fee", 0))
    out = {"order_id": order_id, "tx": _tx(receipt), "status": "resolved", "buyer_amount": meta.money(buyer),
           "supplier_amount": meta.money(supplier - fee), "fee": meta.money(fee), "token": meta.to_json()}
    if json_out:
        emit_json(out)
        return
    say(f"order {order_id} resolved: buyer credited {meta.fmt(buyer)} {meta.symbol}, supplier "
        f"{meta.fmt(supplier - fee)} {meta.symbol} after a fee of {meta.fmt(fee)} {meta.symbol} (tx {out['tx']})")


@order_app.command("cancel")
def order_cancel(order_id: OrderArg, json_out: JsonOpt = False) -> None:
    """Take the full refund of an undelivered order after its delivery deadline (buyer)."""
    ctx = _ctx()
    escrow = ctx.escrow
    order = _order(escrow, order_id)
    meta = token_meta(ctx.client, order.token)
    receipt = escrow.cancel(order_id)
    refund = int((_event_args(escrow, receipt, "OrderCancelled") or {}).get("refund", order.amount))
    out = {"order_id": order_id, "tx": _tx(receipt), "status": "cancelled", "refund": meta.money(refund),
           "token": meta.to_json()}
    if json_out:
        emit_json(out)
        return
    say(f"order {order_id} cancelled: {meta.fmt(refund)} {meta.symbol} credited back to the buyer (tx {out['tx']}); "
        "withdraw with `cardproof order withdraw`")


@order_app.command("withdraw")
def order_withdraw(
    token: TokenOpt = None,
    to: Annotated[str | None, typer.Option("--to", help="Pay to this address instead of the account.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Withdraw the configured account's whole credit in a token (payouts, refunds, fees)."""
    ctx = _ctx()
    meta = ctx.token(token)
    to_addr = _address(to, "--to") if to is not None else None
    escrow = ctx.escrow
    amount = escrow.withdraw(meta.address, to_addr)
    out = {"account": ctx.client.address, "to": to_addr or ctx.client.address, "amount": meta.money(amount),
           "token": meta.to_json()}
    if json_out:
        emit_json(out)
        return
    say(f"withdrew {meta.fmt(amount)} {meta.symbol} to {out['to']}")


FileOpt = Annotated[Path | None, typer.Option("--file", help="Read the sealed delivery from this file instead of "
                                                             "the public service (CARDPROOF_PUBLIC_URL).")]


def _seal_private_key(ctx: _Ctx, key_file: Path | None) -> bytes:
    """The buyer's seal key: the account key, or the private key (hex) in ``key_file`` for a key named at opening.
    A key of the wrong length or outside the secp256k1 range is refused in one line that never shows it."""
    from chain.private_keys import parse_private_key

    if key_file is None:
        return bytes(ctx.client.account.key)
    try:
        text = key_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not a text file"
        raise InvalidArgument(f"--seal-key-file: cannot read {key_file}: {why}") from None
    return parse_private_key(text, f"--seal-key-file: the key in {key_file}")


def _registry(ctx: _Ctx, escrow: Any) -> Any:
    from chain.registry import Registry

    return Registry(ctx.client, escrow.registry_address)


def _say_report(received: Any, *, codes_written: bool) -> None:
    report = received.report
    say(f"order {report.order_id}: sealed delivery {received.sealed_hash} matches the escrow's record; "
        f"{sum(c.ok for c in report.cards)} of {len(report.cards)} cards pass every check")
    for problem in report.problems:
        say(f"  ! {problem}")
    if report.missing:
        say(f"  ! {len(report.missing)} delivered cards are missing from the sealed delivery: "
            f"{', '.join(map(str, report.missing[:20]))}{' ...' if len(report.missing) > 20 else ''}")
    for card in report.failed_cards[:50]:
        say(f"  ✗ card {card.index} ({card.serial}): failed {', '.join(card.failed)}")
    if len(report.failed_cards) > 50:
        say(f"  ... and {len(report.failed_cards) - 50} more")
    if codes_written:
        say(f"cards written to {received.cards_csv} (mode 0600)")


@order_app.command("receive")
def order_receive(
    order_id: Annotated[int | None, typer.Argument(metavar="[ORDER]", min=0, help="The order id (omit it with "
                                                                                  "--watch).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the cards (CSV, mode 0600).")]
    = Path("cards.csv"),
    confirm: Annotated[bool, typer.Option("--confirm", help="Confirm the order when every card passed (settles "
                                                            "it: the supplier is paid).")] = False,
    key_file: Annotated[Path | None, typer.Option("--seal-key-file", help="File with the private seal key (hex) "
                                                                          "named when the order was opened "
                                                                          "(default: the account's key).")] = None,
    file: FileOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Wait for deliveries to every order of the account: "
                                                        "receive and check each one, confirm it when every card "
                                                        "passes, else dispute it and print the evidence key.")]
    = False,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="With --watch: where the cards go "
                                                                   "(order-ID-cards.csv, mode 0600; default: the "
                                                                   "current directory).")] = None,
    no_confirm: Annotated[bool, typer.Option("--no-confirm", help="With --watch: check and write the cards, "
                                                                  "confirm nothing.")] = False,
    no_dispute: Annotated[bool, typer.Option("--no-dispute", help="With --watch: dispute nothing (failures are "
                                                                  "reported with their evidence key).")] = False,
    interval: Annotated[float | None, typer.Option("--interval", min=0.05, help="With --watch: seconds between "
                                                                                "polls (default 0.5).")] = None,
    once: Annotated[bool, typer.Option("--once", help="With --watch: one pass, then exit.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Fetch the order's sealed delivery, check it against the escrow's record, open it with your seal key and
    check every card against the chain (in the anchored root, code opens its commitment, the order's product,
    delivered in this order only, not revoked, not redeemed). Writes the cards to --out and says which failed.
    With --watch (and no ORDER): do that for every delivery to your orders as it comes, and confirm or dispute."""
    from chain.settings import get_settings
    from verify_api.order_receive import DeliveryCheckFailed, receive

    if watch:
        if order_id is not None:
            raise InvalidArgument("--watch watches every order of the account: give no ORDER with it")
        if file is not None or confirm or force:
            raise InvalidArgument("--watch takes --out-dir, --no-confirm, --no-dispute, --interval, --once and "
                                  "--seal-key-file; not --file, --confirm or --force")
        _receive_watch(out_dir=out_dir, confirm=not no_confirm, dispute=not no_dispute,
                       interval=0.5 if interval is None else interval, once=once, key_file=key_file,
                       json_out=json_out)
        return
    if out_dir is not None or no_confirm or no_dispute or interval is not None or once:
        raise InvalidArgument("--out-dir, --no-confirm, --no-dispute, --interval and --once go with --watch")
    if order_id is None:
        raise InvalidArgument("ORDER: give the order id to receive (or --watch to wait for every delivery to your "
                              "orders)")
    if out.exists() and not force:
        raise InvalidArgument(f"--out: {out} exists; pick another file or pass --force")
    ctx = _ctx()
    escrow = ctx.escrow
    received = receive(escrow, _registry(ctx, escrow), order_id, _seal_private_key(ctx, key_file),
                       public_url=get_settings().public_url, path=file, out=out)
    confirmed_tx = None
    if confirm and received.report.ok:
        confirmed_tx = _tx(escrow.confirm(order_id).receipt)
    body = {**received.to_json(), "confirmed_tx": confirmed_tx}
    if json_out:
        emit_json(body)
    else:
        _say_report(received, codes_written=True)
        if confirmed_tx:
            say(f"order {order_id} confirmed (tx {confirmed_tx}): the supplier is paid")
    if not received.report.ok:
        failed = len(received.report.failed_cards) + len(received.report.missing)
        hint = ("not confirmed; dispute with `cardproof order dispute " + str(order_id)
                + (" --membership`" if received.report.problems else "`")) if confirm else "do not confirm the order"
        raise DeliveryCheckFailed(f"order {order_id}: {failed} cards failed their checks; {hint}")


def _receive_watch(*, out_dir: Path | None, confirm: bool, dispute: bool, interval: float, once: bool,
                   key_file: Path | None, json_out: bool) -> None:
    import threading

    from chain.settings import get_settings
    from verify_api.buyer_watch import BuyerWatcher

    settings = get_settings()
    ctx = _ctx()
    escrow = ctx.escrow
    directory = Path(".") if out_dir is None else out_dir
    if directory.exists() and not directory.is_dir():
        raise InvalidArgument(f"--out-dir: {directory} is not a directory")

    def show(result: Any) -> None:
        if json_out:
            emit_json(result.to_json())
        else:
            say(result.summary())

    watcher = BuyerWatcher(escrow, _registry(ctx, escrow), _seal_private_key(ctx, key_file),
                           public_url=settings.public_url, out_dir=directory, confirm=confirm, dispute=dispute,
                           on_result=show, from_block=_escrow_block(ctx))
    try:
        if once:
            watcher.run_once()
            return
        if not json_out:
            say(f"watching the deliveries to the orders of {ctx.client.address} every {interval:g} s; cards go to "
                f"{directory}; Ctrl-C to stop")
        stop = threading.Event()
        try:
            watcher.run_forever(interval, stop)
        except KeyboardInterrupt:
            stop.set()
    finally:
        watcher.close()


def _escrow_block(ctx: _Ctx) -> int:
    """The block the escrow was deployed in (where its events start), 0 if unknown."""
    from chain.deployments import find
    from chain.escrow import ESCROW

    try:
        return max(0, int(find(ctx.client, ctx.home, ESCROW).block_number))
    except (ChainError, TypeError, ValueError):
        return 0


@order_app.command("evidence")
def order_evidence(
    order_id: OrderArg,
    key_file: Annotated[Path | None, typer.Option("--seal-key-file", help="File with the private seal key (hex) "
                                                                          "named when the order was opened "
                                                                          "(default: the account's key).")] = None,
    file: FileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the evidence key of the order's sealed delivery (buyer): it opens this one delivery and nothing
    else, and reveals nothing of your keys. Give it to the arbiter, who runs `cardproof order review`."""
    from chain.settings import get_settings
    from verify_api.order_receive import evidence_key_of

    ctx = _ctx()
    key = evidence_key_of(ctx.escrow, order_id, _seal_private_key(ctx, key_file),
                          public_url=get_settings().public_url, path=file)
    out = {"order_id": order_id, "evidence_key": "0x" + key.hex()}
    if json_out:
        emit_json(out)
        return
    say(out["evidence_key"])


@order_app.command("review")
def order_review(
    order_id: OrderArg,
    evidence_key: Annotated[str, typer.Option("--evidence-key", help="The buyer's evidence key of this delivery "
                                                                     "(from `cardproof order evidence`).")],
    file: FileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a delivery card by card with the buyer's evidence key (arbiter): what the chain confirms of each
    card. Codes are not shown."""
    from chain.settings import get_settings
    from verify_api.order_receive import parse_key_hex, review

    key = parse_key_hex(evidence_key, "--evidence-key")
    ctx = _ctx()
    escrow = ctx.escrow
    received = review(escrow, _registry(ctx, escrow), order_id, key, public_url=get_settings().public_url,
                      path=file)
    if json_out:
        emit_json({**received.to_json(), "cards_checked": [c.to_json() for c in received.report.cards]})
        return
    _say_report(received, codes_written=False)
    for card in received.report.cards[:200]:
        marks = " ".join(f"{name}={'yes' if ok else 'NO'}" for name, ok in card.results.items())
        say(f"  card {card.index} {card.serial}: {marks}")


@order_app.command("show")
def order_show(order_id: OrderArg, json_out: JsonOpt = False) -> None:
    """Show an order as the escrow holds it now."""
    ctx = _ctx()
    escrow = ctx.escrow
    order = _order(escrow, order_id)
    _, ranges = escrow.delivery(order_id)
    info = order_json(order, token_meta(ctx.client, order.token), ranges)
    if json_out:
        emit_json(info)
        return
    for line in _human_order(info):
        say(line)


@order_app.command("list")
def order_list(
    buyer: Annotated[str | None, typer.Option("--buyer", help="Orders of this buyer ('me': the account).")] = None,
    supplier: Annotated[str | None, typer.Option("--supplier", help="Orders to this supplier ('me': the "
                                                                    "account).")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only orders in this status (funded, delivered, "
                                                                "disputed, confirmed, released, resolved, "
                                                                "cancelled).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the escrow's orders as the chain holds them (id, buyer, supplier, product, quantity, amount, status,
    delivery deadline): the buyer's, the supplier's or, unfiltered, all (the platform)."""
    from verify_api.order_list import list_orders, parse_status

    wanted = parse_status(status)
    ctx = _ctx()
    who = {name: (ctx.client.address if text.strip().lower() == "me" else _address(text, f"--{name}"))
           for name, text in (("buyer", buyer), ("supplier", supplier)) if text is not None}
    escrow = ctx.escrow
    rows = list_orders(escrow, _registry(ctx, escrow), status=wanted, from_block=_escrow_block(ctx), **who)
    if json_out:
        emit_json([r.to_json() for r in rows])
        return
    for row in rows:
        say(row.line())
    if not rows:
        say("no orders")


def faucet_command(
    address: Annotated[str, typer.Argument(metavar="ADDRESS", help="Who receives the tokens.")],
    amount: Annotated[str, typer.Argument(metavar="AMOUNT", help="How much, in token units, e.g. 100.")],
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Mint test stablecoins to ADDRESS (dev chains only; the deployer of the test stablecoin mints)."""
    from chain.escrow import Token, faucet

    ctx = _ctx()
    if not ctx.client.is_dev_chain:
        raise NotDevChain(f"the faucet works on dev chains only; chain {ctx.client.chain_id} is not one "
                          "(get real stablecoins there)")
    to = _address(address, "ADDRESS")
    meta = ctx.token(token)
    units = meta.parse(amount, what="AMOUNT")
    receipt = faucet(ctx.client, meta.address, to, units)
    balance = Token(ctx.client, meta.address).balance_of(to)
    out = {"to": to, "amount": meta.money(units), "balance": meta.money(balance), "token": meta.to_json(),
           "tx": _tx(receipt)}
    if json_out:
        emit_json(out)
        return
    say(f"minted {meta.fmt(units)} {meta.symbol} to {to}; balance {meta.fmt(balance)} {meta.symbol}")


def index_command(
    once: Annotated[bool, typer.Option("--once", help="Catch up to the confirmed head once, then exit.")] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between polls of the chain.")] = 2.0,
    confirmations: Annotated[int | None, typer.Option(min=0, help="Index only blocks with this many blocks on top "
                                                                 "(default CARDPROOF_CONFIRMATIONS).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per pass that did something.")]
    = False,
) -> None:
    """Mirror the registry's and the escrow's events into the database (reorg-safe; resumes where it stopped)."""
    import threading

    from chain.settings import get_settings
    # Lazy: the indexer and the public database (CARDPROOF_PUBLIC_DATABASE_URL) are needed by this command only.
    from verify_api.indexer import build_indexer, read_client, run_forever
    from verify_api.storage.db import open_public_database

    settings = get_settings()
    if confirmations is None:
        confirmations = settings.confirmations
    _engine, sessions = open_public_database(settings)
    client = read_client(settings)

    def build() -> Any:
        return build_indexer(settings, confirmations=confirmations, sessions=sessions, client=client)

    indexer = build()

    def show(report: Any) -> None:
        if json_out:
            emit_json(report.to_json())
        else:
            say(report.summary())

    if once:
        show(indexer.run_once())
        return
    if not json_out:
        say(f"indexing chain {indexer.chain_id} ({', '.join(c.name for c in indexer.contracts)}) every "
            f"{interval:g} s with {confirmations} confirmations; Ctrl-C to stop")
    stop = threading.Event()
    try:
        run_forever(indexer, interval, stop, on_report=lambda r: show(r) if (r.events or r.reorg) else None,
                    refresh=build)
    except KeyboardInterrupt:
        stop.set()


def keeper_command(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between polls of the chain.")] = 0.5,
    from_block: Annotated[int | None, typer.Option("--from-block", min=0, help="Follow the escrow's events from "
                                                                              "this block (default: its "
                                                                              "deployment).")] = None,
    max_per_pass: Annotated[int, typer.Option("--max-per-pass", min=1, help="Releases tried per pass at most.")]
    = 200,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per action.")] = False,
) -> None:
    """Settle what nobody else will (anyone may run it, several at once): release delivered orders whose dispute
    window has passed and disputed ones whose dispute deadline has passed. One line per action."""
    import threading

    from verify_api.keeper import Keeper

    ctx = _ctx()
    escrow = ctx.escrow
    start = _escrow_block(ctx) if from_block is None else from_block
    keeper = Keeper(escrow, from_block=start, max_per_pass=max_per_pass)

    def show(actions: list[Any]) -> None:
        for action in actions:
            if json_out:
                emit_json(action.to_json())
            else:
                say(action.summary())

    if once:
        show(keeper.run_once())
        return
    if not json_out:
        say(f"keeping escrow {escrow.address} every {interval:g} s as {ctx.client.address}; Ctrl-C to stop")
    stop = threading.Event()
    try:
        keeper.run_forever(interval, stop, on_actions=show)
    except KeyboardInterrupt:
        stop.set()


def register(app: typer.Typer) -> None:
    app.add_typer(order_app, name="order")
    app.command("faucet")(faucet_command)
    app.command("index")(index_command)
    app.command("keeper")(keeper_command)
