"""Fast ensembles: FGE, snapshot ensembles, SWA and independent ensembles (in progress:
the learning-rate schedules so far)."""

from .schedules import cycle_position, fge_lr, sse_lr, swa_lr

__all__ = ["cycle_position", "fge_lr", "sse_lr", "swa_lr"]
