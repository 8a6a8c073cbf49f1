"""Plant small, plausible bugs in the code the results rest on, one at a time, and see which the
test suite catches (a mutation test, written for this project; CI does not run it).

    python scripts/plant_bugs.py                 # every bug, each against the tests that cover its code
    python scripts/plant_bugs.py --only aux_step_size asymmetric_map

Each bug is applied to a copy of the repository (never to this checkout), the named tests run
there, and the bug counts as caught when they fail. The table at the end lists what was missed;
a missed bug is a test to write.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent


class Bug(NamedTuple):
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


BUGS = [
    # the four a planted-bug audit found missed, and the resume that only a slow test saw
    Bug("aux_step_size", "cdr_fast/auxiliary.py", "            lr = aux_lr * batch_size",
        "            lr = aux_lr / batch_size",
        ("tests/test_auxiliary.py", "tests/test_distributed.py")),
    Bug("asymmetric_map", "cdr_fast/data/__init__.py", "MNIST_ASYMMETRIC = {2: 7, 3: 8, 5: 6, 6: 5}",
        "MNIST_ASYMMETRIC = {2: 7, 3: 8, 5: 6}", ("tests/test_noise.py",)),
    Bug("snapshot_overwrite", "cdr_fast/estimate.py", "total = probs if total is None else total.add_(probs)",
        "total = probs", ("tests/test_estimate.py",)),
    Bug("uniform_priors", "cdr_fast/estimate.py",
        "priors = torch.bincount(noisy_labels.cpu(), minlength=c).double() / noisy_labels.numel()",
        "priors = torch.full((c,), 1.0 / c, dtype=torch.float64)", ("tests/test_estimate.py",)),
    Bug("scheduler_not_restored", "cdr_fast/training/loop.py", 'self.scheduler.load_state_dict(state["scheduler"])',
        "pass", ("tests/test_training.py::test_resume_continues_exactly",)),
    # CDR's rule
    Bug("keep_count_rounds", "cdr_fast/cdr_rule.py", "return int((1.0 - tau) * num_scored)",
        "return round((1.0 - tau) * num_scored)", ("tests/test_optim.py",)),
    Bug("no_gradient_scale", "cdr_fast/cdr_rule.py", "return 1.0 - tau", "return 1.0", ("tests/test_optim.py",)),
    Bug("rdi_not_squared", "cdr_fast/cdr_rule.py", "return rdi_lambda * rdi_lambda", "return rdi_lambda",
        ("tests/test_optim.py",)),
    Bug("ties_dropped", "cdr_fast/engines/reference.py", "keep = torch.mul(scored_g, w[:n_scored]).abs_() >= thr",
        "keep = torch.mul(scored_g, w[:n_scored]).abs_() > thr", ("tests/test_optim.py", "tests/test_engine_ops.py")),
    # noise
    Bug("pairflip_backwards", "cdr_fast/noise.py", "t[torch.arange(c), (torch.arange(c) + 1) % c] += rate",
        "t[torch.arange(c), (torch.arange(c) - 1) % c] += rate", ("tests/test_noise.py",)),
    Bug("symmetric_over_c", "cdr_fast/noise.py", "t = torch.full((c, c), rate / (c - 1), dtype=torch.float64)",
        "t = torch.full((c, c), rate / c, dtype=torch.float64)", ("tests/test_noise.py",)),
    Bug("instance_flip_inverted", "cdr_fast/noise.py", "probs[own] += 1.0 - flip", "probs[own] += flip",
        ("tests/test_noise.py",)),
    # the protocol and its metrics
    Bug("clean_validation", "cdr_fast/training/split.py", "val_x=_placed(x, val_idx, device), val_y=y[val_idx].to(device)",
        "val_x=_placed(x, val_idx, device), val_y=clean[val_idx].to(device)", ("tests/test_training.py",)),
    Bug("best_is_last", "cdr_fast/training/summary.py", 'best = max(history, key=lambda s: s["val_acc"])',
        "best = history[-1]", ("tests/test_training.py",)),
    Bug("memorised_against_clean", "cdr_fast/training/metrics.py",
        "memorised = (self.predicted[noisy_mask] == data.train_y[noisy_mask]).float().mean()",
        "memorised = (self.predicted[noisy_mask] == data.train_clean[noisy_mask]).float().mean()",
        ("tests/test_training.py",)),
    Bug("aux_in_eval", "cdr_fast/auxiliary.py", "        if not self.training:\n            return logits\n", "",
        ("tests/test_auxiliary.py",)),
    Bug("detector_margin_sign", "cdr_fast/detection/scores.py",
        "return Suspects(o[np.arange(s.size), s].astype(np.float64) - other_max,",
        "return Suspects(other_max - o[np.arange(s.size), s].astype(np.float64),",
        ("tests/test_detect.py",)),
    Bug("calibration_by_true_class", "cdr_fast/detection/confident.py", "* label_counts[:, None], 0.0)",
        "* label_counts[None, :], 0.0)", ("tests/test_detect.py",)),
    Bug("posterior_noise_by_rows", "cdr_fast/detection/scores.py", "given_if_true = q / q.sum(0, keepdims=True)",
        "given_if_true = q / q.sum(1, keepdims=True)", ("tests/test_detect.py",)),
    Bug("evidence_lost_on_resume", "cdr_fast/training/evidence_keeper.py",
        "        self.recorder.load_state_dict(state)\n", "        pass\n",
        ("tests/test_training.py::test_resume_continues_exactly",)),
]


def copy_of_repo(into: Path) -> Path:
    """The tracked (and untracked, unignored) files of this checkout, with kernels/ where the
    package expects it, so the copy imports as cdr_fast without installing."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, into / name)
    (into / "cdr_fast" / "kernels").symlink_to(into / "kernels")
    return into


def stale(bug: Bug, root: Path = REPO) -> bool:
    """Whether the line a bug changes is no longer in its file exactly once (the code moved on)."""
    return (root / bug.file).read_text().count(bug.old) != 1


def plant(copy: Path, bug: Bug) -> str:
    path = copy / bug.file
    text = path.read_text()
    path.write_text(text.replace(bug.old, bug.new))
    return text


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, float]:
    """Whether the tests fail (the bug is caught), and how long they took."""
    env = {**os.environ, "PYTHONPATH": str(copy), "CDR_FAST_SHARED_DATA": str(REPO.parent / "shared" / "data")}
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        caught = done.returncode != 0
    except subprocess.TimeoutExpired:
        caught = True  # a hang is a failure too
    return caught, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=[b.name for b in BUGS], help="these bugs only")
    p.add_argument("--timeout", type=float, default=900, help="seconds per bug's tests")
    args = p.parse_args(argv)
    bugs = [b for b in BUGS if not args.only or b.name in args.only]
    outdated = [b.name for b in bugs if stale(b)]
    if outdated:
        print(f"error: the line to change is not in its file exactly once for {', '.join(outdated)}; update BUGS",
              file=sys.stderr)
        return 2
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = copy_of_repo(Path(tmp))
        control = tuple(sorted({t for bug in bugs for t in bug.tests}))
        failed, seconds = run_tests(copy, control, args.timeout * len(control))
        print(f"control: the tests {'FAIL' if failed else 'pass'} without a planted bug ({seconds:.0f} s)", flush=True)
        if failed:
            return 2
        for i, bug in enumerate(bugs, 1):
            original = plant(copy, bug)
            try:
                caught, seconds = run_tests(copy, bug.tests, args.timeout)
            finally:
                (copy / bug.file).write_text(original)
            print(f"[{i}/{len(bugs)}] {bug.name:<26} {'caught' if caught else 'MISSED'}  ({seconds:.0f} s)", flush=True)
            if not caught:
                missed.append(bug.name)
    print(f"\n{len(bugs) - len(missed)} of {len(bugs)} planted bugs caught" + (f"; missed: {', '.join(missed)}"
                                                                            if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
