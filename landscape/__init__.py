"""landscape: loss surfaces, mode connectivity and ensembles of saved checkpoints.

``import landscape as ls`` gives the main types and functions; see ``docs/api.md``.
"""

from . import connect, curves, directions, distributed, io, metrics, models, ops, sharpness
from ._version import __version__
from .bn import BN_MODES
from .data import DataError, TensorData, load_data
from .directions import Plane
from .evaluate import PATHS, PRECISIONS, EvalResult, MemoryBudgetError, evaluate, evaluate_points
from .io import ResultExistsError, ResultFileError, create_result, open_result
from .metrics import MetricError, NonFiniteWarning
from .models import ModelSpecError, build_model
from .pointset import PointSet
from .surface import SurfaceResult, compute_surface, parse_range
from .weights import CheckpointError, Layout, Weights, load_checkpoint, load_weights, save_weights

__all__ = [
    "__version__",
    "BN_MODES",
    "PATHS",
    "PRECISIONS",
    "CheckpointError",
    "DataError",
    "EvalResult",
    "Layout",
    "MemoryBudgetError",
    "MetricError",
    "ModelSpecError",
    "NonFiniteWarning",
    "Plane",
    "PointSet",
    "ResultExistsError",
    "ResultFileError",
    "SurfaceResult",
    "TensorData",
    "Weights",
    "build_model",
    "compute_surface",
    "connect",
    "directions",
    "distributed",
    "create_result",
    "curves",
    "evaluate",
    "evaluate_points",
    "io",
    "load_checkpoint",
    "load_data",
    "load_weights",
    "metrics",
    "models",
    "open_result",
    "parse_range",
    "ops",
    "save_weights",
    "sharpness",
]
