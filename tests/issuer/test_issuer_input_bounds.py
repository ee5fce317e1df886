"""Input bounds of `cardproof mint --codes-from`: a device, a pipe without end or a socket is refused with one
line before anything is read, and a file is never read past the size cap (issue 9)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from issuer import csv_import
from issuer.csv_import import read_codes_csv
from issuer.errors import InvalidCsv
from tests.clikit import in_process_cli

MINT = ("mint", "--sku", "GC", "--face-value", "1", "--currency", "USD", "--codes-from")


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    with in_process_cli(tmp_path, monkeypatch, capsys) as c:
        yield c


@pytest.mark.timeout(30)
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused(cli, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    cli.fails(*MINT, device, rc=1, match="is not a regular file (a character device)")


@pytest.mark.timeout(30)
def test_fifo_without_writer_is_refused(cli, tmp_path):
    fifo = tmp_path / "codes.fifo"
    os.mkfifo(fifo)
    cli.fails(*MINT, fifo, rc=1, match="is not a regular file (a pipe)")


@pytest.mark.timeout(30)
def test_endless_pipe_is_refused(cli, tmp_path):
    """A FIFO whose writer never stops (`--codes-from <(yes)`) is refused, not read until memory runs out."""
    fifo = tmp_path / "endless.fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def writer() -> None:
        try:
            fd = os.open(fifo, os.O_WRONLY)
        except OSError:
            return
        try:
            while not stop.is_set():
                os.write(fd, b"code\n" + b"A" * 4096)
        except OSError:  # the reader went away
            pass
        finally:
            os.close(fd)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        cli.fails(*MINT, fifo, rc=1, match="is not a regular file (a pipe)")
    finally:
        stop.set()
        # Unblock a writer still waiting for a reader.
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
        t.join(5)


@pytest.mark.timeout(30)
def test_socket_is_refused(cli, tmp_path):
    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    try:
        r = cli.fails(*MINT, path, rc=1)
        assert "not a regular file" in r.err
    finally:
        s.close()


def test_directory_is_refused(cli, tmp_path):
    cli.fails(*MINT, tmp_path, rc=1, match="is a directory")


def test_size_cap_is_enforced_on_the_read(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    path.write_bytes(b"code\n" + b"AAAA-1111\n" * 100)
    with pytest.raises(InvalidCsv, match="larger than"):
        read_codes_csv(path, max_bytes=100)
    monkeypatch.setattr(csv_import, "MAX_FILE_BYTES", 100)
    with pytest.raises(InvalidCsv, match="larger than"):
        read_codes_csv(path)
    monkeypatch.setattr(csv_import, "MAX_FILE_BYTES", 10_000)
    assert len(read_codes_csv(path).codes) == 100


def test_size_cap_through_the_cli(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(csv_import, "MAX_FILE_BYTES", 64)
    path = tmp_path / "big.csv"
    path.write_bytes(b"code\n" + b"AAAA-1111\n" * 20)
    cli.fails(*MINT, path, rc=1, match="file is larger than 64 bytes")


def test_cap_holds_a_full_batch():
    from issuer.codes import MAX_IMPORTED_CODE_LENGTH
    from issuer.minting import MAX_BATCH_CARDS

    assert csv_import.MAX_FILE_BYTES >= MAX_BATCH_CARDS * (MAX_IMPORTED_CODE_LENGTH + 2)


def test_symlink_to_regular_file_is_read(tmp_path):
    real = tmp_path / "real.csv"
    real.write_bytes(b"code\nAAAA-1111\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert read_codes_csv(link).codes == ["AAAA-1111"]
