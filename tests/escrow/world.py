"""The escrow test world: tokens, the escrow and funded buyers, deployed once per backend.

`deploy_world(env)` deploys (on top of the registry that `tests.chainkit` set up):

* two permit-capable 6-decimal TestStablecoins ("stable", "stable2"),
* "noret" (USDT-like, no return values), "fot" (1% fee on transfer), "reent" (re-enters on transfer),
  "block" (blocklist), all allowlisted;
* the CardEscrow with admin = the env's admin, fee recipient = "feeto", a 1% fee and "arbiter" as the arbiter
  granted at deploy (the constructor's); its dispute resolution period is the default, RESOLUTION (7 days);

and mints every token to buyer and buyer2, who approve the escrow for all of them. `World` wraps one
test's view of it; build it per test (clients cache nonces, which must not outlive a snapshot revert).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from web3 import Web3

from chain.artifacts import load_artifact
from chain.escrow import MAX_UINT256, Escrow, Token
from chain.registry import PLACEHOLDER_PRODUCT, ProductSpec
from tests.chainkit import ChainEnv
from tests.escrow.cards import RealBatch

TOKENS = {
    "stable": ("TestStablecoin", ("Test USD", "tUSD")),
    "stable2": ("TestStablecoin", ("Test EUR", "tEUR")),
    "noret": ("NoReturnToken", ("Tether-like USD", "nrUSD")),
    "fot": ("FeeOnTransferToken", ("Fee USD", "fUSD", 100)),
    "reent": ("ReentrantToken", ("Reentrant USD", "rUSD")),
    "block": ("BlocklistToken", ("Blocklist USD", "blUSD")),
}
BUYERS = ("buyer", "buyer2")
MINT = 10**12  # 1,000,000.00 of a 6-decimal token
FEE_BPS = 100
PRICE = 2_500_000  # 2.50
WINDOW = 3_600
DAY = 86_400
RESOLUTION = 7 * DAY  # the escrow's default dispute resolution period
GAS_DEPLOY = 8_000_000


def _deploy(client: Any, name: str, *args: Any) -> str:
    art = load_artifact(name)
    sent = client.send_deploy(art.abi, art.bytecode, *args, gas=GAS_DEPLOY)
    return Web3.to_checksum_address(client.wait(sent.tx_hash)["contractAddress"])


def deploy_world(env: ChainEnv) -> dict[str, Any]:
    admin = env.admin
    admin._next_nonce = None
    tokens: dict[str, str] = {}
    for key, (artifact, args) in TOKENS.items():
        extra = (admin.address,) if artifact == "TestStablecoin" else ()
        tokens[key] = _deploy(admin, artifact, *args, *extra)
    escrow_address = _deploy(admin, "CardEscrow", env.registry_address, admin.address, env.address("feeto"),
                             env.address("arbiter"))
    # Register the placeholder product (id 1), which World.open orders and World.anchor anchors, with a batch.
    env.registry("supplier").anchor_batch(bytes.fromhex(env.address("supplier")[2:]) + b"\xff" * 12, b"\x42" * 32,
                                          1, b"\0" * 32)
    escrow = Escrow(admin, escrow_address)
    escrow.set_tokens_allowed(list(tokens.values()), True)
    escrow.set_fee(FEE_BPS)
    for key, address in tokens.items():
        contract = admin.contract(address, load_artifact(TOKENS[key][0]).abi)
        for who in BUYERS:
            admin.transact(contract.functions.mint(env.address(who), MINT), gas=200_000)
    for who in BUYERS:
        client = env.client(who)
        for address in tokens.values():
            Token(client, address).approve(escrow_address, MAX_UINT256)
    return {"escrow": escrow_address, "tokens": tokens}


@dataclass
class World:
    env: ChainEnv
    escrow_address: str
    tokens: dict[str, str]
    _nonce: int = field(default=0)

    @classmethod
    def of(cls, env: ChainEnv, key: str = "escrow_world") -> World:
        info = env.extra[key]
        return cls(env, info["escrow"], dict(info["tokens"]))

    # ------------------------------------------------------------ handles

    def escrow(self, who: str = "admin") -> Escrow:
        return Escrow(self.env.client(who), self.escrow_address)

    def token(self, key: str, who: str = "admin") -> Token:
        return Token(self.env.client(who), self.tokens[key])

    def token_contract(self, key: str, who: str = "admin") -> Any:
        return self.env.client(who).contract(self.tokens[key], load_artifact(TOKENS[key][0]).abi)

    def token_tx(self, key: str, who: str, fn_name: str, *args: Any, gas: int = 300_000) -> Any:
        contract = self.token_contract(key, who)
        return self.env.client(who).transact(getattr(contract.functions, fn_name)(*args), gas=gas)

    def addr(self, who: str) -> str:
        return self.env.address(who)

    def balance(self, who: str, key: str) -> int:
        account = self.escrow_address if who == "escrow" else self.addr(who)
        return self.token(key).balance_of(account)

    def credits(self, who: str, key: str) -> int:
        return self.escrow().credits(self.addr(who), self.tokens[key])

    # ------------------------------------------------------------ batches

    def batch_id(self, who: str = "supplier") -> bytes:
        self._nonce += 1
        return bytes.fromhex(self.addr(who)[2:]) + self._nonce.to_bytes(12, "big")

    def anchor(self, who: str = "supplier", count: int = 1024, *, product: ProductSpec = PLACEHOLDER_PRODUCT,
               expiry: int = 0) -> bytes:
        batch_id = self.batch_id(who)
        self.env.registry(who).anchor_batch(batch_id, b"\x42" * 32, count, b"\0" * 32, product, expiry)
        return batch_id

    def anchor_real(self, count: int = 16, *, product: ProductSpec = PLACEHOLDER_PRODUCT, expiry: int = 0,
                    seed: int = 0, who: str = "supplier") -> RealBatch:
        """Anchor a real batch (tests/escrow/cards.py): leaves of `product` and `expiry`, their tree's root."""
        return RealBatch.make(self.batch_id(who), count, product, expiry, seed=seed).anchor(self.env.registry(who))

    def prove(self, order_id: int, batch: RealBatch, indices: list[int], who: str = "supplier") -> Any:
        """proveDelivery of cards `indices` of `batch` with their multiproof."""
        cards, proof, flags = batch.proven(indices)
        return self.escrow(who).prove_delivery(order_id, cards, proof, flags)

    def product_id(self, product: ProductSpec = PLACEHOLDER_PRODUCT) -> int:
        """The registry id of ``product`` (0 when none of its batches was anchored)."""
        return self.env.registry("admin").product_id_of(product)

    # ------------------------------------------------------------ orders

    def open(self, who: str = "buyer", *, token: str = "stable", quantity: int = 4, unit_price: int = PRICE,
             supplier: str = "supplier", deadline: int | None = None, window: int = WINDOW,
             product_id: int = 1, min_expiry: int = 0, preflight: bool = True) -> int:
        deadline = deadline if deadline is not None else self.env.now() + DAY
        return self.escrow(who).open_order(self.addr(supplier), product_id, quantity, self.tokens[token], unit_price,
                                           deadline, window, min_expiry=min_expiry, preflight=preflight)

    def deliver(self, order_id: int, batch_id: bytes, ranges: list[tuple[int, int]], who: str = "supplier",
                sealed_hash: bytes | None = None) -> Any:
        sealed = sealed_hash or Web3.keccak(text=f"sealed delivery of order {order_id}")
        return self.escrow(who).deliver(order_id, batch_id, ranges, sealed_hash=sealed)

    def delivered_order(self, who: str = "buyer", *, token: str = "stable", quantity: int = 4,
                        unit_price: int = PRICE, window: int = WINDOW, supplier: str = "supplier",
                        batch_id: bytes | None = None, start: int = 0) -> tuple[int, bytes, int]:
        """Open and deliver an order (cards start .. start+quantity-1); returns (order id, batch id, delivered at)."""
        order_id = self.open(who, token=token, quantity=quantity, unit_price=unit_price, window=window,
                             supplier=supplier)
        batch_id = batch_id or self.anchor(supplier)
        receipt = self.deliver(order_id, batch_id, [(start, quantity)], who=supplier)
        return order_id, batch_id, self.block_time(receipt)

    # ------------------------------------------------------------ time

    def block_time(self, receipt: Any) -> int:
        return int(self.env.admin.w3.eth.get_block(receipt["blockNumber"])["timestamp"])

    def travel_to(self, timestamp: int) -> None:
        """The next transactions run at (about) `timestamp`, which must be in the future."""
        self.env.set_next_timestamp(timestamp)

    def advance(self, seconds: int) -> None:
        self.env.set_next_timestamp(self.env.now() + seconds)


def worlds_on_session_chains(request: Any, key: str) -> Iterator[None]:
    """Deploy the world on both session chains (eth-tester and anvil) under ``env.extra[key]``, with the
    block it ended at, before any per-test snapshot of ``chain_env``; revert both chains when done.
    For a package-scoped fixture: ``yield from worlds_on_session_chains(request, "my_world")``."""
    deployed: list[tuple[ChainEnv, object]] = []
    try:
        for name in ("_eth_tester_session", "_anvil_session"):
            env: ChainEnv = request.getfixturevalue(name)
            base = env.snapshot()
            deployed.append((env, base))
            env.extra[key] = {**deploy_world(env), "block": env.admin.block_number()}
            env.admin._next_nonce = None
        yield
    finally:
        for env, base in reversed(deployed):
            env.extra.pop(key, None)
            env.revert(base)
            env.admin._next_nonce = None
