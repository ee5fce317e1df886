"""`cardproof order ...` and `cardproof faucet` through the console on the in-process chain: every flow of an
order (confirm, permit, dispute + resolve, cancel, release, withdraw), --json shapes, and one line on stderr
with a non-zero exit for every kind of bad input."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_account import Account

from chain.client import ChainClient, dev_account_for, shared_in_process_web3
from chain.escrow import Escrow, Token, stablecoin_address
from chain.registry import Registry

BUYER_KEY = "0x" + "b1" * 32
ARBITER_KEY = "0x" + "a7" * 32


@dataclass
class Platform:
    admin: ChainClient  # deployer, supplier (an issuer), minter of the test stablecoin
    buyer: str
    arbiter: str
    registry: Registry
    escrow: Escrow
    coin: str
    tester: object
    _batches: int = 0

    @property
    def supplier(self) -> str:
        return self.admin.address

    cli: Any = None

    def batch(self, cards: int = 100) -> str:
        """A batch of real cards of the orders' product (GAME-10, 10.00 USD), minted and anchored by the supplier."""
        self._batches += 1
        minted = self.cli.ok("mint", "--sku", "GAME-10", "--face-value", "10.00", "--currency", "USD", "--count",
                             cards, "--json").json
        self.cli.ok("anchor", minted["batch_id"])
        self.admin._next_nonce = None
        return minted["batch_id"]

    def now(self) -> int:
        return int(self.admin.w3.eth.get_block("latest")["timestamp"])

    def travel(self, seconds: int) -> None:
        self.tester.time_travel(self.now() + seconds)

    def balance(self, who: str) -> int:
        return Token(self.admin, self.coin).balance_of(who)


@pytest.fixture
def platform(cli) -> Platform:
    cli.ok("deploy")
    tester, w3 = shared_in_process_web3()
    admin = ChainClient(w3, dev_account_for(w3, w3.eth.chain_id), backend="eth-tester")
    cli.ok("issuer", "add", "--name", "Acme", "--address", admin.address)
    buyer, arbiter = Account.from_key(BUYER_KEY).address, Account.from_key(ARBITER_KEY).address
    for who in (buyer, arbiter):
        admin.wait(admin.send_value(who, 10**19).tx_hash)
    escrow = Escrow.deployed(admin, cli.home)
    escrow.grant_arbiter(arbiter)
    faucet = cli.ok("faucet", buyer, "100", "--json").json
    assert faucet["amount"] == {"amount": "100.00", "units": "100000000", "symbol": "tUSD"}
    assert faucet["balance"]["amount"] == "100.00" and faucet["token"]["decimals"] == 6
    p = Platform(admin, buyer, arbiter, Registry.deployed(admin, cli.home), escrow,
                 stablecoin_address(admin, cli.home), tester, cli=cli)
    p.batch(cards=1)  # registers the product on chain (a product exists once a batch of it is anchored)
    return p


def open_order(cli, p: Platform, *extra: str, quantity: int = 2, price: str = "9.50") -> dict:
    cli.act_as(BUYER_KEY)
    try:
        return cli.ok("order", "open", "--supplier", p.supplier, "--sku", "GAME-10", "--face-value", "10.00",
                      "--currency", "USD", "--quantity", quantity,
                      "--unit-price", price, *extra, "--json").json
    finally:
        cli.act_as(None)


def as_buyer(cli, *args):
    cli.act_as(BUYER_KEY)
    try:
        return cli(*args)
    finally:
        cli.act_as(None)


def test_open_deliver_confirm_withdraw(cli, platform):
    p = platform
    opened = open_order(cli, p)
    order = opened["order"]
    assert opened["order_id"] == 1 and opened["permit"] is False and opened["approve_tx"].startswith("0x")
    assert opened["tx"].startswith("0x") and opened["sku"] == "GAME-10" and opened["product_id"] == 1
    assert order["status"] == "funded" and order["buyer"] == p.buyer and order["supplier"] == p.supplier
    assert order["quantity"] == 2 and order["unit_price"]["amount"] == "9.50" and order["amount"]["units"] == "19000000"
    assert order["dispute_window"] == 86_400 and order["delivery_deadline"] - p.now() <= 3 * 86_400
    assert p.balance(p.buyer) == 81_000_000

    batch = p.batch()
    delivered = cli.ok("order", "deliver", "1", "--batch", batch, "--range", "0:1", "--range", "10:1",
                       "--no-upload", "--json").json
    assert delivered == {"order_id": 1, "tx": delivered["tx"], "status": "delivered", "batch_id": batch,
                         "ranges": [{"start": 0, "length": 1}, {"start": 10, "length": 1}],
                         "sealed_hash": "0x" + p.escrow.order(1).sealed_hash.hex(), "uploaded": False,
                         "upload_error": None}
    shown = cli.ok("order", "show", "1", "--json").json
    assert shown["status"] == "delivered" and shown["delivery"]["batch_id"] == batch
    assert shown["dispute_window_end"] == shown["delivered_at"] + 86_400
    human = cli.ok("order", "show", "1").out
    assert "order 1: delivered" in human and "2 x 9.50 tUSD = 19.00 tUSD" in human and "0..0, 10..10" in human

    r = as_buyer(cli, "order", "confirm", "1", "--json")
    assert r.rc == 0, r
    confirmed = r.json
    assert confirmed["status"] == "confirmed" and confirmed["revoked_cards"] == 0
    assert confirmed["supplier_amount"]["amount"] == "19.00" and confirmed["fee"]["amount"] == "0.00"
    before = p.balance(p.supplier)
    withdrawn = cli.ok("order", "withdraw", "--json").json
    assert withdrawn["amount"]["amount"] == "19.00" and withdrawn["to"] == p.supplier
    assert p.balance(p.supplier) - before == 19_000_000
    assert cli.ok("order", "show", "1", "--json").json["status"] == "confirmed"
    cli.fails("order", "withdraw", match="NothingToWithdraw")


def test_open_with_permit(cli, platform):
    p = platform
    opened = open_order(cli, p, "--permit", "--deadline", "12h", "--dispute-window", "2h", quantity=3, price="0.01")
    assert opened["permit"] is True and opened["approve_tx"] is None
    assert opened["order"]["amount"]["amount"] == "0.03" and opened["order"]["dispute_window"] == 7_200
    assert Token(p.admin, p.coin).allowance(p.buyer, p.escrow.address) == 0  # the permit's allowance was spent


def test_dispute_and_resolve(cli, platform):
    p = platform
    open_order(cli, p, quantity=2, price="10")
    cli.ok("order", "deliver", "1", "--batch", p.batch(), "--range", "0:2")
    assert as_buyer(cli, "order", "dispute", "1", "--json").json["status"] == "disputed"
    cli.act_as(ARBITER_KEY)
    cli.fails("order", "resolve", "1", "--buyer-amount", "5", "--supplier-amount", "5", match="InvalidSplit")
    resolved = cli.ok("order", "resolve", "1", "--buyer-amount", "5.25", "--supplier-amount", "14.75",
                      "--json").json
    assert resolved["buyer_amount"]["amount"] == "5.25" and resolved["supplier_amount"]["amount"] == "14.75"
    assert resolved["fee"]["units"] == "0"
    cli.act_as(None)
    assert p.escrow.credits(p.buyer, p.coin) == 5_250_000
    assert "withdrew 5.25 tUSD" in as_buyer(cli, "order", "withdraw").out


def test_cancel_after_the_deadline(cli, platform):
    p = platform
    open_order(cli, p, "--deadline", "1h")
    r = as_buyer(cli, "order", "cancel", "1")
    assert r.rc == 1 and "DeliveryDeadlineNotPassed" in r.err and r.err.count("\n") == 1
    p.travel(3_700)
    cancelled = as_buyer(cli, "order", "cancel", "1", "--json").json
    assert cancelled["status"] == "cancelled" and cancelled["refund"]["amount"] == "19.00"
    assert as_buyer(cli, "order", "withdraw", "--json").json["amount"]["amount"] == "19.00"
    assert p.balance(p.buyer) == 100_000_000


def test_release_after_the_dispute_window(cli, platform):
    p = platform
    open_order(cli, p, "--dispute-window", "1h")
    cli.ok("order", "deliver", "1", "--batch", p.batch(), "--range", "5:2")
    cli.fails("order", "release", "1", match="DisputeWindowOpen")
    p.travel(3_700)
    r = as_buyer(cli, "order", "dispute", "1")
    assert r.rc == 1 and "DisputeWindowClosed" in r.err
    released = cli.ok("order", "release", "1", "--json").json
    assert released["status"] == "released" and released["supplier_amount"]["amount"] == "19.00"
    assert cli.ok("order", "show", "1").out.startswith("order 1: released\n")


BAD_OPEN = [
    (("--unit-price", "9.5000001"), "more than 6 decimals"),
    (("--unit-price", "abc"), "not a decimal amount"),
    (("--unit-price", "0"), "more than zero"),
    (("--unit-price", "-1"), "not a decimal amount"),
    (("--deadline", "3x"), "not a duration"),
    (("--dispute-window", "0"), "longer than zero"),
    (("--dispute-window", "1m"), "InvalidDisputeWindow"),
    (("--deadline", "1000d"), "InvalidDeliveryDeadline"),
    (("--supplier", "0x1234"), "not an address"),
    (("--supplier", "0x" + "12" * 20), "SupplierNotIssuer"),
    (("--sku", "X" * 33), "32 ASCII"),
    (("--sku", "café"), "32 ASCII"),
    (("--sku", "OTHER"), "no such product"),
    (("--face-value", "1.00"), "no such product"),
    (("--currency", "EUR"), "no such product"),
    (("--face-value", "10.001"), "more decimals"),
    (("--unit-price", "1000"), "ERC20InsufficientBalance"),
    (("--token", "0x" + "34" * 20), "not an ERC-20"),
    (("--token", "nope"), "not an address"),
]


def test_open_rejects_bad_input_in_one_line(cli, platform):
    p = platform
    cli.act_as(BUYER_KEY)
    for (option, value), match in BAD_OPEN:
        args = {"--supplier": p.supplier, "--sku": "GAME-10", "--face-value": "10.00", "--currency": "USD",
                "--quantity": "2", "--unit-price": "9.50", option: value}
        cli.fails("order", "open", *[x for kv in args.items() for x in kv], match=match)
    cli.act_as(None)
    assert p.escrow.order_count() == 0
    assert Token(p.admin, p.coin).allowance(p.buyer, p.escrow.address) == 0  # no approval for a doomed order


def test_other_commands_reject_bad_input_in_one_line(cli, platform):
    p = platform
    open_order(cli, p)
    batch = p.batch(cards=4)
    cli.fails("order", "show", "99", match="OrderNotFound")
    cli.fails("order", "show", "0", match="OrderNotFound")
    cli.fails("order", "confirm", "7", match="OrderNotFound")
    cli.fails("order", "deliver", "1", "--batch", "0x12", "--range", "0:2", match="not a batch id")
    cli.fails("order", "deliver", "1", "--batch", batch, "--range", "5", match="START:COUNT")
    cli.fails("order", "deliver", "1", "--batch", batch, "--range", "0:0", match="START:COUNT")
    cli.fails("order", "deliver", "1", "--batch", batch, "--range", "3:2", match="InvalidCardRange")
    cli.fails("order", "deliver", "1", "--batch", batch, "--range", "0:1", match="QuantityMismatch")
    r = as_buyer(cli, "order", "deliver", "1", "--batch", batch, "--range", "0:2")
    assert r.rc == 1 and "NotOrderSupplier" in r.err
    cli.fails("order", "confirm", "1", match="InvalidOrderStatus")
    cli.fails("order", "resolve", "1", "--buyer-amount", "x", "--supplier-amount", "1", match="not a decimal")
    cli.fails("order", "withdraw", "--to", "0xnope", match="not an address")
    r = cli("order", "show", "-1")
    assert r.rc == 2 and r.err.count("\n") == 1  # a usage error
    r = cli("order", "deliver", "1", "--batch", batch)
    assert r.rc == 2 and "--range" in r.err


def test_faucet(cli, platform, monkeypatch):
    p = platform
    someone = Account.create().address
    out = cli.ok("faucet", someone.lower(), "12.345678").out
    assert out == f"minted 12.345678 tUSD to {someone}; balance 12.345678 tUSD\n"
    cli.fails("faucet", someone, "0.0000001", match="more than 6 decimals")
    cli.fails("faucet", "nobody", "1", match="not an address")
    cli.act_as(BUYER_KEY)
    cli.fails("faucet", someone, "1", match="AccessControlUnauthorizedAccount")  # only the deployer mints
    cli.act_as(None)
    monkeypatch.setattr(ChainClient, "is_dev_chain", property(lambda self: False))
    cli.fails("faucet", someone, "1", match="dev chains only")
    assert p.balance(someone) == 12_345_678


def test_without_deployment(cli):
    someone = Account.create().address
    cli.fails("faucet", someone, "1", match="no test stablecoin")
    cli.fails("order", "show", "1", match="CardEscrow is not deployed")
    cli.fails("order", "withdraw", "--token", someone, match="not an ERC-20")
