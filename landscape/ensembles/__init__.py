"""Fast ensembles: FGE, snapshot ensembles, SWA and independent ensembles.

Learning-rate schedules (:mod:`.schedules`), the procedures (:func:`fge`, :func:`sse`,
:func:`swa`, :func:`independent`), ensembles at equal training budgets
(:func:`run_at_budget`, Table 1 of the FGE paper), ensemble evaluation through the engine
(:func:`evaluate_ensemble`, :func:`compare_ensembles`), SWA's width line
(:func:`swa_width`) and the resumable record of a training run's members
(:func:`open_ensemble_run`, :func:`save_ensemble_run`, :func:`read_ensemble_run`).
"""

from ..train import fresh_copy
from .budget import METHODS, Run, run_at_budget
from .fge import FGEResult, fge
from .metrics import EnsembleResult, evaluate_ensemble, expected_calibration_error
from .record import open_ensemble_run, read_ensemble_run, save_ensemble_run
from .report import EnsembleComparison, compare_ensembles
from .schedules import cycle_position, fge_lr, sse_lr, swa_epoch_lr, swa_lr
from .sse import Snapshots, independent, sse
from .swa import SWAResult, swa, swa_line, swa_width

__all__ = [
    "METHODS",
    "EnsembleComparison",
    "EnsembleResult",
    "FGEResult",
    "Run",
    "SWAResult",
    "Snapshots",
    "compare_ensembles",
    "cycle_position",
    "evaluate_ensemble",
    "expected_calibration_error",
    "fge",
    "fge_lr",
    "fresh_copy",
    "independent",
    "open_ensemble_run",
    "read_ensemble_run",
    "run_at_budget",
    "save_ensemble_run",
    "sse",
    "sse_lr",
    "swa",
    "swa_epoch_lr",
    "swa_line",
    "swa_lr",
    "swa_width",
]
