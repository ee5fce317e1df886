"""Minting from a supplier's CSV: header variants, line numbers, duplicates, nothing half-imported."""

from __future__ import annotations

import pytest

from issuer.core.commitment import code_commitment
from issuer.core.leaf import CODE_FORM_EXACT, CODE_FORM_FOLDED
from issuer.csv_import import parse_codes_csv
from issuer.errors import DuplicateCode, InvalidCount, InvalidCsv, IssuerError
from issuer.storage import repository as repo
from tests.issuer.helpers import cards_of, mint, table_counts


def write(tmp_path, content: str | bytes, name: str = "codes.csv"):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


def imported_codes(sessions, master_key, res) -> list[str]:
    return [c["code"] for c in cards_of(sessions, master_key, res.batch_id)]


# --- accepted files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("content,codes", [
    ("code\nAAAA-1111\nBBBB-2222\n", ["AAAA-1111", "BBBB-2222"]),
    ("Code\nAAAA-1111\n", ["AAAA-1111"]),
    (" CODE \nAAAA-1111", ["AAAA-1111"]),  # no final newline
    ("\ufeffcode\nAAAA-1111\n", ["AAAA-1111"]),  # UTF-8 BOM
    ("code\r\nAAAA-1111\r\nBBBB-2222\r\n", ["AAAA-1111", "BBBB-2222"]),  # CRLF
    ("serial,code,note\n1,AAAA-1111,first\n2,BBBB-2222,\"second, with comma\"\n", ["AAAA-1111", "BBBB-2222"]),
    ("note,code\n,AAAA-1111\nx,  BBBB-2222  \n", ["AAAA-1111", "BBBB-2222"]),  # code not first; trimmed
    ("code,extra\n\"quoted,code\",x\n", ["quoted,code"]),
    ("code\n\nAAAA-1111\n\n\n   \nBBBB-2222\n\n", ["AAAA-1111", "BBBB-2222"]),  # blank lines
    ("code\nÄÖÜ-ünïcødé-✓\n", ["ÄÖÜ-ünïcødé-✓"]),
    ("code\n" + "x" * 128 + "\n", ["x" * 128]),
    ("code\ncase\nCASE\n", ["case", "CASE"]),  # codes are case-sensitive
])
def test_accepted_csv(sessions, master_key, tmp_path, content, codes):
    res = mint(sessions, master_key, codes_csv=write(tmp_path, content))
    assert res.count == len(codes)
    assert imported_codes(sessions, master_key, res) == codes
    assert res.code_form == CODE_FORM_EXACT  # imported codes are committed exactly as given (trimmed)
    cards = cards_of(sessions, master_key, res.batch_id)
    assert [c["commitment"] for c in cards] == [code_commitment(c["opening"], code, CODE_FORM_EXACT)
                                                for c, code in zip(cards, codes)]


def test_imported_codes_may_be_committed_folded(sessions, master_key, tmp_path):
    """An import may ask for the folded form (its codes are case- and dash-insensitive)."""
    res = mint(sessions, master_key, codes_csv=write(tmp_path, "code\nab-cd-1234\nEFGH 5678\n"),
               imported_code_form=CODE_FORM_FOLDED)
    assert res.code_form == CODE_FORM_FOLDED
    cards = cards_of(sessions, master_key, res.batch_id)
    assert [c["code"] for c in cards] == ["ab-cd-1234", "EFGH 5678"]  # stored as given
    assert [c["commitment"] for c in cards] == [code_commitment(c["opening"], typed, CODE_FORM_EXACT)
                                                for c, typed in zip(cards, ["ABCD1234", "EFGH5678"])]


def test_count_matching_the_file_is_accepted(sessions, master_key, tmp_path):
    res = mint(sessions, master_key, codes_csv=write(tmp_path, "code\nA-1\nB-2\nC-3\n"), count=3)
    assert res.count == 3


def test_csv_line_numbers_of_codes():
    got = parse_codes_csv(b"note,code\n\nx,A1\n\"two\nlines\",B2\n\n,C3\n")
    assert got.codes == ["A1", "B2", "C3"]
    assert got.lines == [3, 5, 7]
    with pytest.raises(InvalidCsv) as err:  # a code spanning lines holds a newline: refused
        parse_codes_csv(b"code\nA1\n\"multi\nline\"\n")
    assert err.value.line == 4 and "control" in str(err.value)


# --- rejected files: one clear error, its line, nothing stored --------------------------------------


BAD = [
    ("", None, "empty"),
    ("\ufeff", None, "empty"),
    ("code\n", None, "no codes"),
    ("code\n\n\n", None, "no codes"),
    ("serial,note\n1,x\n", 1, "no 'code' column"),
    ("code,Code\nA,B\n", 1, "more than one 'code' column"),
    ("code\nA-1\n\x01SECRETX\n", 3, "control or invisible"),
    ("code\nA-1\nB-2\nC\u200bSECRET\n", 4, "control or invisible"),
    ("code\nA-1\n" + "S" * 129 + "\n", 3, "too long"),
    ("serial,code\n1,A-1\n2,\n", 3, "empty"),
    ("serial,code\n1,A-1\n2\n", 3, "column"),
    ("code\nA-1\n\"SECRETUNBALANCED\n", 3, "malformed"),
    ("code\nA-1\nB\x00SECRET\n", 3, "NUL"),
]


@pytest.mark.parametrize("content,line,words", BAD)
def test_bad_csv_names_its_line_and_stores_nothing(sessions, master_key, tmp_path, content, line, words):
    before = table_counts(sessions)
    with pytest.raises(InvalidCsv) as err:
        mint(sessions, master_key, codes_csv=write(tmp_path, content))
    msg = str(err.value)
    assert err.value.line == line
    assert msg.startswith(f"CSV line {line}:" if line else "CSV file:")
    assert words in msg
    assert "\n" not in msg and "SECRET" not in msg and "SECRET" not in repr(err.value)
    assert table_counts(sessions) == before


def test_non_utf8_names_the_line(sessions, master_key, tmp_path):
    before = table_counts(sessions)
    path = write(tmp_path, b"code\nA-1\nB-2\nlatin1-\xe9t\xe9\n")
    with pytest.raises(InvalidCsv) as err:
        mint(sessions, master_key, codes_csv=path)
    assert err.value.line == 4 and "UTF-8" in str(err.value)
    assert table_counts(sessions) == before


def test_missing_file_and_directory(sessions, master_key, tmp_path):
    with pytest.raises(InvalidCsv, match="no such file"):
        mint(sessions, master_key, codes_csv=tmp_path / "nope.csv")
    with pytest.raises(InvalidCsv, match="directory"):
        mint(sessions, master_key, codes_csv=tmp_path)


def test_count_mismatch(sessions, master_key, tmp_path):
    before = table_counts(sessions)
    with pytest.raises(InvalidCount) as err:
        mint(sessions, master_key, codes_csv=write(tmp_path, "code\nA-1\nB-2\n"), count=3)
    assert "3" in str(err.value) and "2" in str(err.value)
    assert table_counts(sessions) == before


def test_duplicate_within_file_names_both_lines(sessions, master_key, tmp_path):
    before = table_counts(sessions)
    content = "code\nA-1\n\nSECRET-DUP\nB-2\n  SECRET-DUP  \nC-3\n"
    with pytest.raises(DuplicateCode) as err:
        mint(sessions, master_key, codes_csv=write(tmp_path, content))
    assert (err.value.line, err.value.first_line) == (6, 4)
    assert str(err.value) == "CSV line 6: duplicate code: same code as line 4"
    assert "SECRET" not in repr(err.value)
    assert table_counts(sessions) == before


def test_duplicate_across_batches_names_the_line_and_rolls_back(sessions, master_key, tmp_path):
    first = mint(sessions, master_key, codes_csv=write(tmp_path, "code\nOLD-1\nSECRET-OLD-2\nOLD-3\n", "a.csv"))
    before = table_counts(sessions)
    # Many rows before the clash: on SQLite they are inserted before the unique index trips.
    rows = [f"NEW-{i:05d}" for i in range(3000)] + ["SECRET-OLD-2"] + ["NEW-LAST"]
    with pytest.raises(DuplicateCode) as err:
        mint(sessions, master_key, codes_csv=write(tmp_path, "code\n" + "\n".join(rows) + "\n", "b.csv"))
    assert err.value.other_batch and err.value.line == 3002
    assert str(err.value) == "CSV line 3002: duplicate code: this code was already imported in another batch"
    assert "SECRET" not in repr(err.value)
    assert table_counts(sessions) == before
    with sessions() as s:
        assert [b.batch_id for b in repo.list_batches(s)] == [first.batch_id]
    # The file without the clash imports fine afterwards.
    rows.remove("SECRET-OLD-2")
    ok = mint(sessions, master_key, codes_csv=write(tmp_path, "code\n" + "\n".join(rows) + "\n", "c.csv"))
    assert ok.count == 3001


def test_generated_codes_cannot_be_imported_again(sessions, master_key, tmp_path):
    gen = mint(sessions, master_key, count=5)
    codes = imported_codes(sessions, master_key, gen)
    before = table_counts(sessions)
    with pytest.raises(DuplicateCode) as err:
        mint(sessions, master_key, codes_csv=write(tmp_path, "code\nFRESH-1\n" + codes[3] + "\n"))
    assert err.value.line == 3 and err.value.other_batch
    assert codes[3] not in str(err.value)
    assert table_counts(sessions) == before


def test_errors_are_issuer_errors_with_stable_codes(sessions, master_key, tmp_path):
    with pytest.raises(IssuerError) as err:
        mint(sessions, master_key, codes_csv=write(tmp_path, "nocode\nx\n"))
    assert err.value.code == "invalid_csv"
    with pytest.raises(IssuerError) as err:
        mint(sessions, master_key, codes_csv=write(tmp_path, "code\nx1\nx1\n"))
    assert err.value.code == "duplicate_code"
