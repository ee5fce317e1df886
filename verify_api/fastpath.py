"""GET /v1/cards/{serial}, the route a QR scan hits, answered without Starlette's router and FastAPI's request
handling.

That machinery (route matching over every route, the request handler, the exception middleware) costs about
0.15 ms of CPU a request: nearly all of what a trivial endpoint costs, and some 15 % of a cold card lookup
(scripts/bench_api, py-spy). This ASGI middleware recognises the one path and calls the same function the route
does (:func:`verify_api.routes.cards.card_answer`); every error is answered by the same handler the app uses
(:func:`verify_api.errors.error_response`). Anything else, and any card path the route itself would judge
differently (too long, not a GET, another method's 405), goes on to the app unchanged. The route stays the
documented one (OpenAPI) and answers identically.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

__all__ = ["CardFastPath"]

PREFIX = "/v1/cards/"


class CardFastPath:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._route: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path.startswith(PREFIX):
                from verify_api.routes.cards import SERIAL_MAX_LENGTH, card_answer

                serial = path[len(PREFIX):]
                if serial and "/" not in serial and len(serial) <= SERIAL_MAX_LENGTH:
                    route = self._route or self._find_route()
                    if route is not None:
                        scope["route"] = route  # what the metrics middleware labels the request by
                        request = Request(scope, receive)
                        try:
                            response = await card_answer(request, serial)
                        except Exception as exc:  # noqa: BLE001 - answered as the app answers it
                            from verify_api.errors import error_response

                            response = await error_response(request, exc)
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)

    def _find_route(self) -> Any:
        """The route object (its ``path`` labels the metrics), as the cards router declares it."""
        from verify_api.routes.cards import router

        for route in router.routes:
            if getattr(route, "path", None) == PREFIX + "{serial}" and "GET" in getattr(route, "methods", ()):
                self._route = route
                return route
        return None
