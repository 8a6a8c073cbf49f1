"""Atomic writes for checkpoints and result files: a reader never sees a half-written file."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch


def write_bytes_atomic(path: Path, data: bytes, keep_previous: Path | None = None) -> None:
    """Write to a temporary file beside ``path``, fsync it, then rename it over ``path`` (first
    renaming the file it replaces to ``keep_previous``, if given). A failed write changes nothing."""
    write_atomic(path, lambda f: f.write(data), keep_previous)


def write_atomic(path: Path, write: Callable[[BinaryIO], Any], keep_previous: Path | None = None) -> None:
    """``write_bytes_atomic`` for a writer that streams into the open file (nothing held in memory)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# A checkpoint is torch.save's bytes followed by this tag and their SHA-256 (hex), so that a file
# corrupted in place, which may still unpickle, is refused instead of resumed.
CHECKSUM_TAG = b"\ncdr-fast-sha256:"
CHECKSUM_LENGTH = len(CHECKSUM_TAG) + 64


def previous(path: Path) -> Path:
    """Where ``save_checkpoint`` keeps the checkpoint it replaced: ``checkpoint.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically with its checksum, keeping the checkpoint it replaces as
    ``previous(path)``: a crash at any moment leaves at least one good checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    data = payload + CHECKSUM_TAG + hashlib.sha256(payload).hexdigest().encode()
    write_bytes_atomic(path, data, keep_previous=previous(Path(path)))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state ``save_checkpoint`` wrote; a ValueError naming the file if it is missing, lacks
    its checksum (truncated, or not written by cdr-fast), does not match it, or cannot be read.
    There is no unchecked path: a file whose tag is damaged is refused, never taken as an older one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read checkpoint ({err.strerror})") from None
    tail = data[-CHECKSUM_LENGTH:]
    if len(data) <= CHECKSUM_LENGTH or not tail.startswith(CHECKSUM_TAG):
        raise ValueError(f"{path}: not a complete cdr-fast checkpoint (its checksum tag is missing: truncated, "
                         "damaged, or another file)")
    data = data[:-CHECKSUM_LENGTH]
    if hashlib.sha256(data).hexdigest().encode() != tail[len(CHECKSUM_TAG):]:
        raise ValueError(f"{path}: the checkpoint does not match its checksum (corrupted on disk)")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle is a corrupt checkpoint
        raise ValueError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float as None: JSON has no NaN, and strict parsers refuse it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    """Strict JSON (``null`` where a number is undefined), written atomically."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode())


def write_csv_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_bytes_atomic(path, buf.getvalue().encode())
