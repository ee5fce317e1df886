"""Fixtures of the API tests. ``api`` runs a test twice: against the ASGI app (in process) and against
a real uvicorn server on loopback."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import httpx
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette suggests httpx2 for its TestClient; httpx is what we have
    from starlette.testclient import TestClient

from tests.api.world import LiveServer, World, build_world


@pytest.fixture(scope="session")
def world() -> World:
    w = build_world()
    yield w
    w.engine.dispose()


@pytest.fixture(scope="session")
def asgi_client(world: World) -> Iterator[TestClient]:
    with TestClient(world.app(), base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="session")
def live_server(world: World) -> Iterator[LiveServer]:
    with LiveServer(world.app()) as server:
        yield server


@pytest.fixture(scope="session")
def live_client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        yield client


@pytest.fixture(params=["asgi", "uvicorn"])
def api(request: pytest.FixtureRequest) -> httpx.Client:
    return request.getfixturevalue("asgi_client" if request.param == "asgi" else "live_client")
