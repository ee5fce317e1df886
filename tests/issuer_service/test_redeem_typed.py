"""POST /v1/cards/{serial}/redeem takes a generated code as a cashier types it (issue 12): lower case, spaced,
with Crockford's aliases; a code that is no variant of the card's is still 403 wrong_code."""

from __future__ import annotations

from tests.issuer_service.test_redeem import bearer, error


def test_typed_variants_of_a_generated_code_redeem(client, world):
    key = world.api_key()
    serial, code = world.card()
    other_serial, other_code = world.card()
    # En dashes (a word processor's), lower case, an O for a 0 and an l for a 1: none of them in the committed form.
    typed = code.lower().replace("-", " \u2013 ").replace("0", "o").replace("1", "l")
    wrong = error(client.post(f"/v1/cards/{serial}/redeem", json={"code": other_code.lower()}, headers=bearer(key)),
                  403, "wrong_code")
    assert other_code.lower() not in str(wrong) and other_code not in str(wrong)
    r = client.post(f"/v1/cards/{serial}/redeem", json={"code": typed}, headers=bearer(key))
    assert r.status_code == 200, r.text
    assert r.json()["serial"] == serial and world.is_redeemed_on_chain(serial)
    assert code not in r.text and typed not in r.text
    assert not world.is_redeemed_on_chain(other_serial)
