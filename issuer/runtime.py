"""What a command needs, built lazily from settings: database sessions, master key, chain, registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy.orm import Session, sessionmaker

from chain.client import ChainClient, connect
from chain.registry import Registry
from chain.settings import Settings, get_settings
from issuer.secrets_store import MasterKey, load_master_key
from issuer.storage.db import open_database


@dataclass
class Runtime:
    settings: Settings = field(default_factory=get_settings)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        _engine, sessions = open_database(self.settings)
        return sessions

    @cached_property
    def master_key(self) -> MasterKey:
        return load_master_key(self.settings)

    @cached_property
    def client(self) -> ChainClient:
        return connect(self.settings)

    @cached_property
    def registry(self) -> Registry:
        return Registry.deployed(self.client, self.settings.home)
