"""Train a classifier on noisily-labelled data with SGD, CDR, AUX, RDI or a combination.

    python train.py --fused                      # defaults: LeNet, mnist-mini, cdr_aux, 40% symmetric
    python train.py --dataset mnist --data-dir ../shared/data/mnist --method cdr --noise-type pairflip
    python train.py --resume --out runs/my-run   # continue an interrupted run exactly
    torchrun --standalone --nproc_per_node=2 train.py --out runs/two   # one run across 2 processes

Writes config.json, metrics.csv (one row per epoch), summary.json, an atomic checkpoint.pt,
evidence.npz (the label evidence), suspects.csv (the training examples most likely mislabelled
first) and, where the flips are known, detection.csv to --out. find_labels.py adds the picture
and a cleaned copy of the labels.
"""


import early_signals  # noqa: F401 - first: a signal while the library loads is one line

try:
    from cdr_fast.training import cli
except KeyboardInterrupt as stop:
    early_signals.exit_while_starting(stop)

if __name__ == "__main__":
    cli.exit_process(cli.script_main(__doc__))
