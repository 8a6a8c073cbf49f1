"""The run protocol: settings (``config``), the noisy data split (``split``), the loop (``loop``)
and the run folder that holds a run's files and decides whether it starts or resumes
(``run_folder``)."""

from .config import LOSSES, METHODS, TrainConfig, resolve_device
from .loop import RunStopped, Trainer, TrainingDiverged
from .metrics import format_epoch
from .run_folder import RunFolder
from .split import NoisySplit, prepare_data

__all__ = ["LOSSES", "METHODS", "NoisySplit", "RunFolder", "RunStopped", "TrainConfig", "Trainer", "TrainingDiverged",
           "format_epoch", "prepare_data", "resolve_device"]
