"""Addresses (issue 12): a mixed-case address must carry its right EIP-55 checksum wherever people give one (CLI
options, the node's configuration, ERP requests); all-lowercase or all-uppercase hex carries none and is accepted.
A refused address sends nothing."""

from __future__ import annotations

import pytest
from eth_account import Account
from pydantic import TypeAdapter, ValidationError

from chain.addresses import AddressError, parse_address
from chain.registry import Registry
from issuer.node.config import NodeConfigError, load_config
from issuer.service.erp_schemas import Address


def bad_checksum(address: str) -> str:
    """``address`` (checksummed) with the case of one letter flipped: still mixed case, checksum now wrong."""
    body = address[2:]
    for i, ch in enumerate(body):
        if ch.isalpha():
            flipped = body[:i] + ch.swapcase() + body[i + 1:]
            if flipped != flipped.lower() and flipped != flipped.upper():
                return "0x" + flipped
    raise AssertionError(f"no letter to flip in {address}")


def test_the_parser_refuses_a_wrong_checksum_and_accepts_one_case():
    good = Account.create().address
    assert parse_address(good) == good
    assert parse_address(good.lower()) == good and parse_address("0x" + good[2:].upper()) == good
    assert parse_address(f"  {good.lower()} ") == good
    with pytest.raises(AddressError, match="EIP-55 checksum") as info:
        parse_address(bad_checksum(good), "--supplier")
    assert str(info.value).startswith("--supplier: ") and info.value.code == "invalid_address"
    for junk in ("0x1234", good[2:], "0x" + "g" * 40, "", None):
        with pytest.raises(AddressError, match="not an address"):
            parse_address(junk)


def test_issuer_add_refuses_a_wrong_checksum_before_sending_anything(market):
    cli, admin = market.cli, market.admin
    someone = Account.create().address
    registry = Registry.deployed(admin, cli.home)
    block = market.block()
    r = cli.fails("issuer", "add", "--name", "Typo Ltd", "--address", bad_checksum(someone), match="EIP-55 checksum")
    assert r.err.startswith("cardproof: --address: ")
    assert market.block() == block and not registry.is_issuer(someone)  # nothing was sent
    granted = cli.ok("issuer", "add", "--name", "Typo Ltd", "--address", someone.lower(), "--json").json
    assert granted["address"] == someone and granted["granted"] is True and registry.is_issuer(someone)


def test_order_open_refuses_a_wrong_checksum_supplier(market):
    block = market.block()
    r = market.as_buyer("order", "open", "--supplier", bad_checksum(market.admin.address), "--sku", "GAME-10",
                        "--face-value", "10.00", "--currency", "USD", "--quantity", "1", "--unit-price", "9.50")
    assert r.rc == 1 and r.out == "" and r.err.count("\n") == 1, r
    assert r.err.startswith("cardproof: --supplier: ") and "EIP-55 checksum" in r.err, r.err
    assert market.block() == block and market.escrow.order_count() == 0
    # The same supplier in lowercase carries no checksum: accepted.
    opened = market.as_buyer("order", "open", "--supplier", market.admin.address.lower(), "--sku", "GAME-10",
                             "--face-value", "10.00", "--currency", "USD", "--quantity", "1", "--unit-price", "9.50",
                             "--json")
    assert opened.rc == 0, opened
    assert opened.json["order"]["supplier"] == market.admin.address


def test_other_address_options_check_the_checksum(market):
    cli = market.cli
    wrong = bad_checksum(Account.create().address)
    for args in (("order", "withdraw", "--to", wrong), ("faucet", wrong, "1"), ("arbiter", "grant", wrong),
                 ("issuer", "withdraw", "--to", wrong), ("issuer", "api-key", "list", "--issuer", wrong),
                 ("redeemer", "add", wrong)):
        cli.fails(*args, match="EIP-55 checksum")


def test_the_node_configuration_refuses_a_wrong_checksum(tmp_path):
    from chain.settings import get_settings

    settings = get_settings(home=tmp_path)
    escrow = Account.create().address
    with pytest.raises(NodeConfigError, match="EIP-55 checksum") as info:
        load_config(settings=settings, env={"CARDPROOF_NODE_ESCROW": bad_checksum(escrow)})
    assert "\n" not in str(info.value) and "escrow" in str(info.value)
    assert load_config(settings=settings, env={"CARDPROOF_NODE_ESCROW": escrow.lower()}).escrow == escrow
    toml = tmp_path / "node.toml"
    toml.write_text(f'[node]\nescrow = "{bad_checksum(escrow)}"\n')
    with pytest.raises(NodeConfigError, match=f"{toml}.*EIP-55 checksum"):
        load_config(toml, settings=settings, env={})
    toml.write_text(f'[node]\nescrow = "{escrow}"\n')
    assert load_config(toml, settings=settings, env={}).escrow == escrow


def test_the_node_command_refuses_a_wrong_checksum_escrow(market, tmp_path):
    toml = tmp_path / "node.toml"
    toml.write_text(f'escrow = "{bad_checksum(market.escrow.address)}"\n')
    market.cli.fails("issuer", "node", "--once", "--config", toml, match="EIP-55 checksum")


def test_the_erp_address_type_refuses_a_wrong_checksum():
    """The type ERP requests declare their addresses with (422 invalid_request through FastAPI's validation)."""
    adapter = TypeAdapter(Address)
    good = Account.create().address
    assert adapter.validate_python(good.lower()) == good
    with pytest.raises(ValidationError, match="EIP-55 checksum"):
        adapter.validate_python(bad_checksum(good))
    with pytest.raises(ValidationError):
        adapter.validate_python("0x1234")
