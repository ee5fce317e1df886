"""Fast JSON responses: orjson when installed, the standard library otherwise."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSONResponse

try:  # pragma: no branch
    import orjson

    def dumps(content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)

except ImportError:  # pragma: no cover - orjson is optional
    orjson = None

    def dumps(content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def loads(data: bytes | str) -> Any:
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


class JSONResponse(_StarletteJSONResponse):

    def render(self, content: Any) -> bytes:
        return dumps(content)
