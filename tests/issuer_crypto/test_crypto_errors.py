"""issuer.errors: hierarchy, builtin bases, one-line messages, pickling."""

from __future__ import annotations

import pickle

import pytest

from chain.errors import CardproofError
from issuer import errors as E

SAMPLES = [
    (E.BatchNotFound("0x" + "ab" * 32), LookupError),
    (E.CardNotFound("ABCD1234EFGH5678X"), LookupError),
    (E.WrongCode("ABCD1234EFGH5678X"), ValueError),
    (E.InvalidCsv(12, "missing column\n'code'"), ValueError),
    (E.DuplicateCode(14, 3), ValueError),
    (E.DuplicateCode(15, other_batch=True), ValueError),
    (E.DuplicateCode(None), ValueError),
    (E.UnsupportedCurrency("XYZ\nZ"), ValueError),
    (E.InvalidCount(0, 1, 1_000_000), ValueError),
    (E.InvalidBatchState("0x" + "ab" * 32, "anchored", "minted"), RuntimeError),
    (E.AlreadyRedeemed("ABCD1234EFGH5678X", "2030-01-01T00:00:00Z"), E.IssuerError),
    (E.CardRevoked("ABCD1234EFGH5678X", 2), E.IssuerError),
    (E.MasterKeyError("bad key file"), E.IssuerError),
    (E.StorageError("db down"), E.IssuerError),
    (E.DecryptionError(), E.StorageError),
]


@pytest.mark.parametrize("err,builtin", SAMPLES, ids=lambda x: type(x).__name__)
def test_hierarchy_and_message(err, builtin):
    assert isinstance(err, E.IssuerError) and isinstance(err, CardproofError)
    assert isinstance(err, builtin)
    msg = str(err)
    assert msg and "\n" not in msg and len(msg) <= 300
    assert repr(err).startswith(type(err).__name__ + "(")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err) and str(again) == msg
    assert isinstance(err.http_status, int)
    assert err.code.replace("_", "").isalpha() and err.code.islower()


def test_codes_are_distinct():
    classes = [getattr(E, n) for n in E.__all__]
    assert len({c.code for c in classes}) == len(classes)


def test_messages_name_what_they_should():
    assert "line 14" in str(E.DuplicateCode(14, 3)) and "line 3" in str(E.DuplicateCode(14, 3))
    assert "another batch" in str(E.DuplicateCode(15, other_batch=True))
    assert str(E.InvalidCsv(12, "x")).startswith("CSV line 12")
    assert E.InvalidCsv(12, "x").line == 12
    assert "minted" in str(E.InvalidBatchState("0x1", "anchored", "minted"))


def test_every_public_error_is_exported():
    for name in E.__all__:
        cls = getattr(E, name)
        assert issubclass(cls, E.IssuerError)
    required = {"BatchNotFound", "CardNotFound", "WrongCode", "DuplicateCode", "InvalidCsv",
                "UnsupportedCurrency", "InvalidCount", "InvalidBatchState", "AlreadyRedeemed",
                "CardRevoked", "MasterKeyError", "StorageError"}
    assert required <= set(E.__all__)
