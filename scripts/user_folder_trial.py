"""A user's folder of images with known flips, run through find_labels.py as a user would (issue 28).

    python scripts/user_folder_trial.py --out results/user-folder

Each trial: 2,000 training images (200 a class, drawn with seed 23 from ../shared/data) and 500 test
images written as PNG files into train/<class>/ and test/<class>/, a share of the training images
filed under a wrong class: "pattern" files that share of each class k under k + 1, "symmetric"
under a class drawn from the others. Then, as a user would:

    python find_labels.py --dataset folder --data-dir <folder> --out <run> --method cdr --tau auto --epochs 20

and the flagged set (wrong_labels.csv) and the cleaned copy (cleaned/train/) are judged against the
images' true classes. Nothing is chosen here: the trials only measure. The count before this one
(the whole learned overlap taken out, ``canary_report.whole_overlap_rate``) is measured on the same
runs' evidence, for comparison: the number it flags, and their precision and recall.

Writes <out>/README.md (the table) and <out>/trials.jsonl; the folders and runs go under
<out>/work/ (not committed).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

TRIALS = (("mnist", "pattern", 0.20), ("mnist", "symmetric", 0.20), ("mnist", "symmetric", 0.03),
          ("fashion-mnist", "pattern", 0.20), ("fashion-mnist", "symmetric", 0.20),
          ("fashion-mnist", "symmetric", 0.03))
PER_CLASS, TEST_IMAGES, SEED, EPOCHS = 200, 500, 23, 20


def build(folder: Path, dataset: str, kind: str, rate: float) -> dict[str, int]:
    """The folder tree, each training image under its given class; returns file name -> true class.
    The images are the dataset's own bytes (its IDX files), as a user's PNG files would hold them."""
    from PIL import Image

    from cdr_fast.data.builtin import find_idx_dir, idx_file, read_idx

    idx = find_idx_dir(dataset, REPO.parent / "shared" / "data" / dataset)
    x, y, tx, ty = (read_idx(idx_file(idx, stem)) for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    rng = np.random.default_rng(SEED)
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), PER_CLASS, replace=False) for c in range(10)])
    given = y[pick].copy()
    flip = rng.random(pick.size) < rate
    shift = np.ones(int(flip.sum()), dtype=int) if kind == "pattern" else rng.integers(1, 10, int(flip.sum()))
    given[flip] = (given[flip] + shift) % 10
    truth = {}
    for n, (i, g) in enumerate(zip(pick, given)):
        path = folder / "train" / str(g) / f"{n:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(path)
        truth[path.name] = int(y[i])
    for n, i in enumerate(rng.choice(len(ty), TEST_IMAGES, replace=False)):
        path = folder / "test" / str(ty[i]) / f"t{n:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tx[i]).save(path)
    return truth


def judge(folder: Path, run: Path, truth: dict[str, int]) -> dict:
    """The flagged set and the cleaned copy against the true classes, and the count before on the same run."""
    from canary_report import whole_overlap_rate
    from cdr_fast.detection import BEST, DETECTORS, load_evidence, rank_suspects
    from cdr_fast.detection.count import CANARY_QUANTILE, CANARY_READING

    given = {p.name: int(p.parent.name) for p in (folder / "train").glob("*/*.png")}
    wrong = {f for f, g in given.items() if g != truth[f]}
    rows = list(csv.DictReader(open(run / "wrong_labels.csv")))
    flagged = {Path(r["file"]).name: r for r in rows}
    cleaned = {p.name: int(p.parent.name) for p in (run / "cleaned" / "train").glob("*/*.png")}
    relabelled = [f for f, r in flagged.items() if r["action"] == "relabel"]
    # the count before, on the same evidence and the same ranking
    e = load_evidence(run)
    before = rank_suspects(DETECTORS[BEST].suspects(e), whole_overlap_rate(e, CANARY_READING, CANARY_QUANTILE),
                           e.judged).flagged
    before_files = {Path(e.files[i]).name for i in np.flatnonzero(before)}
    hits, before_hits = len(set(flagged) & wrong), len(before_files & wrong)
    return {"wrong": len(wrong), "flagged": len(flagged), "precision": hits / max(len(flagged), 1),
            "recall": hits / max(len(wrong), 1),
            "relabelled_right": sum(cleaned[f] == truth[f] for f in relabelled),
            "introduced": sum(given[f] == truth[f] for f in relabelled),
            "copy_wrong": sum(cleaned[f] != truth[f] for f in cleaned),
            "before_flagged": len(before_files), "before_precision": before_hits / max(len(before_files), 1),
            "before_recall": before_hits / max(len(wrong), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    out = args.out.resolve()
    results = []
    for done, (dataset, kind, rate) in enumerate(TRIALS, 1):
        name = f"{dataset}_{kind}{round(rate * 100):02d}"
        folder, run = out / "work" / name, out / "work" / f"run_{name}"
        truth_file = out / "work" / f"{name}_truth.json"
        if not truth_file.is_file():
            truth_file.parent.mkdir(parents=True, exist_ok=True)
            truth_file.write_text(json.dumps(build(folder, dataset, kind, rate)))
        truth = json.loads(truth_file.read_text())
        if not (run / "wrong_labels.csv").is_file():
            with open(out / "work" / f"{name}.log", "w") as log:
                subprocess.run([sys.executable, str(REPO / "find_labels.py"), "--dataset", "folder", "--data-dir",
                                str(folder), "--out", str(run), "--method", "cdr", "--tau", "auto", "--epochs",
                                str(EPOCHS), "--no-progress"], check=True, stdout=log, stderr=subprocess.STDOUT)
        results.append({"trial": name, "dataset": dataset, "kind": kind, "rate": rate, **judge(folder, run, truth)})
        print(f"[{done}/{len(TRIALS)}] {name}: {results[-1]}", flush=True)
    (out / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    lines = ["# A user's folder of images with known flips", "",
             f"Command: `python scripts/user_folder_trial.py --out {out.relative_to(REPO) if out.is_relative_to(REPO) else out}`"
             f": {PER_CLASS * 10:,} training images as PNG files in class folders, a share filed under a wrong class, "
             "run through `find_labels.py --method cdr --tau auto` as a user would; nothing is chosen on these trials.",
             "", "| dataset | flips | wrong | flagged | precision | recall | relabelled right | introduced | "
             "copy wrong | the count before: flagged, precision, recall |", "|" + "---|" * 10]
    for r in results:
        lines.append(f"| {r['dataset']} | {r['kind']} {r['rate']:.0%} | {r['wrong']} | {r['flagged']} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r['relabelled_right']} | {r['introduced']} | "
                     f"{r['copy_wrong']} | {r['before_flagged']}, {r['before_precision']:.3f}, "
                     f"{r['before_recall']:.3f} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
