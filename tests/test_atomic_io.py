from __future__ import annotations

import csv
import json

import pytest
import torch

from cdr_fast import atomic_io
from cdr_fast.atomic_io import load_checkpoint, save_checkpoint, write_csv_atomic, write_json_atomic


def test_round_trip(tmp_path):
    state = {"w": torch.randn(3, 4), "epoch": 7, "history": [{"a": 1.5}]}
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["w"], state["w"]) and back["epoch"] == 7 and back["history"] == state["history"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="c.pt: not a complete cdr-fast checkpoint"):
        load_checkpoint(tmp_path / "c.pt")


def test_json_and_csv(tmp_path):
    write_json_atomic(tmp_path / "s.json", {"x": 1.25})
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": 1.25}
    rows = [{"epoch": 1, "acc": 0.5}, {"epoch": 2, "acc": 0.75}]
    write_csv_atomic(tmp_path / "m.csv", rows)
    assert [{k: float(v) for k, v in r.items()} for r in csv.DictReader((tmp_path / "m.csv").open())] == rows
    write_csv_atomic(tmp_path / "empty.csv", [])
    assert (tmp_path / "empty.csv").read_text() == ""


def test_json_is_strict_null_where_a_number_is_undefined(tmp_path):
    import math

    write_json_atomic(tmp_path / "s.json", {"a": math.nan, "b": [math.inf, 1.5, -math.inf], "c": {"d": 2}})
    text = (tmp_path / "s.json").read_text()
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {"a": None, "b": [None, 1.5, None],
                                                                              "c": {"d": 2}}


def test_a_checkpoint_corrupted_in_place_is_refused_by_its_checksum(tmp_path):
    """400 bytes XOR-ed in the middle of the file: it may still unpickle, but not pass the checksum."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.arange(20000, dtype=torch.float32), "epoch": 3})
    assert load_checkpoint(path)["epoch"] == 3
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = bytes(b ^ 0x5A for b in data[middle : middle + 400])
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checkpoint.pt: the checkpoint does not match its checksum"):
        load_checkpoint(path)


def test_saving_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    save_checkpoint(path, {"epoch": 2})
    assert load_checkpoint(path)["epoch"] == 2 and load_checkpoint(atomic_io.previous(path))["epoch"] == 1


def test_no_corruption_of_a_real_checkpoint_is_accepted():
    """scripts/corrupt_checkpoints.py's short version: flips anywhere (the tag too), truncations,
    another run's checkpoint, a checksummed torch file of something else, empty and text files;
    each refused in one line or fallen back to the intact previous checkpoint, never accepted."""
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run([sys.executable, "scripts/corrupt_checkpoints.py", "--corruptions", "40", "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.strip() == "40 corruptions, 0 accepted"
