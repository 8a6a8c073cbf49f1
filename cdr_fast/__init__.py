"""cdr-fast: fast noisy-label training for PyTorch (CDR, AUX, RDI and their combinations)."""

from .auxiliary import AuxBias
from .noise import NOISE_TYPES, noisify
from .optim import CDRSGD
from .trained import load_model

__all__ = ["CDRSGD", "AuxBias", "load_model", "noisify", "NOISE_TYPES"]
__version__ = "0.1.0"
