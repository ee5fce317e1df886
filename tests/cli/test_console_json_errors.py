"""`--json` errors are JSON too: `{"error": {"code": "...", "message": "..."}}` on stdout, the same one line on
stderr, exit 1 (refused) or 2 (usage), `code` a stable snake_case name derived from the error class."""

from __future__ import annotations

import json
import re

import pytest

from cardproof import console
from chain import errors as chain_errors
from chain.cli_output import error_code, snake_case
from issuer.core import errors as core_errors
from tests.cli.conftest import clean_env, run_cardproof

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def _json_error(r, rc: int) -> dict:
    assert r.rc == rc, r
    assert r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    body = json.loads(r.out)
    assert list(body) == ["error"] and sorted(body["error"]) == ["code", "message"], body
    assert SNAKE.match(body["error"]["code"]), body
    assert body["error"]["message"] in r.err  # the same words as the human line
    return body["error"]


def test_a_bad_batch_id(cli):
    err = _json_error(cli("order", "deliver", "1", "--batch", "0x12", "--range", "0:1", "--json"), 1)
    assert err["code"] == "invalid_argument" and "0x12" in err["message"]


def test_an_unknown_batch(cli):
    err = _json_error(cli("publish", "0x" + "ab" * 32, "--json"), 1)
    assert err["code"] == "batch_not_found"


def test_an_unknown_order(cli):
    cli.ok("deploy")
    err = _json_error(cli("order", "show", "99", "--json"), 1)
    assert err["code"] == "order_not_found" and "99" in err["message"]


def test_nothing_deployed_names_the_state_folder(cli):
    err = _json_error(cli("order", "show", "1", "--json"), 1)
    assert err["code"] == "not_deployed"
    assert f"deployments are recorded in {cli.home}, set by CARDPROOF_HOME" in err["message"]


@pytest.mark.parametrize(("argv", "code"), [
    (["order", "show", "--nope", "--json"], "no_such_option"),
    (["order", "show", "abc", "--json"], "bad_parameter"),
    (["revoke", "X", "--json"], "missing_parameter"),
    (["mint", "--sku", "A", "--face-value", "1", "--currency", "USD", "--json"], "bad_parameter"),
])
def test_usage_errors(cli, argv, code):
    err = _json_error(cli(*argv), 2)
    assert err["code"] == code and err["message"].endswith("(see --help)")


def test_without_json_errors_stay_one_line_on_stderr(cli):
    r = cli.fails("order", "show", "abc", rc=2)
    assert r.out == ""


def test_an_unreachable_node_names_the_url_and_the_variable(tmp_path):
    env = clean_env(CARDPROOF_HOME=str(tmp_path), CARDPROOF_RPC_URL="http://127.0.0.1:1")
    run = run_cardproof("order", "show", "1", "--json", env=env)
    assert run.returncode == 1
    assert json.loads(run.stdout) == {"error": {"code": "chain_unreachable", "message": (
        "the chain node at http://127.0.0.1:1 does not answer (connection refused); check CARDPROOF_RPC_URL")}}


def test_every_error_class_has_a_stable_snake_case_code():
    assert snake_case("OrderNotFound") == "order_not_found" and snake_case("NoSuchOption") == "no_such_option"
    assert snake_case("ERC20InsufficientBalance") == "erc20_insufficient_balance"
    assert error_code(core_errors.InvalidSerial("bad")) == "invalid_serial"
    assert error_code(core_errors.SealedDeliveryUnreadable("x")) == "sealed_delivery_unreadable"
    assert error_code(chain_errors.NotDeployed("x")) == "not_deployed"
    assert error_code(chain_errors.OrderNotFound("OrderNotFound")) == "order_not_found"
    assert error_code(KeyError("x")) == "key_error"

    def every(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from every(sub)

    for cls in [*every(chain_errors.CardproofError), *every(core_errors.CoreError)]:
        assert SNAKE.match(error_code(cls.__new__(cls))), cls


def test_console_exit_code_names():
    assert (console.EXIT_OK, console.EXIT_ERROR, console.EXIT_USAGE, console.EXIT_INTERRUPTED) == (0, 1, 2, 130)
