"""--tau auto's estimate with canaries in its warm-up, against the anchor points alone, on the
3,000-example cells of results/detection-canaries (issue 28: at 1-5% noise the anchors fell to a
third of the truth and less).

    python scripts/tau_canaries.py --out results/tau-canaries            # both halves, then the report
    python scripts/tau_canaries.py --out results/tau-canaries --report-only

Per cell (MNIST and Fashion-MNIST; symmetric, pairflip and confusion-derived noise at 1-40%): the
run's warm-up (1,500 steps of plain SGD, 5 snapshots) on the given labels, and the anchor-point
estimate (what --tau auto did before); then the same warm-up on labels with 5% canaries, and the
canary ratio of small loss at several thresholds (the score a share q of the canaries reach), and
the anchors on that warm-up with the canaries' flips undone. Seed 1 is the development half, on
which the threshold is chosen; seed 3 the held-out half. Writes cells.jsonl and README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

KINDS = ("symmetric", "pairflip", "confusion")
RATES = (0.01, 0.03, 0.05, 0.10, 0.20, 0.40)
QUANTILES = (0.5, 0.6, 0.7, 0.8, 0.9)
SEEDS = {1: "development", 3: "held-out"}


def cell(dataset: str, kind: str, rate: float, seed: int, data_dir: Path) -> dict:
    """Every estimate of one cell."""
    import numpy as np
    import torch

    from cdr_fast.detection.canaries import canary_ratio, plant_canaries
    from cdr_fast.estimate import WARMUP_CANARIES, estimate_noise, estimate_with_canaries, warm_up_probabilities
    from cdr_fast.models import build_model
    from cdr_fast.training.advice import fitted_warmup
    from cdr_fast.training.split import prepare_data
    from detection_count import cell_config

    cfg = cell_config(data_dir, kind, rate, "cdr_aux", seed)
    d = prepare_data(cfg, torch.device("cpu"))
    n, m = d.train_y.numel(), d.num_classes
    steps, _ = fitted_warmup(cfg.tau_warmup_steps, cfg.batch_size, n)
    out = {"dataset": dataset, "kind": kind, "rate": rate, "seed": seed,
           "realised": float((d.train_y != d.train_clean).double().mean())}
    for share in (0.0, WARMUP_CANARIES):
        labels, canaries = plant_canaries(d.train_y, torch.arange(n), share, m, cfg.seed)  # as tau_auto.py
        torch.manual_seed(cfg.seed + 1)
        model = build_model("lenet", m, tuple(d.train_x.shape[1:]))
        probs = warm_up_probabilities(model, d.train_x, labels, steps=steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                      momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=cfg.seed)
        if not share:
            out["anchors"] = estimate_noise(probs, labels).rate
            continue
        score = (1.0 - probs.double()[torch.arange(n), labels]).numpy()
        planted = np.zeros(n, dtype=bool)
        planted[canaries.numpy()] = True
        for q in QUANTILES:
            out[f"canary_{q:g}"] = canary_ratio(score[planted], score[~planted], q)
        estimate = estimate_with_canaries(probs, labels, canaries, share)
        priors = torch.bincount(d.train_y, minlength=m).double() / n
        undone = 1.0 - float((priors * estimate.transition.double().diagonal()).sum())
        out["anchors_undone"] = min(max(undone, 0.0), 1.0)
        out["tau_auto"] = estimate.rate  # what --tau auto now sets
    return out


def within(estimate: float, truth: float) -> bool:
    """The count's goal, as a rate: |estimate - truth| <= 0.15 truth + 0.002."""
    return abs(estimate - truth) <= 0.15 * truth + 0.002


def report(out: Path) -> str:
    from benchmark_cells import write_readme
    from cdr_fast.estimate import WARMUP_QUANTILE

    rows = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    names = ["anchors", "anchors_undone", *(f"canary_{q:g}" for q in QUANTILES), "tau_auto"]
    dev, held = [r for r in rows if r["seed"] == 1], [r for r in rows if r["seed"] == 3]

    def score(rs, name):
        return sum(within(r[name], r["realised"]) for r in rs), -sum(abs(r[name] - r["realised"]) for r in rs)

    chosen = max((n for n in names if n.startswith("canary")), key=lambda n: score(dev, n))
    lines = ["# --tau auto with canaries in its warm-up: development and held-out halves", "",
             f"Command: `python scripts/tau_canaries.py --out {out.relative_to(REPO)}` ({len(rows)} cells). "
             "Within the goal: |estimate - realised| <= 0.15 realised + 0.002.", "",
             "## Development half (seed 1)", ""]
    for name in names:
        k, err = score(dev, name)
        lines.append(f"- `{name}`: {k} of {len(dev)} within the goal, mean absolute error {-err / max(len(dev), 1):.4f}")
    lines += [f"- **chosen: `{chosen}`**" + ("" if chosen == f"canary_{WARMUP_QUANTILE:g}" else
                                             f" (**the library uses canary_{WARMUP_QUANTILE:g}: update "
                                             "WARMUP_QUANTILE in cdr_fast/estimate.py**)"),
              "- below half the realised rate: " + ", ".join(
                  f"`{n}` {sum(r[n] < 0.5 * r['realised'] for r in dev)}" for n in ("anchors", chosen, "tau_auto")),
              "- `tau_auto`, what `--tau auto` sets: the larger of the chosen canary ratio and `anchors_undone`, "
              "since the canary ratio misses flips the warm-up learns as a class-level pattern (pairflip at 20-40%), "
              "and for CDR a tau far too low gives the memorisation back", ""]
    if held:
        by = defaultdict(lambda: [0, 0, 0, 0])
        for r in held:
            key = "1-5%" if r["rate"] <= 0.05 else "10-40%"
            by[key][0] += within(r["tau_auto"], r["realised"])
            by[key][1] += within(r["anchors"], r["realised"])
            by[key][2] += within(r[chosen], r["realised"])
            by[key][3] += 1
        total = [sum(v[i] for v in by.values()) for i in range(4)]
        low = {n: sum(r[n] < 0.5 * r["realised"] for r in held) for n in ("tau_auto", "anchors", chosen)}
        lines += ["## Held-out half (seed 3), reported once", "",
                  f"`--tau auto` (`tau_auto`) within the goal in **{total[0]} of {total[3]}** cells, the anchor points "
                  f"alone (before) in {total[1]}, `{chosen}` alone in {total[2]}; "
                  + "; ".join(f"at {k}: {v[0]}, {v[1]} and {v[2]} of {v[3]}" for k, v in sorted(by.items()))
                  + f". Below half the realised rate: {low['tau_auto']}, {low['anchors']} and {low[chosen]} cells.", "",
                  "| dataset | noise | rate | realised | anchors (before) | canaries | --tau auto |",
                  "|---|---|---|---|---|---|---|"]
        for r in sorted(held, key=lambda r: (r["dataset"], r["kind"], r["rate"])):
            lines.append(f"| {r['dataset']} | {r['kind']} | {r['rate']:.0%} | {r['realised']:.3f} | {r['anchors']:.3f} | "
                         f"{r[chosen]:.3f} | {r['tau_auto']:.3f} |")
    return write_readme(out, lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        import torch

        from detection_count import subset

        torch.set_num_threads(1)
        done = set()
        path = out / "cells.jsonl"
        if path.is_file():
            done = {(r["dataset"], r["kind"], r["rate"], r["seed"]) for r in map(json.loads, path.read_text().splitlines())}
        for seed in SEEDS:
            for dataset in ("mnist", "fashion-mnist"):
                data = subset(dataset, REPO / "results" / "detection-canaries")
                for kind in KINDS:
                    for rate in RATES:
                        if (dataset, kind, rate, seed) in done:
                            continue
                        with open(path, "a") as f:
                            f.write(json.dumps(cell(dataset, kind, rate, seed, data)) + "\n")
                        print(f"{dataset} {kind} {rate:.0%} seed {seed}", flush=True)
    print(report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
