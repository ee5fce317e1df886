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
from web3 import Web3

from chain.cli_output import emit_json, say
from chain.errors import ChainError, InvalidDeliveryDeadline, InvalidDisputeWindow, NotDeployed, OrderNotFound
from chain.escrow_view import TokenMeta, format_duration, order_json, parse_duration, token_meta

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
    if not Web3.is_address(text or ""):
        raise InvalidArgument(f"{what}: {text!r} is not an address (0x + 40 hex digits)")
    return Web3.to_checksum_address(text)


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
    import datetime as dt

    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _human_order(info: dict[str, Any]) -> list[str]:
    sym = info["token"]["symbol"]
    lines = [f"order {info['order_id']}: {info['status']}",
             f"  buyer    {info['buyer']}",
             f"  supplier {info['supplier']}",
             (f"  {info['quantity']} x {info['unit_price']['amount']} {sym} = {info['amount']['amount']} {sym} "
              f"(fee {info['fee_bps'] / 100:g}%)"),
             (f"  deliver by {_when(info['delivery_deadline'])}; "
              f"dispute window {format_duration(info['dispute_window'])}")]
    if info["delivery"]:
        ranges = ", ".join(f"{r['start']}..{r['start'] + r['length'] - 1}" for r in info["delivery"]["ranges"])
        lines.append(f"  delivered {_when(info['delivered_at'])}: batch {info['delivery']['batch_id']} cards {ranges}")
    return lines


# ---------------------------------------------------------------------------------------------- commands


@order_app.command("open")
def order_open(
    supplier: Annotated[str, typer.Option(help="The supplier's address (an issuer of the registry).")],
    sku: Annotated[str, typer.Option(help="Product SKU (ASCII, at most 32 bytes).")],
    quantity: Annotated[int, typer.Option(min=1, help="Number of cards.")],
    unit_price: Annotated[str, typer.Option("--unit-price", help="Price of one card in token units, e.g. 9.50.")],
    deadline: Annotated[str, typer.Option(help="Delivery deadline from now: 3d, 12h, 1d12h, ...")] = "3d",
    dispute_window: Annotated[str, typer.Option("--dispute-window", help="Time the buyer has to dispute a "
                                                                        "delivery: 1d, 12h, ...")] = "1d",
    permit: Annotated[bool, typer.Option("--permit", help="Approve with an EIP-2612 permit signed here, in the "
                                                          "same transaction (no separate approve).")] = False,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Open and fund an order as the configured account (approve + open, or one transaction with --permit)."""
    from chain.escrow import sku_bytes

    ctx = _ctx()
    supplier_addr = _address(supplier, "--supplier")
    try:
        sku_bytes(sku)
        if not sku or not sku.isascii():
            raise ValueError
    except ValueError:
        raise InvalidArgument(f"--sku: {sku!r} is not 1 to 32 ASCII characters") from None
    meta = ctx.token(token)
    price = meta.parse(unit_price, what="--unit-price")
    deadline_s = parse_duration(deadline, what="--deadline")
    window_s = parse_duration(dispute_window, what="--dispute-window")
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
        order_id = escrow.open_order_with_permit(supplier_addr, sku, quantity, meta.address, price, now + deadline_s,
                                                 window_s)
    else:
        # Check what would make the order revert before spending gas on an approval.
        escrow.preflight_open(supplier_addr, quantity, meta.address, price, check_allowance=False)
        if escrow.token(meta.address).allowance(client.address, escrow.address) < amount:
            approve_tx = _tx(escrow.approve(meta.address, amount))
        # Checked just above (and the approval covers the allowance): the send still simulates the call.
        order_id = escrow.open_order(supplier_addr, sku, quantity, meta.address, price, now + deadline_s, window_s,
                                     preflight=False)
    logs = escrow.contract.events.OrderOpened().get_logs(argument_filters={"orderId": order_id},
                                                         from_block=before + 1)
    info = order_json(escrow.order(order_id), meta)
    out = {"order_id": order_id, "tx": logs[-1]["transactionHash"].to_0x_hex() if logs else None,
           "approve_tx": approve_tx, "permit": permit, "sku": sku, "order": info}
    if json_out:
        emit_json(out)
        return
    say(f"order {order_id} opened and funded: {quantity} x {info['unit_price']['amount']} {meta.symbol} = "
        f"{info['amount']['amount']} {meta.symbol} held in escrow (tx {out['tx']})")


def _settled(command: str, order_id: int, json_out: bool) -> None:
    ctx = _ctx()
    escrow = ctx.escrow
    order = _order(escrow, order_id)
    meta = token_meta(ctx.client, order.token)
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
    """Accept a delivery (buyer) and settle: the supplier is credited, revoked cards are refunded."""
    _settled("confirm", order_id, json_out)


@order_app.command("release")
def order_release(order_id: OrderArg, json_out: JsonOpt = False) -> None:
    """Settle a delivered order once its dispute window has passed (anyone)."""
    _settled("release", order_id, json_out)


@order_app.command("dispute")
def order_dispute(order_id: OrderArg, json_out: JsonOpt = False) -> None:
    """Dispute a delivery within the dispute window (buyer). An arbiter may resolve it until its deadline; after
    it, anyone may settle it with the default outcome (`order release`: what an undisputed release pays)."""
    escrow = _ctx().escrow
    _order(escrow, order_id)
    tx = _tx(escrow.dispute(order_id))
    deadline = escrow.order(order_id).dispute_deadline
    out = {"order_id": order_id, "tx": tx, "status": "disputed", "dispute_deadline": deadline}
    if json_out:
        emit_json(out)
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
    import datetime as dt

    return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else "-"


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


def register(app: typer.Typer) -> None:
    app.add_typer(order_app, name="order")
    app.command("faucet")(faucet_command)
    app.command("index")(index_command)
