"""grantIssuer / issuerName: the platform grants ISSUER_ROLE and records the issuer's display name on chain."""

from __future__ import annotations

import pytest

from chain.artifacts import load_artifact
from chain.deployments import REGISTRY
from chain.errors import AccessControlUnauthorizedAccount, ContractRevert, ZeroAddress
from chain.events import read_events
from chain.registry import DEFAULT_ADMIN_ROLE, ISSUER_ROLE, ZERO_ADDRESS
from tests.chain.registry_kit import MANIFEST, ROOT, bid, same_address


def events_of(env, receipt):
    """The registry's events of the transaction of `receipt` (name, args), in log order."""
    block = receipt["blockNumber"]
    evs = read_events(env.admin, [(env.registry_address, load_artifact(REGISTRY).abi)], block, block)
    tx = receipt["transactionHash"].to_0x_hex()
    return [(e.name, e.args) for e in evs if e.tx_hash == tx]


def assert_invalid_name(call) -> None:
    """InvalidIssuerName, whether or not chain/errors.py has a class of that name yet."""
    with pytest.raises(ContractRevert) as e:
        call()
    assert e.value.error_name == "InvalidIssuerName"
    assert e.value.params == {}


def test_admin_grants_the_role_with_a_name(chain_env):
    reg = chain_env.registry()
    stranger = chain_env.address("stranger")
    assert not reg.is_issuer(stranger) and reg.issuer_name(stranger) == ""
    receipt = reg.grant_issuer(stranger, "Acme Gift Cards Ltd.")
    assert receipt["status"] == 1
    assert reg.is_issuer(stranger)
    assert reg.issuer_name(stranger) == "Acme Gift Cards Ltd."
    assert events_of(chain_env, receipt) == [
        ("RoleGranted", {"role": ISSUER_ROLE, "account": stranger, "sender": chain_env.admin.address}),
        ("IssuerNamed", {"issuer": stranger, "name": "Acme Gift Cards Ltd."}),
    ]
    # The role is the real ISSUER_ROLE: the new issuer can anchor its own batches.
    chain_env.registry("stranger").anchor_batch(bid(chain_env, "stranger"), ROOT, 1, MANIFEST)


def test_renaming(chain_env):
    reg = chain_env.registry()
    issuer = chain_env.address("issuer")  # already an issuer (granted without a name by the fixture)
    assert reg.issuer_name(issuer) == ""
    first = reg.grant_issuer(issuer, "Acme")
    # Already holding the role: no second RoleGranted, only the name event.
    assert events_of(chain_env, first) == [("IssuerNamed", {"issuer": issuer, "name": "Acme"})]
    second = reg.grant_issuer(issuer, "Acme Digital 株式会社")
    assert events_of(chain_env, second) == [("IssuerNamed", {"issuer": issuer, "name": "Acme Digital 株式会社"})]
    assert reg.issuer_name(issuer) == "Acme Digital 株式会社"
    third = reg.grant_issuer(issuer, "A")  # shorter than before: no leftover bytes of the longer name
    assert events_of(chain_env, third) == [("IssuerNamed", {"issuer": issuer, "name": "A"})]
    assert reg.issuer_name(issuer) == "A" and reg.is_issuer(issuer)
    # Names are per issuer.
    assert reg.issuer_name(chain_env.address("issuer2")) == ""


def test_only_the_admin_grants_or_renames(chain_env):
    target = chain_env.address("stranger")
    chain_env.registry().grant_issuer(chain_env.address("issuer2"), "Second Issuer")
    for who in ("issuer", "issuer2", "redeemer", "stranger"):
        reg = chain_env.registry(who)
        for address in (target, chain_env.address(who), chain_env.address("issuer2")):  # a stranger, itself, another
            with pytest.raises(AccessControlUnauthorizedAccount) as e:
                reg.grant_issuer(address, "Totally Legit Issuer")
            assert same_address(e.value.account, chain_env.address(who))
            assert e.value.needed_role == DEFAULT_ADMIN_ROLE
    reg = chain_env.registry()
    assert not reg.is_issuer(target) and reg.issuer_name(target) == ""
    assert reg.issuer_name(chain_env.address("issuer")) == ""
    assert reg.issuer_name(chain_env.address("issuer2")) == "Second Issuer"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 65,
        "é" * 32 + "x",  # 33 characters, 65 bytes: the limit is in bytes
        "名" * 22,  # 22 characters, 66 bytes
        "x" * 1000,
    ],
)
def test_bad_names_are_rejected(chain_env, name):
    reg = chain_env.registry()
    stranger = chain_env.address("stranger")
    assert_invalid_name(lambda: reg.grant_issuer(stranger, name))
    assert not reg.is_issuer(stranger) and reg.issuer_name(stranger) == ""
    # Nor can a bad name overwrite a good one.
    reg.grant_issuer(stranger, "Good Name")
    assert_invalid_name(lambda: reg.grant_issuer(stranger, name))
    assert reg.issuer_name(stranger) == "Good Name"


@pytest.mark.parametrize("name", ["x", "x" * 64, "é" * 32, "名" * 21 + "x", "Acme \u2014 Cards"])
def test_names_of_1_to_64_bytes_are_kept_exactly(chain_env, name):
    assert 1 <= len(name.encode()) <= 64
    reg = chain_env.registry()
    stranger = chain_env.address("stranger")
    reg.grant_issuer(stranger, name)
    assert reg.issuer_name(stranger) == name


def test_zero_address(chain_env):
    reg = chain_env.registry()
    with pytest.raises(ZeroAddress):
        reg.grant_issuer(ZERO_ADDRESS, "Nobody")
    assert reg.issuer_name(ZERO_ADDRESS) == "" and not reg.is_issuer(ZERO_ADDRESS)
    # The address check comes first: a zero address with a bad name is still ZeroAddress.
    with pytest.raises(ZeroAddress):
        reg.grant_issuer(ZERO_ADDRESS, "")


def test_revoking_the_role_keeps_the_name(chain_env):
    """Intended as implemented: the name is a record of who the platform vouched for, and the batches an
    offboarded issuer anchored still show it; ISSUER_ROLE (hasRole) says whether it may anchor today."""
    reg = chain_env.registry()
    stranger = chain_env.address("stranger")
    reg.grant_issuer(stranger, "Former Issuer")
    reg.revoke_issuer(stranger)
    assert not reg.is_issuer(stranger)
    assert reg.issuer_name(stranger) == "Former Issuer"
    with pytest.raises(AccessControlUnauthorizedAccount):
        chain_env.registry("stranger").anchor_batch(bid(chain_env, "stranger"), ROOT, 1, MANIFEST)
    # Granting again restores the role (and renames).
    reg.grant_issuer(stranger, "Returning Issuer")
    assert reg.is_issuer(stranger) and reg.issuer_name(stranger) == "Returning Issuer"


def test_grant_issuer_without_a_name_still_uses_grant_role(chain_env):
    reg = chain_env.registry()
    stranger = chain_env.address("stranger")
    receipt = reg.grant_issuer(stranger)
    assert [name for name, _ in events_of(chain_env, receipt)] == ["RoleGranted"]
    assert reg.is_issuer(stranger) and reg.issuer_name(stranger) == ""
