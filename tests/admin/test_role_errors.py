"""Role errors name the role and who holds it, for every role-gated call (chain/reverts.py, once for every
contract): the registry's admin (issuer add/remove), the issuer role (redeemer add, anchor by an account whose
role was removed), the escrow's admin; never a role hash, and nothing is sent."""

from __future__ import annotations

import pytest

from chain.errors import AccessControlUnauthorizedAccount, RoleRequired
from chain.registry import DEFAULT_ADMIN_ROLE, ISSUER_ROLE
from chain.reverts import role_name

ROLE_HASHES = ("0x" + "00" * 32, ISSUER_ROLE.hex())


def _no_hash(text: str) -> None:
    for role in ROLE_HASHES:
        assert role.removeprefix("0x") not in text, text


def test_role_names_come_from_the_contracts():
    assert role_name(DEFAULT_ADMIN_ROLE) == "admin" and role_name(ISSUER_ROLE) == "issuer"
    assert role_name(b"\x01" * 32) == "unnamed role"


def test_registry_role_errors_name_the_holder(chain_env):
    admin, stranger = chain_env.address("admin"), chain_env.address("stranger")
    registry = chain_env.registry()
    with pytest.raises(RoleRequired) as info:
        chain_env.registry("stranger").grant_issuer(stranger, "Sneaky")
    assert isinstance(info.value, AccessControlUnauthorizedAccount) and info.value.needed_role == DEFAULT_ADMIN_ROLE
    assert (info.value.role, info.value.holders) == ("admin", [admin])
    assert str(info.value) == f"{stranger} is not the admin of the registry {registry.address}: run this as the " \
                              f"admin {admin}"
    # Holders are read from the RoleGranted events, kept only while they still hold the role.
    second = chain_env.address("issuer2")
    chain_env.admin.transact(registry.fn.grantRole(DEFAULT_ADMIN_ROLE, second), gas=120_000)
    with pytest.raises(RoleRequired) as info:
        chain_env.registry("stranger").revoke_issuer(chain_env.address("issuer"))
    assert str(info.value).endswith(f"run this as one of the admins {admin}, {second}")
    chain_env.admin.transact(registry.fn.revokeRole(DEFAULT_ADMIN_ROLE, second), gas=120_000)
    assert registry.admins() == [admin]

    # A role an account needs for itself: the error says who grants it.
    with pytest.raises(RoleRequired) as info:
        chain_env.registry("stranger").set_redeemer(chain_env.address("redeemer"), True)
    assert info.value.role == "issuer" and info.value.needed_role == ISSUER_ROLE
    assert str(info.value) == (
        f"{stranger} is not an issuer of the registry {registry.address}: the registry's admin {admin} must grant "
        f"it the issuer role first (`cardproof issuer add --name NAME --address {stranger}`) "
        "[AccessControlUnauthorizedAccount]")
    _no_hash(str(info.value))


def test_cli_role_errors_on_the_registry(deployed):
    d = deployed
    admin, registry = d.admin.address, d.registry.address
    as_admin = f"{d.stranger} is not the admin of the registry {registry}: run this as the admin {admin} (its deployer)"
    failed = d.as_stranger("issuer", "add", "--name", "Sneaky", "--address", d.stranger)
    assert failed.err == f"cardproof: {as_admin}\n"
    d.cli.ok("issuer", "add", "--name", "Acme", "--address", admin)
    assert d.as_stranger("issuer", "remove", admin).err == f"cardproof: {as_admin}\n"
    assert d.registry.is_issuer(admin)

    failed = d.as_stranger("redeemer", "add", admin)
    assert failed.err.startswith(f"cardproof: {d.stranger} is not an issuer of the registry {registry}: the "
                                 f"registry's admin {admin} (its deployer) must grant it the issuer role first")
    for text in (as_admin, failed.err):
        _no_hash(text)


def test_anchor_after_the_issuer_was_removed_names_the_granter(deployed):
    d = deployed
    admin = d.admin.address
    d.cli.ok("issuer", "add", "--name", "Acme", "--address", admin)
    minted = d.cli.ok("mint", "--sku", "GAME-10", "--face-value", "10.00", "--currency", "USD", "--count", "2",
                      "--json").json
    d.cli.ok("issuer", "remove", admin)
    failed = d.cli.fails("anchor", minted["batch_id"])
    assert f"{admin} is not an issuer of the registry {d.registry.address}: the registry's admin {admin} (its " \
           "deployer) must grant it the issuer role first" in failed.err
    _no_hash(failed.err)
    assert not d.registry.batch(bytes.fromhex(minted["batch_id"][2:])).anchored
    d.cli.ok("issuer", "add", "--name", "Acme", "--address", admin)
    assert "anchored in block" in d.cli.ok("anchor", minted["batch_id"]).out
