"""Deploy the whole platform on a chain: the CardRegistry everywhere; on dev chains also a test
stablecoin (6 decimals, EIP-2612) and the CardEscrow with that stablecoin allowlisted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain.client import ETH_TESTER_CHAIN_ID, ChainClient
from chain.deployments import Deployment, deploy_registry

ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


@dataclass(frozen=True)
class Platform:
    registry: Deployment
    registry_created: bool
    escrow: Deployment | None = None
    stablecoin: Deployment | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"chain_id": self.registry.chain_id, "registry": self.registry.to_json(),
                               "created": self.registry_created}
        if self.escrow is not None:
            out["escrow"] = self.escrow.to_json()
        if self.stablecoin is not None:
            out["stablecoin"] = self.stablecoin.to_json()
        return out


def deploy_platform(client: ChainClient, home: Path) -> Platform:
    """Idempotent: what is already live on this chain is kept."""
    registry, created = deploy_registry(client, home)
    if not client.is_dev_chain:
        return Platform(registry, created)
    from chain.escrow import Escrow, deploy_escrow, deploy_test_stablecoin

    coin, _ = deploy_test_stablecoin(client, home)
    escrow, _ = deploy_escrow(client, home, registry.address, tokens=[coin.address])
    esc = Escrow(client, escrow.address)
    if not esc.is_token_allowed(coin.address):
        esc.set_tokens_allowed([coin.address], True)
    return Platform(registry, created, escrow, coin)


def dev_accounts(client: ChainClient, count: int = 4) -> list[LocalAccount]:
    """The dev chain's well-known funded test accounts (index 0 is the default actor)."""
    if client.chain_id == ETH_TESTER_CHAIN_ID:
        tester = client.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        return [Account.from_key(k.to_bytes()) for k in tester.backend.account_keys[:count]]
    Account.enable_unaudited_hdwallet_features()
    return [Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)]
