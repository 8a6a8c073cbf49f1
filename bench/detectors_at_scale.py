"""Every label detector on synthetic probabilities of ImageNet's width: time and memory above its input.

    python bench/detectors_at_scale.py --rows 200000 --classes 1000           # the issue's 200k x 1,000
    python bench/detectors_at_scale.py --rows 1281167 --classes 1000          # ImageNet's 1.28M x 1,000

The probabilities are float32 (as evidence.npz stores them): the softmax of random logits with the
given label's logit raised, 20% of the labels then moved to a random other class. Each detector
reads the one array as every reading (final, mean, recent). Memory above the input is
tracemalloc's peak during the call (numpy reports its allocations to it), less what was allocated
before. The anchor users compare with, cleanlab 2.9's find_label_issues, took 4.95 s and 0.15 GB
above its input for 200,000 x 1,000 float32 on the issue's machine (not run here: AGPL).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cdr_fast.detection import DETECTORS, Evidence  # noqa: E402
from cdr_fast.detection.scores import margin, row_blocks  # noqa: E402


def synthetic(rows: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, rows)
    probs = np.empty((rows, classes), dtype=np.float32)
    for b in row_blocks(rows, classes):  # block by block, so that making the input costs no more than it
        logits = rng.standard_normal((b.stop - b.start, classes), dtype=np.float32)
        logits[np.arange(logits.shape[0]), true[b]] += 4.0
        logits -= logits.max(1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(1, keepdims=True)
        probs[b] = logits
    given = true.copy()
    flip = rng.random(rows) < 0.2
    given[flip] = (true[flip] + rng.integers(1, classes, int(flip.sum()))) % classes
    return probs, given


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    probs, given = synthetic(args.rows, args.classes, args.seed)
    gb = probs.nbytes / 1e9
    print(f"{args.rows} x {args.classes} float32 probabilities: {gb:.2f} GB")
    evidence = Evidence(index=np.arange(args.rows), given_label=given, probs=probs, probs_mean=probs,
                        margin_mean=margin(probs, given), probs_ema=probs, epochs=1)
    print("| detector | seconds | GB above the input |")
    print("|---|---:|---:|")
    for name, detector in DETECTORS.items():
        if not detector.applies_to(evidence):
            continue
        tracemalloc.start()
        start = time.perf_counter()
        detector.suspects(evidence)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"| {detector.label} | {seconds:.2f} | {peak / 1e9:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
