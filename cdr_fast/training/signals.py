"""Stop signals for the command lines: SIGTERM and SIGUSR1, as a scheduler sends before it stops a
job, are handled as Ctrl-C is (a ``KeyboardInterrupt`` named after the signal, status 143), and,
while a run trains, ask it to stop after its step instead (it saves and stops: ``stopping``).

The scripts install an equivalent handler as their very first statement, so that a signal during
the imports is one line too; ``install`` takes over once the library is loaded.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
STOPPED_STATUS = 143  # 128 + SIGTERM
INTERRUPTED_STATUS = 130  # 128 + SIGINT

_training: Any = None  # the run in training: a signal then asks it to stop after its step


def _handle(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    if _training is not None and _training.stop_signal is None:
        _training.stop_signal = name
        return
    raise KeyboardInterrupt(name)  # before or after training, or a second signal: at once


def install() -> None:
    for s in SIGNALS:
        signal.signal(s, _handle)


def uninstall() -> None:
    """The defaults again: a late signal (the interpreter's teardown) ends the process quietly."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_DFL)


@contextmanager
def directed_to(run: Any) -> Iterator[None]:
    """While the block runs, a signal sets ``run.stop_signal`` instead of interrupting."""
    global _training
    _training = run
    try:
        yield
    finally:
        _training = None


def signal_name(stop: KeyboardInterrupt) -> str | None:
    """The signal that raised ``stop``, or None for Ctrl-C."""
    name = stop.args[0] if stop.args else None
    return name if name in {s.name for s in SIGNALS} else None


def status(stop: KeyboardInterrupt) -> int:
    return STOPPED_STATUS if signal_name(stop) else INTERRUPTED_STATUS


def stop_word(stop: KeyboardInterrupt) -> str:
    name = signal_name(stop)
    return f"stopped by {name}" if name else "interrupted"
