"""The scripts' first import (train.py, find_labels.py, predict.py): from the first moment, a
SIGTERM or SIGUSR1 (or Ctrl-C) while the library loads is one line, never a traceback. Loading
cdr_fast loads torch, so this cannot live in the package; the library's own handler
(``cdr_fast.training.signals``) takes over once it is loaded."""

import signal
import sys
from typing import NoReturn


def _stop_at_once(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


for _signal in (signal.SIGTERM, signal.SIGUSR1):
    signal.signal(_signal, _stop_at_once)


def exit_while_starting(stop: KeyboardInterrupt) -> NoReturn:
    """One line, and the status of the signal (143) or of Ctrl-C (130)."""
    print(f"\n{'stopped by ' + stop.args[0] if stop.args else 'interrupted'} while starting: nothing was written",
          file=sys.stderr)
    sys.exit(143 if stop.args else 130)
