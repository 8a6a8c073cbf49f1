"""Predict with a trained run's network: each example's probabilities and predicted class.

    python predict.py --out runs/mine                                   # the run's own dataset, test split
    python predict.py --out runs/mine --dataset npz --data-dir new.npz --split train
    python predict.py --out runs/photos --dataset folder --data-dir more_photos/

Writes into --out (or --to): predictions_<split>.csv (index, file for a folder dataset, predicted
label and class, its probability, and every class's probability for up to 100 classes) and
predictions_<split>.npy (the n x classes probabilities, float32). The inputs are normalised as the
run normalised its own (its config.json keeps the statistics) and resized to its --image-size.
In Python: ``cdr_fast.load_model(run_folder)`` gives the network itself.
"""

import sys

import early_signals  # first: a signal while the library loads is one line

try:
    import argparse
    import io
    from pathlib import Path

    import numpy as np

    from cdr_fast import load_model
    from cdr_fast.atomic_io import write_bytes_atomic, write_csv_atomic
    from cdr_fast.data import DATASETS, DatasetError, load_dataset
    from cdr_fast.trained import predict_probabilities, renormalised, run_config
    from cdr_fast.training import signals
    from cdr_fast.training.config import default_workers, memory_budget, resolve_device
    from cdr_fast.training.flags import HelpFormatter
except KeyboardInterrupt as stop:
    early_signals.exit_while_starting(stop)

SPLITS = ("test", "train")
MAX_CSV_CLASSES = 100


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the run folder whose network predicts")
    p.add_argument("--dataset", choices=tuple(DATASETS), default=None, help="the data (default: the run's own)")
    p.add_argument("--data-dir", default=None, help="its files, as train.py takes them (default: the run's own)")
    p.add_argument("--split", choices=SPLITS, default="test", help="which of the dataset's splits to predict")
    p.add_argument("--to", type=Path, default=None, help="where the predictions go (default: --out)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = run_config(args.out)
        model = load_model(args.out, args.device)
        dataset = args.dataset or config["dataset"]
        data_dir = args.data_dir if args.dataset or args.data_dir else config.get("data_dir")
        device = resolve_device(args.device)  # a folder too large for the device is streamed, as train.py does
        data = load_dataset(dataset, data_dir, config.get("image_size"), stream=None,
                            memory_budget=memory_budget(device, None), workers=default_workers())
        if data.streamed is not None:
            print(f"streaming the images from their files: {data.streamed}", file=sys.stderr)
        images = data.test_images if args.split == "test" else data.train_images
        if tuple(images.shape[1:]) != tuple(config["input_shape"]):
            raise ValueError(f"{dataset} examples are {tuple(images.shape[1:])}, but the run's network takes "
                             f"{tuple(config['input_shape'])}")
        norm = config.get("normalisation")
        probs = predict_probabilities(model, renormalised(images, data.normalisation,
                                                           tuple(norm) if norm is not None else None))
    except (ValueError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = config.get("class_names")
    predicted = probs.argmax(1) if probs.size else np.zeros(0, dtype=np.int64)
    rows = []
    for i, (label, p) in enumerate(zip(predicted, probs)):
        row = {"index": i}
        if args.split == "train" and data.train_files is not None:
            row["file"] = data.train_files[i]
        row.update(predicted_label=int(label), predicted_class=names[label] if names else str(int(label)),
                   probability=round(float(p[label]), 6))
        if probs.shape[1] <= MAX_CSV_CLASSES:
            row.update({f"p_{names[j] if names else j}": round(float(v), 6) for j, v in enumerate(p)})
        rows.append(row)
    to = args.to or args.out
    try:
        to.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(to / f"predictions_{args.split}.csv", rows)
        buf = io.BytesIO()
        np.save(buf, probs.astype(np.float32))
        write_bytes_atomic(to / f"predictions_{args.split}.npy", buf.getvalue())
    except OSError as err:
        print(f"error: cannot write the predictions: {err.filename or to} ({err.strerror or err})", file=sys.stderr)
        return 1
    accuracy = ""
    if len(rows):
        labels = (data.test_labels if args.split == "test" else data.train_labels).numpy()
        accuracy = f"; {100 * float((predicted == labels).mean()):.2f}% agree with the dataset's labels"
    print(f"{len(rows)} {args.split} examples of {dataset} predicted{accuracy}: {to / f'predictions_{args.split}.csv'}, "
          f"{to / f'predictions_{args.split}.npy'}")
    return 0


if __name__ == "__main__":
    try:
        status = main()
    except KeyboardInterrupt as stop:
        print(f"\n{signals.stop_word(stop)}: no predictions were written", file=sys.stderr)
        status = signals.status(stop)
    sys.exit(status)
