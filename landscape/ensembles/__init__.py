"""Fast ensembles: FGE, snapshot ensembles, SWA and independent ensembles (in progress:
the learning-rate schedules and FGE's snapshot collection so far)."""

from .fge import FGEResult, fge
from .schedules import cycle_position, fge_lr, sse_lr, swa_lr

__all__ = ["FGEResult", "cycle_position", "fge", "fge_lr", "sse_lr", "swa_lr"]
