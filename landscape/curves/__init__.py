"""Low-loss curves between two checkpoints (mode connectivity, Garipov et al. 2018).

``Curve`` (Bezier curves and polygonal chains with any number of bends), their coefficient
functions, ``fit_curve`` (train the bends), ``evaluate_curve`` (loss and accuracy along t
against the straight line, the barrier) and ``curve_plane`` (the plane through the
endpoints and the middle bend, with the curve projected onto it); ``load_curve`` reads our curve
files and dnn-mode-connectivity's curve checkpoints (``import_dmc_curve``).
"""

from .coefficients import (
    bezier_coefficients,
    bezier_derivative_coefficients,
    polychain_coefficients,
    polychain_derivative_coefficients,
)
from .curve import CURVE_KINDS, Curve
from .dmc import import_dmc_curve
from .files import CURVE_FORMATS, load_curve
from .fit import (
    LR_UPDATES,
    SCHEDULES,
    WEIGHT_DECAY_ON,
    FitResult,
    curve_loss,
    curve_weight_decay,
    fit_curve,
    learning_rate_factor,
)
from .profile import CurveProfile, barrier, curve_plane, evaluate_curve, path_statistics, segment_lengths

__all__ = [
    "CURVE_FORMATS",
    "CURVE_KINDS",
    "LR_UPDATES",
    "SCHEDULES",
    "WEIGHT_DECAY_ON",
    "Curve",
    "CurveProfile",
    "FitResult",
    "barrier",
    "bezier_coefficients",
    "bezier_derivative_coefficients",
    "curve_loss",
    "curve_plane",
    "curve_weight_decay",
    "evaluate_curve",
    "fit_curve",
    "import_dmc_curve",
    "learning_rate_factor",
    "load_curve",
    "path_statistics",
    "polychain_coefficients",
    "polychain_derivative_coefficients",
    "segment_lengths",
]
