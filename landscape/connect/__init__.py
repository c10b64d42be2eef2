"""Distribution-based connections between two networks (Anokhin & Yarotsky, ICML 2020).

One traced structure per model (:mod:`landscape.connect.structure`): the permutation groups
of any network it can follow (:func:`trace_groups`: hidden layers of an MLP, channels of
convolutional and residual networks) and, as a special case, the neuron view of an MLP
(:func:`linear_chain`, :func:`neuron_matrix`); :func:`permute` reorders either. On it: the
Linear and Arc paths (:func:`linear_path`, :func:`arc_path`), the connection by optimal
transport of hidden neurons (:func:`match_neurons`, :func:`ot_path`), weight adjustment
(:func:`wa_path`, :func:`multilayer_wa_path`) and WA-ensembles (:func:`wa_ensemble`). A
connection is a :class:`~landscape.connect.result.Path`, a
:class:`~landscape.pointset.PointSet` with its ``t``, stages and labels, evaluated with
:func:`landscape.evaluate`. The methods by name are in :mod:`landscape.connect.registry`
(``name -> function(A, B, model, data, **options) -> Path``), which :func:`compare_connections`
and ``landscape connect`` read; flows are the subpackage :mod:`landscape.connect.flows`.
Git Re-Basin's permutation alignments (:func:`weight_matching`, :func:`activation_matching`;
Ainsworth et al., ICLR 2023) and REPAIR/RESET (:func:`repair_path`, :func:`reset_path`; Jordan
et al., ICLR 2023) are registered beside the paper's methods.

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
from .matching import (
    NEURONS,
    OT_LABELS,
    SOLVERS,
    OTPath,
    assignment,
    match_neurons,
    ot_path,
    transposition_path,
    two_stage_path,
)
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
from .rebasin import activation_matching, aligned_path, channel_correlation, weight_matching
from .repair import repair_path, repair_sites, reset_path, unrepaired_layers
from .report import METHODS, ConnectionReport, compare_connections
from .result import Path

__all__ = [
    "activation_matching",
    "aligned_path",
    "channel_correlation",
    "repair_path",
    "repair_sites",
    "reset_path",
    "unrepaired_layers",
    "weight_matching",
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
    "OT_LABELS",
    "Path",
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
    "two_stage_path",
    "wa_path",
    "weight_adjustment",
]
