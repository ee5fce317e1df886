"""chain/escrow.py: deployment helpers, faucet, preflight checks, dataclasses and the error classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain import errors
from chain.artifacts import load_artifact
from chain.deployments import recorded
from chain.escrow import (
    ESCROW,
    STABLECOIN,
    CardRange,
    Escrow,
    Order,
    OrderStatus,
    ProvenCard,
    Token,
    deploy_escrow,
    deploy_test_stablecoin,
    faucet,
    sku_bytes,
    stablecoin_address,
)
from tests.escrow.world import DAY, PRICE, WINDOW, World

ESCROW_ARTIFACTS = ("CardEscrow", "TestStablecoin", "NoReturnToken", "FeeOnTransferToken", "ReentrantToken",
                    "BlocklistToken")


def test_every_abi_error_has_a_class() -> None:
    for name in ESCROW_ARTIFACTS:
        for item in load_artifact(name).abi:
            if item["type"] != "error":
                continue
            cls = errors.ContractRevert.by_name.get(item["name"])
            assert cls is not None, f"{name}: no class for {item['name']}"
            assert cls.__name__ == item["name"]
            assert cls.__doc__ and cls.__doc__.strip().splitlines()[0]


def test_deploy_helpers_and_faucet(world: World, tmp_path: Path) -> None:
    client = world.env.admin
    coin, created = deploy_test_stablecoin(client, tmp_path)
    assert created and coin.name == STABLECOIN
    assert deploy_test_stablecoin(client, tmp_path) == (coin, False)  # recorded and live: reused
    record, created = deploy_escrow(client, tmp_path, world.env.registry_address, tokens=[coin.address])
    assert created and record.name == ESCROW
    assert recorded(tmp_path, client.chain_id, ESCROW) == record
    assert deploy_escrow(client, tmp_path, world.env.registry_address) == (record, False)
    escrow = Escrow.deployed(client, tmp_path)
    assert escrow.address == record.address
    assert stablecoin_address(client, tmp_path) == coin.address
    assert escrow.is_token_allowed(coin.address)
    assert escrow.rules().fee_recipient == client.address
    assert escrow.registry_address == world.env.registry_address
    faucet(client, coin.address, world.addr("stranger"), 123_000_000)
    token = Token(client, coin.address)
    assert token.balance_of(world.addr("stranger")) == 123_000_000
    assert token.name() == "Test USD"
    assert client.call(client.contract(coin.address, load_artifact(STABLECOIN).abi).functions.decimals()) == 6
    with pytest.raises(errors.AccessControlUnauthorizedAccount):  # only minters
        faucet(world.env.client("stranger"), coin.address, world.addr("stranger"), 1)


def test_deployments_of_a_reverted_chain_are_not_live(world: World, tmp_path: Path) -> None:
    client = world.env.admin
    snap = world.env.snapshot()
    coin, _ = deploy_test_stablecoin(client, tmp_path)
    world.env.revert(snap)
    client._next_nonce = None
    with pytest.raises(errors.NotDeployed):
        stablecoin_address(client, tmp_path)
    again, created = deploy_test_stablecoin(client, tmp_path)
    assert created
    assert stablecoin_address(client, tmp_path) == again.address


def test_preflight_errors_are_raised_before_sending(world: World) -> None:
    escrow = world.escrow("stranger")
    client = escrow.client
    nonce = client.w3.eth.get_transaction_count(client.address)
    deadline = world.env.now() + DAY
    stable = world.tokens["stable"]
    cases = [
        (errors.TokenNotAllowed, (world.addr("supplier"), 1, world.addr("issuer"), PRICE)),
        (errors.SupplierNotIssuer, (world.addr("buyer"), 1, stable, PRICE)),
        (errors.InvalidQuantity, (world.addr("supplier"), 0, stable, PRICE)),
        (errors.InvalidUnitPrice, (world.addr("supplier"), 1, stable, 0)),
        (errors.ERC20InsufficientBalance, (world.addr("supplier"), 1, stable, PRICE)),  # stranger has no tokens
    ]
    for exc, (supplier, quantity, token, price) in cases:
        with pytest.raises(exc):
            escrow.open_order(supplier, 1, quantity, token, price, deadline, WINDOW)
        with pytest.raises(exc):
            escrow.open_order_with_permit(supplier, 1, quantity, token, price, deadline, WINDOW)
    assert client.w3.eth.get_transaction_count(client.address) == nonce  # nothing was sent
    faucet(world.env.admin, stable, world.addr("stranger"), PRICE)
    with pytest.raises(errors.ERC20InsufficientAllowance) as info:
        escrow.open_order(world.addr("supplier"), 1, 1, stable, PRICE, deadline, WINDOW)
    assert info.value.spender == world.escrow_address.lower()
    assert "allowance" in str(info.value).lower()


def test_order_dataclass_and_delivery(world: World) -> None:
    order_id, batch_id, delivered_at = world.delivered_order(quantity=4)
    order = world.escrow().order(order_id)
    assert isinstance(order, Order)
    assert order.exists and order.status is OrderStatus.DELIVERED and not order.status.settled
    assert order.dispute_window_end == delivered_at + WINDOW
    assert world.escrow().delivery(order_id) == (batch_id, [CardRange(0, 4)])
    assert CardRange(0, 4).stop == 4
    missing = world.escrow().order(999)
    assert not missing.exists and missing.dispute_window_end is None
    assert world.escrow().delivery(999) == (b"\0" * 32, [])
    world.escrow("buyer").confirm(order_id)
    assert world.escrow().order(order_id).status.settled


def test_sku_bytes() -> None:
    assert sku_bytes("GAME-100") == b"GAME-100" + b"\0" * 24
    assert sku_bytes(b"\1" * 32) == b"\1" * 32
    with pytest.raises(ValueError):
        sku_bytes("X" * 33)


def test_reverts_come_back_typed_for_every_call(world: World) -> None:
    escrow = world.escrow("stranger")
    for call in (lambda: escrow.confirm(5), lambda: escrow.release(5), lambda: escrow.dispute(5),
                 lambda: escrow.cancel(5), lambda: escrow.deliver(5, b"\0" * 32, [(0, 1)], sealed_hash=b"\1" * 32),
                 lambda: escrow.dispute_membership(5), lambda: escrow.withdraw_dispute(5),
                 lambda: escrow.prove_delivery(5, [ProvenCard(0, 1, 0, b"\0" * 32)], [], [])):
        with pytest.raises(errors.OrderNotFound):
            call()
    with pytest.raises(errors.NothingToWithdraw) as info:
        escrow.withdraw(world.tokens["stable"])
    assert str(info.value).startswith("There is no credit to withdraw in this token.")
