"""The run protocol: settings (``config``), the noisy data split (``split``), the plain loop
(``loop``) and its observers (``observers``: ``metrics``, ``evidence_keeper``, ``detection_log``,
``checkpoint``, ``progress``, ``tau_auto``), the run folder (``run_folder``) and the command line
(``cli``)."""

from .config import LOSSES, METHODS, TrainConfig, resolve_device
from .loop import Trainer, TrainingDiverged
from .metrics import format_epoch
from .observers import Observer, Step
from .run_folder import RunFolder
from .split import NoisySplit, prepare_data
from .stopping import RunStopped

__all__ = ["LOSSES", "METHODS", "NoisySplit", "Observer", "RunFolder", "RunStopped", "Step", "TrainConfig", "Trainer",
           "TrainingDiverged", "format_epoch", "prepare_data", "resolve_device"]
