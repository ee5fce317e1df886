"""GET /v1/cards/{serial} is answered by an ASGI fast path (verify_api.fastpath) that skips Starlette's router and
FastAPI's request handling: it must answer exactly as the documented route does, errors included, and be counted
in the metrics under the route's name."""

from __future__ import annotations

import inspect

import pytest
from starlette.testclient import TestClient

import verify_api.routes.cards as cards


@pytest.fixture
def paths(monkeypatch):
    """Which path answered each card request: "fast" (the middleware) or "route" (FastAPI's handler)."""
    seen: list[str] = []
    real = cards.card_answer

    async def spy(request, serial):
        seen.append("route" if any(f.function == "get_card" for f in inspect.stack()[1:4]) else "fast")
        return await real(request, serial)

    monkeypatch.setattr(cards, "card_answer", spy)
    return seen


def _without_fast_path(world):
    from verify_api.fastpath import CardFastPath

    app = world.app()
    app.user_middleware = [m for m in app.user_middleware if m.cls is not CardFastPath]
    return app


def _volatile(body):
    body = dict(body)
    body.pop("checked_at", None)
    body.pop("fraud", None)  # the scan counts of the serial grow with each lookup
    return body


def test_the_fast_path_answers_as_the_route_does(world, paths):
    known, _ = world.card()
    cases = [known, known.lower().replace("-", ""), "0000-0000-0000-0000-0", "x", "1" * 64, "A" * 65, "%00",
             known + "/extra"]
    with TestClient(world.app()) as fast, TestClient(_without_fast_path(world)) as slow:
        for path in cases:
            paths.clear()
            a = fast.get(f"/v1/cards/{path}")
            used = list(paths)
            paths.clear()
            b = slow.get(f"/v1/cards/{path}")
            assert paths in ([], ["route"])  # without the middleware only the route answers
            assert (a.status_code, a.headers.get("cache-control"), a.headers["content-type"]) == \
                (b.status_code, b.headers.get("cache-control"), b.headers["content-type"]), path
            if a.status_code == 200:
                assert used == ["fast"], path
                assert _volatile(a.json()) == _volatile(b.json()), path
            else:
                assert a.json() == b.json(), path
        # Too long for the route's own check, or not a card path at all: the app's answer, unchanged.
        paths.clear()
        assert fast.get("/v1/cards/" + "A" * 65).json()["error"]["code"] == "invalid_request"
        assert fast.post(f"/v1/cards/{known}").status_code == 405
        assert paths == []
        metrics = fast.get("/metrics").text
        assert 'route="/v1/cards/{serial}"' in metrics and 'status="200"' in metrics


def test_errors_on_the_fast_path_are_answered_by_the_app_handler(world, monkeypatch):
    from verify_api.errors import RateLimited

    known, _ = world.card()

    def limited(*_a, **_k):
        raise RateLimited(7, "requests")

    monkeypatch.setattr(cards, "rate_limit", limited)
    with TestClient(world.app()) as fast:
        r = fast.get(f"/v1/cards/{known}")
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 7
