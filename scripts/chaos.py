"""Kill a two-process training at random moments and check that nothing is lost.

    python scripts/chaos.py --kills 5                     # mnist-mini, CDR+AUX, 8 epochs (a few minutes)
    python scripts/chaos.py --kills 1 --quick             # the short version the test suite runs

Trains once without interruption, then again under ``torchrun --max-restarts`` with
``--auto-resume --checkpoint-every``, killing a random rank (SIGKILL) at a random moment, ``--kills``
times; torchrun restarts the group, which continues from the last checkpoint. At the end the
weights, the AUX table and the per-epoch metrics must equal the uninterrupted run's, bit for bit.
Prints one line, e.g. "5 kills, 0 bits lost", and exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def torchrun(args: list[str], restarts: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               f"--max-restarts={restarts}", "train.py", *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


def workers(launcher: int) -> list[int]:
    """The training processes torchrun started (its children running train.py)."""
    found = subprocess.run(["pgrep", "-P", str(launcher), "-f", "train.py"], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def compare(a: Path, b: Path) -> list[str]:
    import torch

    from cdr_fast.atomic_io import load_checkpoint

    x, y = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    diffs = [f"model {k}" for k in x["model"] if not torch.equal(x["model"][k], y["model"][k])]
    if x["aux"] is not None and not torch.equal(x["aux"]["weight"], y["aux"]["weight"]):
        diffs.append("aux table")
    strip = lambda h: [{k: v for k, v in s.items() if "time" not in k} for s in h]  # noqa: E731
    if strip(x["history"]) != strip(y["history"]):
        diffs.append("metrics")
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--seed", type=int, default=None, help="of the kill schedule (default: random, printed)")
    p.add_argument("--quick", action="store_true", help="tests/data/tiny.npz, 2 epochs: the suite's version")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    data = (["--epochs", "1", "--batch-size", "32", "--checkpoint-every", "25"] if args.quick else
            ["--epochs", "8", "--batch-size", "16", "--checkpoint-every", "60"])
    window = 0.2 if args.quick else 3.0  # seconds after a group's first checkpoint in which its kill falls
    flags = [*data, "--method", "cdr_aux", "--no-progress", "--auto-resume"]
    with tempfile.TemporaryDirectory() as tmp:
        straight, chaos = Path(tmp) / "straight", Path(tmp) / "chaos"
        done = torchrun([*flags, "--out", str(straight)], 0)
        if done.wait(timeout=900) != 0:
            print(f"the uninterrupted run failed: {done.stderr.read()[-2000:]}", file=sys.stderr)
            return 2
        run = torchrun([*flags, "--out", str(chaos)], args.kills)
        kills, group, written, at = 0, None, 0.0, None
        checkpoint = chaos / "checkpoint.pt"
        while kills < args.kills and run.poll() is None:
            time.sleep(0.02)
            pids = workers(run.pid)
            if len(pids) < 2:
                continue
            if set(pids) != group:  # a new group: wait until it has saved a checkpoint of its own
                group, at = set(pids), None
                written = checkpoint.stat().st_mtime if checkpoint.exists() else 0.0
            elif at is None and checkpoint.exists() and checkpoint.stat().st_mtime > written:
                at = time.time() + rng.uniform(0.0, window)  # then kill it at a random moment
            elif at is not None and time.time() >= at:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
                group = None
        code = run.wait(timeout=1800)
        if code != 0:
            print(f"the killed run failed (status {code}): {run.stderr.read()[-3000:]}", file=sys.stderr)
            return 1
        diffs = compare(straight, chaos)
    print(f"{kills} kills, {'0 bits lost' if not diffs else 'DIFFERENT: ' + ', '.join(diffs)} (kill schedule seed "
          f"{seed})")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
