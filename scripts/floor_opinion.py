"""A second opinion on the clean images the canary count flags: the network's mistakes, or the
dataset's own doubtful labels?

    python scripts/floor_opinion.py --runs DIR --out results/detection-canaries/second-opinion.md

DIR is a `detection_count.py --canaries` folder that holds its development runs (runs/*_s1 and
runs-floor/). The benchmark counts every label a dataset ships as right, so what a count flags
with no noise added (runs-floor/) is its floor. Here a network that never saw those images judges
them: LeNet, plain SGD, 10 epochs (milestones 6 and 9, train.py's other defaults), trained on the
rest of the training set (57,000 images, labels as shipped) for three seeds, reads the
3,000-image subset through predict.py, and the three are averaged. Per dataset and group of subset
images (those no run flagged; the no-noise floor; the clean images the development runs at 1%
flag), the share it names as another class with probability above 1/2 and its mean probability
of the given label. About 4 minutes on the 2-core VM; nothing here is chosen, it only measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

SEEDS = (1, 2, 3)
EPOCHS, MILESTONES = 10, [6, 9]


def second_opinion(dataset: str, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """(the subset's given labels, the mean over SEEDS of the probabilities that networks trained on
    the rest of the training set give the subset's images)."""
    import predict
    from cdr_fast.data import load_dataset
    from cdr_fast.experiments.grid import Cell, run_cell
    from cdr_fast.training import TrainConfig
    from detection_count import subset_rows

    data = load_dataset(dataset, REPO.parent / "shared" / "data" / dataset)
    y = data.train_labels.numpy()
    keep, _ = subset_rows(y, len(data.test_labels))
    rest = np.setdiff1d(np.arange(y.size), keep)
    npz = work / f"{dataset}-rest.npz"
    if not npz.is_file():
        images = data.train_images.numpy()
        work.mkdir(parents=True, exist_ok=True)
        np.savez(npz, train_images=images[rest], train_labels=y[rest], test_images=images[keep], test_labels=y[keep])
    probs = []
    for seed in SEEDS:
        folder = work / f"{dataset}_s{seed}"
        if not (folder / "summary.json").is_file():
            config = TrainConfig(dataset="npz", data_dir=str(npz), method="sgd", noise_type="none", noise_rate=0.0,
                                 epochs=EPOCHS, milestones=MILESTONES, seed=seed, engine="auto")
            run_cell(Cell(folder.name, config), str(folder))
        if not (folder / "predictions_test.npy").is_file() and predict.main(["--out", str(folder), "--split", "test"]):
            raise SystemExit(f"predict.py failed on {folder}")
        probs.append(np.load(folder / "predictions_test.npy"))
    return y[keep], np.mean(probs, axis=0)


def groups(runs: Path, dataset: str) -> dict[str, set[int]]:
    """The subset rows of the clean images the development runs flag, by group."""
    from canary_report import flagged_clean

    floor = set().union(*(flagged_clean(f) for f in sorted((runs / "runs-floor").glob(f"{dataset}_*_s1"))
                          if (f / "summary.json").is_file()))
    low = [flagged_clean(f) for f in sorted((runs / "runs").glob(f"{dataset}_*01_*_s1")) if (f / "summary.json").is_file()]
    return {"the no-noise floor (both methods)": floor,
            f"flagged clean at 1% (any of {len(low)} runs)": set().union(*low),
            f"flagged clean at 1% (half of the {len(low)} runs or more)":
                {i for i in set().union(*low) if 2 * sum(i in s for s in low) >= len(low)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, required=True, help="a detection_count.py --canaries folder with its runs")
    p.add_argument("--out", type=Path, required=True, help="the markdown file to write")
    p.add_argument("--work", type=Path, help="where the second-opinion runs go (default: RUNS/runs-opinion)")
    args = p.parse_args(argv)
    if not (args.runs / "runs-floor").is_dir():
        p.error(f"--runs {args.runs} holds no runs-floor/: give a detection_count.py --canaries folder")
    work = args.work or args.runs / "runs-opinion"
    lines = ["# A second opinion on the clean images the count flags", "",
             f"Command: `python scripts/floor_opinion.py --runs {args.runs} --out {args.out}` (the development "
             "runs of `scripts/detection_count.py --canaries 0.05`). LeNet trained on the rest of the training set "
             f"(labels as shipped, {EPOCHS} epochs, seeds {', '.join(map(str, SEEDS))} averaged) reads the "
             "3,000-image subset it never saw. 'Another class': its most probable class is not the given label, "
             "with probability above 1/2.", "",
             "| dataset | which images | how many | another class | mean p(given label) |", "|---|---|---|---|---|"]
    agreement = []
    for dataset in ("mnist", "fashion-mnist"):
        given, probs = second_opinion(dataset, work)
        other = (probs.argmax(1) != given) & (probs.max(1) > 0.5)
        fit = probs[np.arange(given.size), given]
        sets = groups(args.runs, dataset)
        flagged = set().union(*sets.values())
        rows = {"never flagged": np.setdiff1d(np.arange(given.size), np.array(sorted(flagged), dtype=int)),
                **{name: np.array(sorted(s), dtype=int) for name, s in sets.items()}}
        agreement.append(f"- {dataset}: the averaged networks' most probable class is the given label for "
                         f"{(probs.argmax(1) == given).mean():.1%} of the subset")
        for name, idx in rows.items():
            share = f"{other[idx].sum()} ({other[idx].mean():.2f})" if idx.size else "0"
            mean_fit = f"{fit[idx].mean():.3f}" if idx.size else "-"
            lines.append(f"| {dataset} | {name} | {idx.size} | {share} | {mean_fit} |")
    text = "\n".join(lines + [""] + agreement) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
