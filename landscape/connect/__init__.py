"""Distribution-based connections between two networks (Anokhin & Yarotsky, ICML 2020).

The neuron view of an MLP (:func:`linear_chain`, :func:`neuron_matrix`, :func:`permute`) and
the channel groups of convolutional and residual networks (:func:`trace_groups`),
the Linear and Arc paths (:func:`linear_path`, :func:`arc_path`) and the connection by optimal
transport of hidden neurons (:func:`match_neurons`, :func:`ot_path`), weight adjustment
(:func:`wa_path`, :func:`multilayer_wa_path`) and WA-ensembles (:func:`wa_ensemble`). Every path is a
:class:`~landscape.pointset.PointSet`, evaluated with :func:`landscape.evaluate`.

Reference: I. Anokhin, D. Yarotsky, "Low-loss connection of weight vectors:
distribution-based approaches", ICML 2020.
"""

from .adjust import (
    WA_FORMS,
    WA_METHODS,
    layer_outputs,
    multilayer_wa_path,
    transitional_network,
    wa_path,
    weight_adjustment,
)
from .ensemble import WAEnsemble, WAEnsembleCurve, wa_ensemble, wa_ensemble_curve
from .graph import Group, Part, UnsupportedModelError, trace_groups
from .matching import NEURONS, SOLVERS, OTPath, assignment, match_neurons, ot_path, transposition_path
from .neurons import (
    compose_permutations,
    hidden_layers,
    identity_permutations,
    invert_permutation,
    linear_chain,
    neuron_matrix,
    permute,
)
from .paths import (
    arc_coefficients,
    arc_path,
    concatenate_paths,
    linear_coefficients,
    linear_path,
    neuron_mean,
)
from .report import METHODS, ConnectionReport, compare_connections

__all__ = [
    "METHODS",
    "Group",
    "Part",
    "UnsupportedModelError",
    "WAEnsemble",
    "WAEnsembleCurve",
    "trace_groups",
    "wa_ensemble",
    "wa_ensemble_curve",
    "NEURONS",
    "SOLVERS",
    "WA_FORMS",
    "WA_METHODS",
    "ConnectionReport",
    "OTPath",
    "arc_coefficients",
    "arc_path",
    "assignment",
    "compare_connections",
    "compose_permutations",
    "concatenate_paths",
    "hidden_layers",
    "identity_permutations",
    "invert_permutation",
    "layer_outputs",
    "linear_chain",
    "linear_coefficients",
    "linear_path",
    "match_neurons",
    "multilayer_wa_path",
    "neuron_matrix",
    "neuron_mean",
    "ot_path",
    "permute",
    "transitional_network",
    "transposition_path",
    "wa_path",
    "weight_adjustment",
]
