"""Model merging and soups as point sets: task vectors, task arithmetic, TIES, DARE, SLERP,
uniform and greedy soups, WiSE-FT.

Linear merges (task arithmetic, WiSE-FT, soups) are coefficients over the checkpoints; TIES and
DARE are coefficients over the base and their merged task vectors (the scale stays linear);
SLERP gives explicit points. :func:`evaluate_merges` runs any of them through the engine into a
resumable ``merge`` file (see ``docs/h5-format.md``); ``landscape merge`` is the command.

Examples
--------
>>> import torch, landscape as ls
>>> from landscape import merge
>>> _ = torch.manual_seed(0)
>>> base, a, b = (ls.Weights.from_module(torch.nn.Linear(3, 2)) for _ in range(3))
>>> merge.task_arithmetic_plane(base, [a, b], [0, 1], [0, 0.5, 1]).shape
(2, 3)
"""

from .grids import (
    METHODS,
    MergeGrid,
    dare_grid,
    slerp_grid,
    soup_grid,
    task_arithmetic_grid,
    task_arithmetic_plane,
    ties_grid,
    wise_ft_grid,
)
from .methods import (
    SLERP_THRESHOLD,
    dare_delta,
    dare_merge,
    slerp_coefficients,
    slerp_merge,
    ties_delta,
    ties_merge,
)
from .run import MergeResult, check_merge_memory, evaluate_merges, merge_attrs
from .soups import GreedySoup, greedy_soup, higher_is_better
from .vectors import task_vector

__all__ = [
    "METHODS",
    "SLERP_THRESHOLD",
    "GreedySoup",
    "MergeGrid",
    "MergeResult",
    "check_merge_memory",
    "dare_delta",
    "dare_grid",
    "dare_merge",
    "evaluate_merges",
    "greedy_soup",
    "higher_is_better",
    "merge_attrs",
    "slerp_coefficients",
    "slerp_grid",
    "slerp_merge",
    "soup_grid",
    "task_arithmetic_grid",
    "task_arithmetic_plane",
    "task_vector",
    "ties_delta",
    "ties_grid",
    "ties_merge",
    "wise_ft_grid",
]
