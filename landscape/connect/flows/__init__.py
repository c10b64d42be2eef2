"""Flow and Bijection connections between two networks (Anokhin & Yarotsky, ICML 2020).

A network's hidden neurons :math:`\\theta_i` are treated as samples of one distribution
:math:`p`. If a bijection :math:`\\nu` maps :math:`p` to :math:`\\mathcal N(0, I)`, the path

.. math::

    \\psi(t) = \\nu^{-1}\\bigl[\\cos(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^A)
    + \\sin(\\tfrac{\\pi t}{2})\\,\\nu(\\theta^B)\\bigr],

applied to every neuron :math:`i` separately, keeps the neurons distributed as :math:`p` at
every ``t`` and runs from :math:`\\theta^A` (``t = 0``) to :math:`\\theta^B` (``t = 1``).

* **Flow connection**: :math:`\\nu` is a normalizing flow (:class:`RealNVP` or :class:`IAF`)
  fitted by maximum likelihood to the neurons pooled over many trained networks
  (:func:`fit_flow`, :func:`fit_flows_for`).
* **Bijection connection**: starting from those flows, :math:`\\nu_W` is trained further to
  minimise the loss along the paths between pairs of trained networks (:func:`fit_bijection`),

  .. math::

      l(W) = \\mathbb E_{t \\sim U(0, 1),\\; A \\ne B}\\; L\\bigl(\\psi_W(t, \\Theta^A, \\Theta^B)\\bigr).

Either result is a *global connection model*: once trained it connects any pair of minima
of the same architecture (:func:`flow_path`); :func:`save_connection_model` and
:func:`load_connection_model` store and restore it.

Deep and convolutional networks: a neuron of layer 2 reads the channels of layer 1, which
every network numbers differently, and a few networks give too few neurons for a flow of
dimension ~75. :func:`align_pool` reorders the pool to a template, ``base="gaussian"`` puts
a shrunk Gaussian (:func:`ledoit_wolf`) in front of identity-initialised flow layers,
``holdout`` stops the fit early on held-out networks, and :func:`aligned_flow_path` mixes
``A`` with ``B`` matched to ``A`` in the template's frame, then reaches ``B`` by the OT
connection's swaps.

Which tensors make up a neuron is read from the model's traced permutation groups
(:func:`~landscape.connect.graph.trace_groups`); a :class:`NeuronGroup` is the flows' view of
one (the chosen tensors, each sliced along one axis, in the order of the neuron vector's
coordinates), so convolution filters with their BatchNorm parameters work the same way as
MLP neurons. :func:`flow_groups` builds the groups of any supported network,
:func:`mlp_groups` those of a plain MLP.

The package's modules, by concern:

* :mod:`.models`: the flows (:class:`RealNVP`, :class:`IAF`, their base class ``Flow``);
* :mod:`.groups`: :class:`NeuronGroup`, :func:`flow_groups`, :func:`mlp_groups`;
* :mod:`.fitting`: :func:`ledoit_wolf`, :func:`fit_flow`, :func:`fit_flows_for`,
  :func:`fit_bijection`, :func:`align_pool`;
* :mod:`.paths`: :func:`flow_path_tensors`, :func:`flow_path`, :func:`aligned_flow_path`
  (both return a :class:`~landscape.connect.result.Path`, method ``"flow"``);
* :mod:`.storage`: :func:`save_connection_model`, :func:`load_connection_model`;
* :mod:`.checks`: the argument checks they share.

Reference: I. Anokhin, D. Yarotsky, "Low-loss connection of weight vectors:
distribution-based approaches", ICML 2020. Flows: L. Dinh, J. Sohl-Dickstein, S. Bengio,
"Density estimation using Real NVP", ICLR 2017; D. P. Kingma et al., "Improved variational
inference with inverse autoregressive flow", NeurIPS 2016; M. Germain et al., "MADE: masked
autoencoder for distribution estimation", ICML 2015.
"""

from .fitting import BASES, align_pool, fit_bijection, fit_flow, fit_flows_for, ledoit_wolf
from .groups import NeuronGroup, flow_groups, mlp_groups
from .models import FLOW_KINDS, IAF, RealNVP
from .paths import FLOW_LABELS, aligned_flow_path, flow_path, flow_path_tensors
from .storage import load_connection_model, save_connection_model

__all__ = [
    "BASES",
    "FLOW_KINDS",
    "FLOW_LABELS",
    "IAF",
    "NeuronGroup",
    "RealNVP",
    "align_pool",
    "aligned_flow_path",
    "fit_bijection",
    "fit_flow",
    "fit_flows_for",
    "flow_groups",
    "flow_path",
    "flow_path_tensors",
    "ledoit_wolf",
    "load_connection_model",
    "mlp_groups",
    "save_connection_model",
]
