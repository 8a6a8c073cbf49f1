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

# From the first moment: a signal during the imports is one line too, never a traceback (the
# library's handler, cdr_fast.training.signals, takes over once it is loaded).
import signal
import sys


def _stop_at_once(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


for _signal in (signal.SIGTERM, signal.SIGUSR1):
    signal.signal(_signal, _stop_at_once)

try:
    from cdr_fast.training import cli
except KeyboardInterrupt as stop:
    print(f"\n{'stopped by ' + stop.args[0] if stop.args else 'interrupted'} while starting: nothing was written",
          file=sys.stderr)
    sys.exit(143 if stop.args else 130)

if __name__ == "__main__":
    cli.exit_process(cli.script_main(__doc__))
