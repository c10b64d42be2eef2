"""Fast ensembles: FGE, snapshot ensembles, SWA and independent ensembles (in progress:
the learning-rate schedules, FGE, SSE, SWA, independent ensembles and ensemble evaluation so far)."""

from .fge import FGEResult, fge
from .metrics import EnsembleResult, evaluate_ensemble, expected_calibration_error
from .schedules import cycle_position, fge_lr, sse_lr, swa_lr
from .sse import Snapshots, independent, sse
from .swa import SWAResult, swa

__all__ = [
    "EnsembleResult",
    "FGEResult",
    "SWAResult",
    "Snapshots",
    "cycle_position",
    "evaluate_ensemble",
    "expected_calibration_error",
    "fge",
    "fge_lr",
    "independent",
    "sse",
    "sse_lr",
    "swa",
    "swa_lr",
]
