"""`cardproof issuer remove ADDRESS`: revokes ISSUER_ROLE as the registry's admin, drops the supplier's record of
the issuer, is idempotent, and refuses bad input with one line."""

from __future__ import annotations

from issuer.issuers import add_issuer, list_issuers, remove_issuer
from issuer.storage import repository as repo

ACME = "0x" + "ac" * 20


def _listed(cli) -> list[str]:
    return [row["address"] for row in cli.ok("issuer", "list", "--json").json]


def test_remove_revokes_the_role_and_drops_the_record(deployed):
    d = deployed
    acme = d.admin.w3.to_checksum_address(ACME)
    d.cli.ok("issuer", "add", "--name", "Acme Cards", "--address", acme)
    assert d.registry.is_issuer(acme) and _listed(d.cli) == [acme]

    removed = d.cli.ok("issuer", "remove", ACME, "--json").json
    assert removed == {"address": acme, "name": "Acme Cards", "revoked": True, "record_removed": True,
                       "registry": d.registry.address}
    assert not d.registry.is_issuer(acme) and _listed(d.cli) == []
    assert d.registry.issuer_name(acme) == "Acme Cards"  # the on-chain name stays as history

    block = d.block()
    again = d.cli.ok("issuer", "remove", acme)
    assert again.out == f"{acme} is already not an issuer; nothing sent\n" and d.block() == block


def test_remove_an_issuer_the_supplier_never_recorded(deployed):
    d = deployed
    other = d.stranger
    d.registry.grant_issuer(other, "Granted Elsewhere")  # not through this supplier's database
    out = d.cli.ok("issuer", "remove", other).out
    assert out == f"issuer {other} (Granted Elsewhere) removed: ISSUER_ROLE revoked\n"
    assert not d.registry.is_issuer(other)


def test_remove_refuses_bad_input(deployed):
    d = deployed
    block = d.block()
    d.cli.fails("issuer", "remove", "0x1234", match="is not an account address")
    d.cli.fails("issuer", "remove", match="Missing argument")
    assert d.block() == block


def test_remove_issuer_updates_the_supplier_database(chain_env, supplier_sessions):
    registry = chain_env.registry()
    acme = chain_env.address("issuer2")
    add_issuer(supplier_sessions, registry, acme, "Acme  Cards")
    assert [row["address"] for row in list_issuers(supplier_sessions)] == [acme]
    out = remove_issuer(supplier_sessions, registry, acme.lower())
    assert (out["address"], out["name"], out["revoked"], out["record_removed"]) == (acme, "Acme Cards", True, True)
    assert not registry.is_issuer(acme) and list_issuers(supplier_sessions) == []
    with supplier_sessions() as session:
        assert repo.get_issuer(session, acme) is None
    again = remove_issuer(supplier_sessions, registry, acme)
    assert (again["revoked"], again["record_removed"]) == (False, False)
