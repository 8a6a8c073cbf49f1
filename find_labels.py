"""Find the wrong labels in a dataset: train on it (any train.py flag), then write the suspects,
their picture and a cleaned copy of the labels into the run folder.

    python find_labels.py --dataset folder --data-dir photos/ --out runs/photos
    python find_labels.py --dataset npz --data-dir data.npz --out runs/mine --fix drop
    python find_labels.py --dataset mnist --data-dir ../shared/data/mnist --noise-type pairflip --out runs/pf
    python find_labels.py --out runs/photos --top-images 96     # a finished run: the report again, no training

Writes, besides the run's own files (train.py --help):
    wrong_labels.csv   the flagged examples, most suspect first: index (and file, for a folder),
                       given and suggested label, score
    wrong_labels.png   the top suspects' images, captioned given -> suggested
    cleaned/           (a folder dataset) the same tree, each image linked into its cleaned class
    cleaned.npz        (an npz dataset) the same arrays with the cleaned train_labels
    cleaned_labels.npz (a built-in dataset) labels and keep, over its training set
Ready to train on: python train.py --dataset folder --data-dir runs/photos/cleaned ...

How many are flagged: the judged examples times the noise rate estimated from the run's evidence
(never --tau), or --flag RATE. The run plants canaries (--canaries, default 0.05: that share of the
training split trained on a wrong label drawn at random) and counts how many examples score like
them (cdr_fast/detection/count.py); canaries are never flagged and keep their labels in the
cleaned copy. wrong_labels.csv's action column says what the cleaned copy did with each.
Every other example is scored, the validation split (--val-fraction) too, by the trained network;
the files say which were trained on. README: "Finding wrong labels".
"""

import sys

import early_signals  # first: a signal while the library loads is one line

try:
    import argparse
    from pathlib import Path

    from cdr_fast.data import DatasetError
    from cdr_fast.detection import BEST, DETECTORS
    from cdr_fast.detection.count import MIN_CANARIES
    from cdr_fast.training import cli, signals
    from cdr_fast.training.flags import INTEGER, NUMBER, HelpFormatter
    from cdr_fast.wrong_labels import FIXES, label_report
except KeyboardInterrupt as stop:
    early_signals.exit_while_starting(stop)


CANARIES = 0.05  # the share of planted flips a detection run trains with, unless --canaries says otherwise


def own_flags(add_help: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="find_labels.py", description=__doc__, formatter_class=HelpFormatter,
                                add_help=add_help,
                                usage="python find_labels.py [train.py flags] --out DIR [--top-images N] [--fix ...]")
    p.add_argument("--out", type=Path, required=True,
                   help="the run folder: trained into, unless it holds a finished run")
    p.add_argument("--top-images", type=INTEGER, default=48, help="suspects shown in wrong_labels.png")
    p.add_argument("--fix", choices=FIXES, default="relabel",
                   help="the cleaned copy: relabel a flagged example where the evidence is sure of its suggestion "
                        "(the most probable class, above 1/2, in the mean and the recent reading; with canaries, "
                        "as sure as of a canary's true class, and the given label fitted no better than a "
                        "canary's planted one) and keep the rest for review; or drop every flagged example")
    p.add_argument("--flag", type=NUMBER, default=None, metavar="RATE",
                   help="flag this share of the scored examples (default: the run's estimated noise rate)")
    p.add_argument("--detector", choices=tuple(DETECTORS), default=BEST, help="the detector that ranks the suspects")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def report(args: argparse.Namespace) -> int:
    """The report of the finished run in ``args.out``: its files, and one line that sums it up."""
    try:
        progress = not args.no_progress and sys.stderr.isatty()  # a redirected log gets no bars
        found = label_report(args.out, args.top_images, args.fix, progress=progress, flag_rate=args.flag,
                             detector=args.detector)
    except (ValueError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # every report file is written atomically: what stood before still does
        print(f"error: cannot write the report: {err.filename or args.out} ({err.strerror or err}); the run's own "
              "files are intact", file=sys.stderr)
        return 1
    checked = ""
    if found.precision is not None:
        checked = (f"; against the known clean labels: {found.precision:.1%} of them are wrong, and "
                   f"{found.correction_accuracy:.1%} of those get the right suggestion")
    share = "asked for" if args.flag is not None else "the noise rate estimated from the evidence"
    if found.canaries and args.flag is None:
        share += (f", measured against {found.canaries} planted canaries, whose labels are kept"
                  if found.canaries >= MIN_CANARIES else
                  f"; {found.canaries} canaries are too few to count by, so by confident learning")
    fixed = ("; the cleaned copy drops them" if args.fix == "drop" else
             f"; the cleaned copy relabels the {found.relabelled} the evidence is sure of and keeps "
             f"{found.flagged - found.relabelled} for review")
    print(f"{found.flagged} suspects among {found.scored} examples ({found.rate:.1%}, {share}){checked}{fixed}")
    for path in found.files:
        print(f"  {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        own_flags(add_help=False).print_help()
        print("\ntraining flags (as train.py takes them):")
        cli.build_parser().print_help()
        return 0
    args, training_argv = own_flags(add_help=True).parse_known_args(argv)
    if not (args.out / "summary.json").is_file():
        extra = ["--no-progress"] if args.no_progress else []
        if not any(a == "--canaries" or a.startswith("--canaries=") for a in training_argv):
            extra += ["--canaries", str(CANARIES)]  # the count's reference (cdr_fast/detection/canaries.py)
        status = cli.main([*training_argv, *extra, "--out", str(args.out), "--auto-resume"])  # train(...)
        if status != 0:
            return status
    elif training_argv:
        print(f"note: {args.out} holds a finished run; the training flags ({' '.join(training_argv)}) are ignored",
              file=sys.stderr)
    return report(args)  # ... then report(...)


def script_main(argv: list[str] | None = None) -> int:
    """The script's whole life after its imports; returns the exit status."""
    signals.install()
    try:
        return main(argv)
    except KeyboardInterrupt as stop:  # a signal during the report, or between the run's handled stretches
        print(f"\n{signals.stop_word(stop)}: the run's folder holds what it had saved; the same command writes the "
              "report again", file=sys.stderr)
        return signals.status(stop)
    finally:
        signals.uninstall()


if __name__ == "__main__":
    cli.exit_process(script_main())
