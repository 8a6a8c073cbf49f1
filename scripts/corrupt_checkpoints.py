"""Corrupt a real run's checkpoint in every way storage and users do, and check none is accepted.

    python scripts/corrupt_checkpoints.py --corruptions 500 --seed 20261201
    python scripts/corrupt_checkpoints.py --corruptions 40 --quick     # the suite's version

Trains a tiny run (mnist-mini, or with --quick the 300-image example set; 2 epochs, so that checkpoint.pt and checkpoint.prev.pt exist) and a
second run with another seed, then, ``--corruptions`` times, damages a copy of the run folder at
random: byte flips anywhere (the checksum tag included), truncation at any length, the other run's
checkpoint copied in, a valid torch file of something else (with a correct checksum), an empty
file, text; sometimes the previous checkpoint too. Each copy is then resumed the way train.py does
(``RunFolder.checkpoint``). It must either be refused with a one-line error or fall back to the
intact previous checkpoint and say so; a damaged state accepted as it is counts as "accepted".
Prints "N corruptions, 0 accepted" and exits 1 if any was accepted.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import shutil
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cdr_fast.atomic_io import CHECKSUM_TAG, previous  # noqa: E402
from cdr_fast.training import RunFolder, Trainer, TrainConfig  # noqa: E402

KINDS = ("flip", "flip_tag", "truncate", "foreign", "other_torch_file", "empty", "text")


def train(folder: Path, seed: int, quick: bool) -> None:
    """A real run of 2 epochs (mnist-mini; --quick: the 300-image example set)."""
    data = dict(dataset="npz", data_dir=str(REPO / "tests" / "data" / "tiny.npz"), tau=0.3) if quick else {}
    config = TrainConfig(method="cdr_aux", epochs=2, batch_size=64 if quick else 512, engine="reference", seed=seed,
                         milestones=[1], **data)
    Trainer(config, RunFolder(folder), progress=False, log=lambda line: None).fit()


def corrupt(path: Path, kind: str, rng: random.Random, foreign: Path) -> None:
    data = bytearray(path.read_bytes())
    if kind == "flip":  # one to eight bytes anywhere
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    elif kind == "flip_tag":  # the checksum's tag and digest, plus weight bytes
        data[len(data) - rng.randint(1, 81)] ^= rng.randint(1, 255)
        for _ in range(rng.randint(0, 8)):
            data[rng.randrange(len(data) - 81)] ^= rng.randint(1, 255)
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "foreign":
        data = bytearray(foreign.read_bytes())
    elif kind == "other_torch_file":  # a valid torch file with a correct checksum, but not a run's
        buf = io.BytesIO()
        torch.save({"state_dict": {"w": torch.zeros(3)}}, buf)
        payload = buf.getvalue()
        data = bytearray(payload + CHECKSUM_TAG + hashlib.sha256(payload).hexdigest().encode())
    elif kind == "empty":
        data = bytearray()
    else:
        data = bytearray(b"epoch,loss\n1,0.5\n")
    path.write_bytes(bytes(data))


def trial(source: Path, work: Path, rng: random.Random, foreign: Path, expected: dict) -> tuple[str, bool]:
    """One corruption of a copy of ``source``; (what was done, whether a damaged state was accepted).
    ``expected``: the intact previous checkpoint, the one state a fall-back may return."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work)
    current, prev = work / "checkpoint.pt", previous(work / "checkpoint.pt")
    kind = rng.choice(KINDS)
    corrupt(current, kind, rng, foreign)
    both = rng.random() < 0.3
    if both:
        corrupt(prev, rng.choice(KINDS), rng, foreign)
    folder = RunFolder(work)
    try:
        state = folder.checkpoint()
    except ValueError as err:
        assert "\n" not in str(err)
        return kind, False
    # Accepted: fine only if it is the intact previous checkpoint, named in a note.
    fell_back = bool(folder.notes) and not both and state["epoch"] == expected["epoch"] and all(
        torch.equal(state["model"][k], expected["model"][k]) for k in expected["model"])
    return kind, not fell_back


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corruptions", type=int, default=200)
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--quick", action="store_true", help="train on the 300-image example set (the suite's version)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train(tmp / "run", seed=1, quick=args.quick)
        train(tmp / "other", seed=2, quick=args.quick)
        expected = RunFolder(tmp / "run")._verified(previous(tmp / "run" / "checkpoint.pt"))
        accepted = []
        for _ in range(args.corruptions):
            kind, bad = trial(tmp / "run", tmp / "work", rng, tmp / "other" / "checkpoint.pt", expected)
            if bad:
                accepted.append(kind)
    print(f"{args.corruptions} corruptions, {len(accepted)} accepted" + (f" ({', '.join(accepted)})" if accepted else ""))
    return 1 if accepted else 0


if __name__ == "__main__":
    sys.exit(main())
