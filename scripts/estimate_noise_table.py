"""How good is --tau auto? The anchor-point estimate against the realised noise rate, per noise
type and rate, with the warm-up that train.py --tau auto runs.

    python scripts/estimate_noise_table.py --dataset mnist --data-dir ../shared/data/mnist \\
        --out results/noise-estimates

Writes estimates.csv and estimates.md (one row per dataset, noise type and rate) to --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


from cdr_fast.atomic_io import write_bytes_atomic, write_csv_atomic
from cdr_fast.data import BUILT_IN
from cdr_fast.noise import NOISE_TYPES
from cdr_fast.training.advice import fitted_warmup
from cdr_fast.training import TrainConfig, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=BUILT_IN, default="mnist-mini")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--noise-types", nargs="+", choices=NOISE_TYPES,
                        default=["symmetric", "pairflip", "asymmetric", "instance"])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.4, 0.7])
    parser.add_argument("--warmup-steps", type=int, default=TrainConfig.tau_warmup_steps)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for noise in args.noise_types:
        for rate in args.rates:
            start = time.perf_counter()
            config = TrainConfig(method="cdr", tau="auto", tau_warmup_steps=args.warmup_steps, dataset=args.dataset,
                                 data_dir=args.data_dir, noise_type=noise, noise_rate=rate, seed=args.seed)
            trainer = Trainer(config, None, progress=False, log=lambda s: None)
            steps, _ = fitted_warmup(args.warmup_steps, config.batch_size, trainer.data.train_x.shape[0])
            estimate = trainer.tau.estimate_noise(trainer, steps)  # what --tau auto does before epoch 1
            realised = trainer.data.realised_rate
            rows.append({"dataset": args.dataset, "noise_type": noise, "noise_rate": rate,
                         "realised_rate": round(realised, 4), "estimated_rate": round(estimate.rate, 4),
                         "error": round(estimate.rate - realised, 4), "warmup_steps": args.warmup_steps,
                         "seconds": round(time.perf_counter() - start, 1)})
            print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(args.out / f"estimates_{args.dataset}.csv", rows)
    lines = ["| noise | rate | realised | estimated | error |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['noise_type']} | {r['noise_rate']:.0%} | {r['realised_rate']:.3f} | {r['estimated_rate']:.3f} | "
              f"{r['error']:+.3f} |" for r in rows]
    write_bytes_atomic(args.out / f"estimates_{args.dataset}.md", ("\n".join(lines) + "\n").encode())


if __name__ == "__main__":
    main()
