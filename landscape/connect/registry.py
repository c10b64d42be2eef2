"""The connection methods by name: ``name -> function(A, B, model, data, **options) -> Path``.

:func:`~landscape.connect.compare_connections` and ``landscape connect`` read this registry:
each method is one function and one :class:`Method` entry (:func:`register`). The function
takes the two networks, the model, the batch weight adjustment fits on (``data``; None for
methods that need none) and keyword options; it returns a :class:`~landscape.connect.result.Path`
whose ``t`` and ``stage`` are what the connections file stores. Every method receives every
option and uses those it knows:

``t``
    The parameters of the path (of stage 1 for OT; of each step for multi-layer WA).
``neuron``
    What OT matches (:func:`~landscape.connect.match_neurons`; the ``"ot"`` entry only).
``wa_form``, ``ridge``, ``snap_ends``
    The weight adjustment (:func:`~landscape.connect.wa_path`).
``solver``, ``swap_points``
    The assignment solver and the points inside each swap of OT's stage 2.

The six methods of Anokhin & Yarotsky (2020) are registered here, in the paper's order
(:func:`names`, :data:`PAPER_METHODS`): ``linear``, ``arc``, ``linear+wa``, ``arc+wa``, ``ot``,
``ot+wa``; then Git Re-Basin's alignments (Ainsworth et al. 2023, :mod:`~landscape.connect.rebasin`):
``weight-matching`` and ``activation-matching`` (on ``data``), each the straight line from ``A``
to ``B`` with its channels permuted to match ``A``. Their options: ``max_iter`` and ``seed``
(weight matching's sweeps and visiting order), ``batches`` (activation matching's batches).
REPAIR and RESET (Jordan et al., ICLR 2023; :mod:`~landscape.connect.repair`) follow each
linear-type method as suffixes: ``linear+repair``, ``linear+reset``,
``weight-matching+repair``, ... :func:`register_renormalized` adds both suffixes to any
linear-type method in one call. OT's suffixes (``ot+repair``, ``ot+reset``) renormalise its
stage 1, the line to ``B`` permuted, and keep its stage 2 of swaps.

Examples
--------
>>> names()[:3]
('linear', 'arc', 'linear+wa')
>>> get("ot").label(neuron="bl"), row_label("arc+wa", wa_form="paper"), row_label("Bezier (3)")
('OT (b, l)', 'Arc + WA (paper)', 'Bezier (3)')
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..bn import has_batchnorm
from ..weights import Weights
from .adjust import NotSequentialError, multilayer_wa_path, wa_layer_count, wa_path
from .adjust_graph import wa_cuts
from .matching import ot_path
from .paths import arc_path, linear_path
from .rebasin import activation_matching_connection, weight_matching_connection
from .repair import RENORMALIZATIONS, renormalized, repair_sites
from .result import Path
from .structure import UnsupportedModelError, structure

__all__ = [
    "PAPER_METHODS",
    "Method",
    "get",
    "label",
    "names",
    "register",
    "register_renormalized",
    "row_label",
    "unregister",
    "wa_layers",
    "wa_options",
]

#: The signature of a connection method: ``(A, B, model, data, **options) -> Path``.
Connect = Callable[..., Path]


@dataclass(frozen=True)
class Method:
    """One registered connection method.

    Attributes
    ----------
    name : str
        The registered name (``"linear"``, ``"ot+wa"``); a row of the connections file.
    connect : callable
        ``connect(A, B, model, data, **options) -> Path``.
    needs_data : bool
        Whether the method fits on a batch (``data``); :func:`compare_connections` passes
        None to the others.
    row_label : callable
        ``row_label(**options) -> str``, the method's row in tables and figures under these
        options (``"Linear + WA (paper)"``).
    prepare : callable, optional
        ``prepare(model, options) -> options``, called once per run before any path is
        built: the options the method runs with on ``model`` (it may change them, with a
        warning), or :class:`~landscape.connect.UnsupportedModelError` when the method cannot
        follow the model (the row is skipped, the error's message as the reason). Methods
        sharing one ``prepare`` share its outcome.
    file_attrs : mapping of str to callable, optional
        Attributes of the connections file the method sets: ``{name: value_of(path)}``
        (a value of None sets nothing); read back when a run resumes the method.
    """

    name: str
    connect: Connect
    needs_data: bool = False
    row_label: Callable[..., str] | None = None
    prepare: Callable[[nn.Module, dict[str, Any]], dict[str, Any]] | None = None
    file_attrs: Mapping[str, Callable[[Path], Any]] | None = None

    def label(self, **options: Any) -> str:
        """The row label under ``options`` (see :attr:`row_label`; default: the name)."""
        return self.name if self.row_label is None else self.row_label(**options)

    def __call__(self, A: Weights, B: Weights, model: nn.Module, data=None, **options: Any) -> Path:
        return self.connect(A, B, model, data, **options)


_METHODS: dict[str, Method] = {}


def register(
    name: str,
    connect: Connect | None = None,
    *,
    label: str | Callable[..., str] | None = None,
    needs_data: bool = False,
    prepare: Callable[[nn.Module, dict[str, Any]], dict[str, Any]] | None = None,
    file_attrs: Mapping[str, Callable[[Path], Any]] | None = None,
    replace: bool = False,
):
    """Register a connection method; as a decorator when ``connect`` is not given.

    Parameters
    ----------
    name : str
        A new name, without ``'/'`` or ``'.'`` (it names arrays of the result file).
    connect : callable
        ``connect(A, B, model, data, **options) -> Path``; it accepts every option and uses
        those it knows (see the module notes).
    label : str or callable, optional
        The row label: a fixed string, or ``label(**options) -> str`` (default: ``name``).
    needs_data, prepare, file_attrs
        See :class:`Method`.
    replace : bool
        Allow replacing an entry of the same name.

    Returns
    -------
    Method, or the decorator that registers its function and returns it unchanged

    Examples
    --------
    >>> @register("midpoint-demo", label="Midpoint")
    ... def midpoint(A, B, model, data, *, t, **options):
    ...     ...
    >>> get("midpoint-demo").label(), "midpoint-demo" in names()
    ('Midpoint', True)
    >>> unregister("midpoint-demo")
    """
    if not isinstance(name, str) or not name or "/" in name or "." in name:
        raise ValueError(f"a method name must be a non-empty str without '/' or '.', got {name!r}")

    def add(fn: Connect):
        if not callable(fn):
            raise TypeError(f"method {name!r}: connect should be callable, got {type(fn).__name__}")
        if name in _METHODS and not replace:
            raise ValueError(f"a connection method {name!r} is registered already; pass replace=True")
        row = label if callable(label) or label is None else _fixed(label)
        entry = Method(name, fn, bool(needs_data), row, prepare, dict(file_attrs or {}))
        _METHODS[name] = entry
        return entry

    if connect is not None:
        return add(connect)

    def decorate(fn: Connect) -> Connect:
        add(fn)
        return fn

    return decorate


def unregister(name: str) -> None:
    """Remove the method ``name`` (registered by :func:`register`)."""
    get(name)
    del _METHODS[name]


def _fixed(text: str) -> Callable[..., str]:
    def row_label(**options: Any) -> str:
        return text

    return row_label


def names() -> tuple[str, ...]:
    """The registered names, in the order they were registered (the paper's six first)."""
    return tuple(_METHODS)


def get(name: str) -> Method:
    """The method registered as ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown connection method {name!r}; registered: {', '.join(_METHODS)}") from None


def label(name: str, **options: Any) -> str:
    """The row label of the registered method ``name`` under ``options``."""
    return get(name).label(**options)


def row_label(name: str, **options: Any) -> str:
    """The row label of ``name``: a registered method's (:func:`label`), else ``name`` itself
    (a curve, a connection model)."""
    return get(name).label(**options) if name in _METHODS else name


# ---------------------------------------------------------------------------- row labels
_NAMES = {"linear": "Linear", "arc": "Arc", "ot": "OT"}

#: How the row labels name the two formulations of weight adjustment (:data:`WA_FORMS`).
_WA_FORM_LABELS = {"paper": "paper", "bias": "bias column"}


def _path_label(base: str) -> Callable[..., str]:
    def row_label(*, neuron: str | None = None, **options: Any) -> str:
        """``"OT (b, l)"`` for OT matched on bias and incoming weights alone (the paper's
        neuron (b, l, c) is plain ``"OT"``)."""
        return _NAMES[base] + (" (b, l)" if base == "ot" and neuron == "bl" else "")

    return row_label


def _wa_label(base: str) -> Callable[..., str]:
    def row_label(*, wa_form: str | None = None, **options: Any) -> str:
        """``"Linear + WA (paper)"``, ``"Linear + WA (bias column)"``: WA rows name their
        formulation (none when ``wa_form`` is None)."""
        text = f"{_NAMES[base]} + WA"
        return text if wa_form is None else f"{text} ({_WA_FORM_LABELS.get(wa_form, wa_form)})"

    return row_label


# ---------------------------------------------------------------------------- the methods
def _named(path: Path, name: str) -> Path:
    """``path`` under the registered name of the method that made it."""
    path.method = name
    return path


def linear_connection(A: Weights, B: Weights, model: nn.Module, data=None, *, t, **options: Any) -> Path:
    """The straight line from ``A`` to ``B`` (:func:`~landscape.connect.linear_path`)."""
    return _named(linear_path(A, B, t), "linear")


def arc_connection(A: Weights, B: Weights, model: nn.Module, data=None, *, t, **options: Any) -> Path:
    """The arc through the neuron mean (:func:`~landscape.connect.arc_path`)."""
    return _named(arc_path(A, B, model, t), "arc")


def ot_connection(
    A: Weights,
    B: Weights,
    model: nn.Module,
    data=None,
    *,
    t,
    neuron: str = "blc",
    solver: str = "emd",
    swap_points: int = 1,
    **options: Any,
) -> Path:
    """OT's two stages joined (:func:`~landscape.connect.ot_path`): stage 1 (the matched
    neurons) on ``[0, 1/2]``, stage 2 (the swaps) on ``[1/2, 1]``. The path keeps the stages
    apart too (``stage1``, ``t1``, ``stage2``, ``t2``, the paper evaluates each), with
    ``permutations`` and ``swaps``."""
    return _named(ot_path(A, B, model, t, neuron=neuron, solver=solver, swap_points=swap_points), "ot")


def wa_layers(model: nn.Module) -> int:
    """The layers weight adjustment works through: those of a sequential network
    (:func:`~landscape.connect.adjust.wa_layer_count`), else the cuts of a residual one
    (:func:`~landscape.connect.adjust_graph.wa_cuts`).

    Raises
    ------
    UnsupportedModelError
        Neither can follow the model; the message of the reason that applies (the residual
        one when the network is not sequential).
    """
    return _wa_structure(model)[0]


def _wa_structure(model: nn.Module) -> tuple[int, bool]:
    """``(layers, residual)``: what :func:`wa_layers` counts and whether it counted the cuts
    of a residual network; the reason that applies when neither can follow the model."""
    try:
        return wa_layer_count(model), False
    except UnsupportedModelError as e:
        try:  # residual networks: transitional networks at the graph's cuts
            return len(wa_cuts(model)), True
        except UnsupportedModelError as e2:
            raise (e2 if isinstance(e, NotSequentialError) else e) from None


def wa_options(model: nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """The options weight adjustment runs with on ``model`` (a :attr:`Method.prepare`):
    residual networks are adjusted at the cuts of their graph with a bias column only, so
    ``wa_form="paper"`` becomes ``"bias"`` there, with a warning.

    Raises
    ------
    UnsupportedModelError
        ``"weight adjustment cannot follow this model: ..."``.
    """
    try:
        _, residual = _wa_structure(model)
    except UnsupportedModelError as why:
        raise UnsupportedModelError(f"weight adjustment cannot follow this model: {str(why).splitlines()[0]}") from None
    if not residual:
        return options
    wa_form = options.get("wa_form", "paper")
    if wa_form != "bias":  # the paper has no residual form: ours, labelled as such
        warnings.warn(
            f"wa_form={wa_form!r}: residual networks are adjusted at the cuts of their graph with a "
            f"bias column only; the WA rows use wa_form='bias' and say so",
            UserWarning,
            stacklevel=4,  # wa_options <- the run's preparation <- compare_connections <- its caller
        )
    return dict(options, wa_form="bias")


def _wa_connection(base: str) -> Connect:
    def connect(
        A: Weights,
        B: Weights,
        model: nn.Module,
        data,
        *,
        t,
        wa_form: str = "paper",
        ridge: float = 0.0,
        snap_ends: bool = True,
        solver: str = "emd",
        swap_points: int = 1,
        **options: Any,
    ) -> Path:
        kw = dict(
            method=base, wa_form=wa_form, ridge=ridge, snap_ends=snap_ends, solver=solver, swap_points=swap_points
        )
        if wa_layers(model) == 2:  # one hidden layer: stages of OT or phases of the paper's form
            return _named(wa_path(A, B, model, data, t, **kw), f"{base}+wa")
        # deeper: through transitional networks, stage k = step k
        return _named(multilayer_wa_path(A, B, model, data, t, **kw), f"{base}+wa")

    connect.__name__ = connect.__qualname__ = f"{base}_wa_connection"
    connect.__doc__ = (
        f"{_NAMES[base]} + WA: :func:`~landscape.connect.wa_path` on a network with one hidden layer "
        "(two stages for OT and the paper's form, one otherwise), "
        ":func:`~landscape.connect.multilayer_wa_path` on deeper ones (``stage``: the step, "
        "``bounds``: the steps' ends in ``t``); ``data`` is the batch it fits on."
    )
    return connect


def _wa_steps(path: Path) -> int | None:
    return len(path.bounds) - 1 if hasattr(path, "bounds") else None


register("linear", linear_connection, label=_path_label("linear"))
register("arc", arc_connection, label=_path_label("arc"))
for _base in ("linear", "arc"):
    register(
        f"{_base}+wa",
        _wa_connection(_base),
        label=_wa_label(_base),
        needs_data=True,
        prepare=wa_options,
        file_attrs={"wa_steps": _wa_steps},
    )
register("ot", ot_connection, label=_path_label("ot"), file_attrs={"ot_swaps": lambda path: len(path.swaps)})
register(
    "ot+wa",
    _wa_connection("ot"),
    label=_wa_label("ot"),
    needs_data=True,
    prepare=wa_options,
    file_attrs={"wa_steps": _wa_steps},
)
#: The six methods of Anokhin & Yarotsky (2020), in the paper's order (the default rows of
#: :func:`~landscape.connect.compare_connections`).
PAPER_METHODS = names()

# Git Re-Basin (Ainsworth et al. 2023): the line to B aligned by permutations
register("weight-matching", weight_matching_connection, label="Weight matching")


def _activation_options(model: nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """Skip an ``activation-matching`` row on a model with permutation groups that have no
    activation of their own to correlate (GPT-2's attention heads and the dimensions inside
    a head: :attr:`~landscape.connect.structure.Structure.activation_modules`)."""
    s = structure(model)
    active = {grp for grp, _ in s.activation_modules.values()}
    missing = [g.name for g in s.groups if g.name not in active]
    if missing:
        raise UnsupportedModelError(
            f"activation matching correlates every group's activations and {len(missing)} group(s) have none "
            f"(e.g. {', '.join(missing[:3])}); match them by weights (weight-matching)"
        )
    return options


register(
    "activation-matching",
    activation_matching_connection,
    label="Activation matching",
    needs_data=True,
    prepare=_activation_options,
)


# ---------------------------------------------------------------------------- REPAIR and RESET
def _renormalized_label(base: str, how: str) -> Callable[..., str]:
    def row_label(**options: Any) -> str:
        """``"Linear + REPAIR"``: the base method's row label and the renormalisation."""
        return f"{label(base, **options)} + {how.upper()}"

    return row_label


def _reset_options(model: nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """Skip a ``+reset`` row on a model without BatchNorm: RESET would repeat the base row."""
    if not has_batchnorm(model):
        raise UnsupportedModelError("RESET recomputes BatchNorm statistics and the model has no BatchNorm layer")
    return options


def _repair_options(model: nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """Skip a ``+repair`` row on a model REPAIR cannot correct (:func:`repair_sites`)."""
    repair_sites(model)
    return options


def register_renormalized(base: str, how: Sequence[str] = RENORMALIZATIONS, *, replace: bool = False) -> list[Method]:
    """Register ``"<base>+repair"`` and ``"<base>+reset"`` for the registered linear-type
    method ``base`` (:func:`~landscape.connect.repair.renormalized`): its line from ``A`` to
    ``B'``, then REPAIR or RESET on the method's data (``needs_data``; the inputs of the first
    split or ``wa_data`` in :func:`~landscape.connect.compare_connections`). The base's
    ``prepare`` and ``file_attrs`` carry over; a model RESET or REPAIR cannot follow (no
    BatchNorm for RESET) gets its row skipped with the reason.

    Examples
    --------
    >>> [m.name for m in register_renormalized("linear", replace=True)]
    ['linear+repair', 'linear+reset']
    >>> label("linear+repair"), get("linear+reset").needs_data
    ('Linear + REPAIR', True)
    """
    entry = get(base)
    out = []
    for h in how:
        check = _repair_options if h == "repair" else _reset_options

        def prepare(model: nn.Module, options: dict[str, Any], check=check) -> dict[str, Any]:
            options = check(model, options)
            return entry.prepare(model, options) if entry.prepare is not None else options

        fn = renormalized(entry.connect, h, f"{base}+{h}", base_needs_data=entry.needs_data)
        out.append(
            register(
                f"{base}+{h}",
                fn,
                label=_renormalized_label(base, h),
                needs_data=True,
                prepare=prepare,
                file_attrs=entry.file_attrs,
                replace=replace,
            )
        )
    return out


register_renormalized("linear")
register_renormalized("weight-matching")
register_renormalized("activation-matching")
register_renormalized("ot")  # stage 1 renormalised, stage 2 (the swaps) as OT makes it
