"""schemathesis against the OpenAPI schema, over HTTP to a real uvicorn server: no 5xx, and the answers
conform to the documented schemas, status codes and content types.

(schemathesis' own pytest plugin does not run under this pytest version, so each operation's
hypothesis strategy is driven here directly.)"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
PATHS = ["/v1/cards/{serial}", "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/dump",
         "/v1/issuers/{address}", "/c/{serial}", "/healthz", "/readyz", "/v1/orders/{order_id}", "/o/{order_id}",
         "/v1/orders/{order_id}/delivery"]


@pytest.fixture(scope="module")
def operations(live_server):
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    ops = {}
    for result in schema.get_all_operations():
        op = result.ok()
        ops[op.path] = op
    assert sorted(ops) == sorted(PATHS)
    return live_server.url, ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize("path", PATHS)
def test_no_server_errors(operations, path, mode):
    base_url, ops = operations
    if mode is GenerationMode.NEGATIVE and path in ("/healthz", "/readyz", "/o/{order_id}"):
        pytest.skip("no parameter has a constraint to break")

    # The serial's constraints are enforced, not only stated: a request breaking them is refused.
    checks = CHECKS + [negative_data_rejection] if mode is GenerationMode.NEGATIVE and "{serial}" in path else CHECKS

    @given(case=ops[path].as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def run(case):
        case.call_and_validate(base_url=base_url, checks=checks)

    run()


def test_serial_parameters_state_their_constraints(operations):
    """The serials' pattern and lengths are in the schema (so negative tests have something to break)."""
    _, ops = operations
    for path in ("/v1/cards/{serial}", "/c/{serial}"):
        (param,) = [p for p in ops[path].definition.raw["parameters"] if p["name"] == "serial"]
        schema = param["schema"]
        assert schema["minLength"] == 17 and schema["maxLength"] == 64 and schema["pattern"].startswith("^")


_SERIAL_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz*~$=- \t\n#"


@given(text=st.text(alphabet=_SERIAL_CHARS, min_size=0, max_size=30)
       | st.builds(lambda v, sep, low: _typed(v, sep, low), st.integers(0, 2**80 - 1), st.sampled_from(["-", " ", ""]),
                   st.booleans()))
@settings(max_examples=400, deadline=None, derandomize=True, database=None)
def test_serial_pattern_matches_parse_serial(text):
    """A serial the pattern accepts is one parse_serial accepts, but for the check symbol's value; and every
    serial parse_serial accepts matches the pattern (a schema-valid request is never refused for its form)."""
    import re

    from issuer.core.errors import InvalidSerial
    from issuer.core.serial import parse_serial
    from verify_api.routes.cards import SERIAL_PATTERN

    matches = re.fullmatch(SERIAL_PATTERN, text) is not None
    try:
        parse_serial(text)
        parsed, reason = True, ""
    except InvalidSerial as exc:
        parsed, reason = False, str(exc)
    if parsed:
        assert matches, text
    elif matches:
        assert "check symbol does not match" in reason, (text, reason)


def _typed(value: int, sep: str, lower: bool) -> str:
    from issuer.core.serial import format_serial

    s = format_serial(value).replace("-", sep)
    return s.lower() if lower else s
