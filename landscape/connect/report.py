"""Compare connection methods between two networks, as in Table 1 of Anokhin & Yarotsky (2020).

:func:`compare_connections` builds every path between ``A`` and ``B`` (Linear, Arc, OT and
their Weight-Adjustment variants), evaluates it on every data split with
:func:`landscape.evaluate`, and collects the worst (minimum) accuracy and the maximum loss
along each path into a :class:`ConnectionReport`. The report prints the paper's table
(:meth:`ConnectionReport.markdown`), saves one HDF5 result file
(:meth:`ConnectionReport.save`, kind ``"connections"``) and reads it back
(:meth:`ConnectionReport.load`); :func:`landscape.plot.plot_connections` draws the accuracy
along ``t`` of every method from a report or from the file alone.

Reference: I. Anokhin, D. Yarotsky, "Low-loss connection of weight vectors:
distribution-based approaches", ICML 2020.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..batches import first_inputs
from ..io import ResultExistsError, create_result, open_result, read_connections
from ..weights import Weights
from . import registry
from .adjust import check_form
from .flows import aligned_flow_path, flow_path
from .matching import check_neuron
from .structure import UnsupportedModelError, structure

__all__ = ["METHODS", "PATH_METRICS", "ConnectionReport", "compare_connections", "path_metrics"]

#: The connection methods of Anokhin & Yarotsky (2020), in the paper's order
#: (:data:`~landscape.connect.registry.PAPER_METHODS`), the default rows; every other
#: registered method (Git Re-Basin's, REPAIR and RESET, those registered later) is known to
#: :func:`compare_connections` too.
METHODS = registry.PAPER_METHODS

KIND = "connections"
ENDPOINTS = "End points"

#: The (loss, accuracy) metric pairs a path is evaluated with (:func:`path_metrics`): a
#: classifier's mean cross-entropy and accuracy per sample, or a causal language model's
#: next-token cross-entropy and accuracy per counted token (:mod:`landscape.metrics`).
PATH_METRICS = {"classifier": ("loss", "acc"), "causal-lm": ("token_loss", "token_acc")}
_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_TOKEN_METRICS = {"token_loss", "perplexity", "token_acc"}


def _is_causal_lm(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face causal language model (a ``transformers`` class
    named ``*ForCausalLM`` or ``*LMHeadModel``: its logits at position ``i`` predict token
    ``i + 1``)."""
    cls = type(model)
    return cls.__module__.startswith("transformers.") and cls.__name__.endswith(_LM_SUFFIXES)


def path_metrics(model: nn.Module, metrics: Sequence[str] | None = None) -> tuple[str, str]:
    """The ``(loss, accuracy)`` metric names the points of a path are evaluated with.

    ``None`` chooses by the model: ``("token_loss", "token_acc")`` for a Hugging Face
    causal language model (``*ForCausalLM``, ``*LMHeadModel``), ``("loss", "acc")``
    otherwise. An explicit pair is taken as given once checked; a class-metric pair on a
    causal language model is refused (its ``loss`` would compare the logits at position
    ``i`` with token ``i``, not ``i + 1``).

    Examples
    --------
    >>> import landscape as ls
    >>> path_metrics(ls.build_model("mlp", {"widths": [8]}))
    ('loss', 'acc')
    """
    from ..metrics import BUILTIN_METRICS

    lm = _is_causal_lm(model)
    if metrics is None:
        return PATH_METRICS["causal-lm" if lm else "classifier"]
    pair = tuple(metrics) if not isinstance(metrics, str) else (metrics,)
    if len(pair) != 2 or not all(isinstance(m, str) and m in BUILTIN_METRICS for m in pair):
        raise ValueError(
            f"metrics should be a (loss, accuracy) pair of metric names such as {PATH_METRICS['classifier']} or "
            f"{PATH_METRICS['causal-lm']}, got {metrics!r}"
        )
    if lm and not set(pair) <= _TOKEN_METRICS:
        raise ValueError(
            f"{type(model).__name__} is a causal language model: metrics {pair} would score the logits at position i "
            f"against token i; expected {PATH_METRICS['causal-lm']} (or None to choose by the model)"
        )
    return pair


@dataclass
class ConnectionReport:
    """Worst accuracies and largest losses along connections of two networks.

    Attributes
    ----------
    methods : list of str
        The methods asked for, in order (skipped ones included).
    splits : list of str
        Names of the data splits (e.g. ``["train", "test"]``).
    t : dict of str to ndarray[K]
        Path parameter of every evaluated point, per method, in ``[0, 1]``. For ``"ot"`` and
        ``"ot+wa"`` stage 1 lies on ``[0, 1/2]`` and stage 2 on ``[1/2, 1]`` (as
        :meth:`~landscape.connect.OTPath.joined`).
    stage : dict of str to ndarray[K] of int
        ``1`` or ``2`` for the points of OT stages and of the two phases of the paper's WA
        with one hidden layer, the step ``1..n`` of multi-layer WA paths (through
        transitional networks), ``0`` for single-stage paths.
    acc, loss : dict of str to dict of str to ndarray[K]
        ``acc[method][split]``: accuracy (fraction in ``[0, 1]``) at every point, of the
        metrics :attr:`metrics` (per sample, or per token for a causal language model).
    endpoints : dict of str to dict of str to float
        ``endpoints[split]`` holds ``A_acc``, ``B_acc``, ``A_loss``, ``B_loss``.
    skipped : dict of str to str
        Methods not computed and why.
    attrs : dict
        Extra attributes saved with the report (points, WA batch size, ...).
    labels : dict of str to str
        The row label of every method (``"Linear + WA (paper)"``; curves and connection
        models: their names), saved in the file; a method without one is labelled by the
        registry's rule (:func:`landscape.connect.registry.row_label`).
    """

    methods: list[str]
    splits: list[str]
    t: dict[str, np.ndarray] = field(default_factory=dict)
    stage: dict[str, np.ndarray] = field(default_factory=dict)
    acc: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    loss: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ summaries
    @property
    def computed(self) -> list[str]:
        """The methods that were evaluated."""
        return [m for m in self.methods if m not in self.skipped]

    def worst_acc(self, method: str, split: str, stage: int | None = None) -> float:
        """Minimum accuracy along ``method`` on ``split`` (NaN when skipped); ``stage`` 1 or 2
        restricts an OT path to one of its stages."""
        if method in self.skipped:
            return float("nan")
        return float(np.min(self._select(self.acc[method][split], method, stage)))

    def max_loss(self, method: str, split: str, stage: int | None = None) -> float:
        """Maximum loss along ``method`` on ``split`` (NaN when skipped)."""
        if method in self.skipped:
            return float("nan")
        return float(np.max(self._select(self.loss[method][split], method, stage)))

    def _select(self, values: np.ndarray, method: str, stage: int | None) -> np.ndarray:
        if stage is None:
            return values
        st = self.stage[method]
        if not np.any(st == stage):
            raise ValueError(f"method {method!r} has no stage {stage}")
        return values[st == stage]

    def has_stages(self, method: str) -> bool:
        return method in self.stage and bool(np.any(self.stage[method] > 0))

    def stages(self, method: str) -> list[int]:
        """The stage (OT) or step (multi-layer WA) numbers of ``method``, empty if none."""
        if method in self.skipped or method not in self.stage:
            return []
        return sorted(int(k) for k in np.unique(self.stage[method]) if k > 0)

    def stage_word(self, method: str) -> str:
        """``"step"`` for multi-layer WA paths, ``"phase"`` for the paper's WA with one hidden
        layer, ``"stage"`` for OT."""
        if method.endswith("+wa") and "wa_steps" in self.attrs:
            return "step"
        return "phase" if method.endswith("+wa") and self.wa_form == "paper" else "stage"

    @property
    def wa_form(self) -> str:
        """The formulation of weight adjustment (``"paper"`` or ``"bias"``; files written
        before the attribute existed used ``"bias"``)."""
        return str(self.attrs.get("wa-form", "bias"))

    @property
    def metrics(self) -> tuple[str, str]:
        """The ``(loss, accuracy)`` metrics of :attr:`loss` and :attr:`acc` (files written
        before the attribute existed: ``("loss", "acc")``)."""
        return tuple(self.attrs.get("metrics", PATH_METRICS["classifier"]))

    @property
    def ot_neuron(self) -> str:
        """The neuron OT matched on (``"blc"`` or ``"bl"``; older files: ``"bl"``)."""
        return str(self.attrs.get("ot-neuron", "bl"))

    def label(self, method: str) -> str:
        """The row label of ``method`` in this report: the one it holds (:attr:`labels`), else
        the registry's under the report's formulation of WA and OT neuron."""
        if method in self.labels:
            return self.labels[method]
        return registry.row_label(method, wa_form=self.wa_form, neuron=self.ot_neuron)

    def endpoint_acc(self, split: str) -> float:
        """The worse of the two endpoints' accuracies on ``split``."""
        e = self.endpoints[split]
        return float(np.min([e["A_acc"], e["B_acc"]]))  # NaN when either is (min() would drop it)

    def endpoint_loss(self, split: str) -> float:
        e = self.endpoints[split]
        return float(np.max([e["A_loss"], e["B_loss"]]))

    def nonfinite(self) -> list[str]:
        """One line per computed method, split and quantity with NaN or Inf values along
        the path, and per endpoint: ``"Linear: 2 of 11 test accuracies not finite (NaN/Inf)"``."""
        out = []
        for m in self.computed:
            for s in self.splits:
                for what, values in (("accuracies", self.acc[m][s]), ("losses", self.loss[m][s])):
                    bad = int((~np.isfinite(np.asarray(values, dtype=np.float64))).sum())
                    if bad:
                        out.append(f"{self.label(m)}: {bad} of {len(values)} {s} {what} not finite (NaN/Inf)")
        for s, e in self.endpoints.items():
            bad = [k for k, v in e.items() if not np.isfinite(v)]
            if bad:
                out.append(f"{ENDPOINTS}: {', '.join(bad)} on {s} not finite (NaN/Inf)")
        return out

    # ------------------------------------------------------------------ table
    def rows(self, *, stages: bool = True) -> list[tuple[str, list[float]]]:
        """``(label, [worst acc per split])`` rows of the table (accuracy as a fraction);
        with ``stages``, OT methods are followed by one row per stage (multi-layer WA paths:
        per step)."""
        out = []
        for m in self.methods:
            out.append((self.label(m), [self.worst_acc(m, s) for s in self.splits]))
            if stages:
                word = self.stage_word(m)
                for k in self.stages(m):
                    out.append((f"{self.label(m)} ({word} {k})", [self.worst_acc(m, s, k) for s in self.splits]))
        out.append((ENDPOINTS, [self.endpoint_acc(s) for s in self.splits]))
        return out

    def markdown(self, *, stages: bool = True, digits: int = 2) -> str:
        """The paper's table: one row per method then ``End points``; one column per split
        with the worst accuracy along the path in %. ``End points`` shows the worse of the
        two ends. OT rows are followed by their stages (``stages=False`` drops them). A
        computed path with a NaN accuracy shows ``NaN`` (never "skipped"), and the lines
        under the table count the values that are not finite (:meth:`nonfinite`)."""
        what = "token acc" if self.metrics[1] in _TOKEN_METRICS else "acc"
        head = "| Method | " + " | ".join(f"Worst {s} {what} (%)" for s in self.splits) + " |"
        sep = "|---|" + "---:|" * len(self.splits)
        lines = [head, sep]
        skipped = {self.label(m) for m in self.skipped}
        for label, vals in self.rows(stages=stages):
            cells = [
                "skipped" if label in skipped else "NaN" if np.isnan(v) else f"{100.0 * v:.{digits}f}" for v in vals
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for m, why in self.skipped.items():
            lines.append("")
            lines.append(f"{self.label(m)} skipped: {why}")
        for note in self.nonfinite():
            lines.append("")
            lines.append(note)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.markdown()

    def __repr__(self) -> str:
        return f"ConnectionReport(methods={self.methods}, splits={self.splits}, skipped={sorted(self.skipped)})"

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, force: bool = False) -> str:
        """Write one result file of kind ``"connections"``.

        Grid ``(n_methods + 1, n_splits)``: a row per method then ``End points`` (the worse
        end); metrics ``worst_acc`` and ``max_loss``; skipped methods stay missing. Arrays
        ``<method>.t``, ``<method>.stage``, ``<method>.<split>.acc`` and
        ``<method>.<split>.loss``; attrs ``methods``, ``splits``, ``skipped``, ``endpoints``,
        ``stages`` (worst accuracy per OT stage), ``table`` (:meth:`markdown`) and ``labels``
        (the row label of every method: figures read them from the file).
        """
        path = os.fspath(path)
        arrays: dict[str, np.ndarray] = {}
        for m in self.computed:
            arrays[f"{m}.t"] = np.asarray(self.t[m], dtype=np.float64)
            arrays[f"{m}.stage"] = np.asarray(self.stage[m], dtype=np.int64)
            for s in self.splits:
                arrays[f"{m}.{s}.acc"] = np.asarray(self.acc[m][s], dtype=np.float64)
                arrays[f"{m}.{s}.loss"] = np.asarray(self.loss[m][s], dtype=np.float64)
        stages = {
            m: {f"{self.stage_word(m)}{k}": {s: self.worst_acc(m, s, k) for s in self.splits} for k in self.stages(m)}
            for m in self.computed
            if self.has_stages(m)
        }
        attrs = dict(self.attrs)
        attrs.update(
            methods=list(self.methods),
            splits=list(self.splits),
            rows=list(self.methods) + [ENDPOINTS],
            skipped=dict(self.skipped),
            endpoints={s: dict(v) for s, v in self.endpoints.items()},
            stages=stages,
            table=self.markdown(),
            labels={m: self.label(m) for m in self.methods},
        )
        n_m, n_s = len(self.methods), len(self.splits)
        with create_result(
            path,
            kind=KIND,
            shape=(n_m + 1, n_s),
            metrics=["worst_acc", "max_loss"],
            attrs=attrs,
            arrays=arrays,
            force=force,
        ) as rf:
            cells, worst, loss = [], [], []
            for i, m in enumerate(self.methods):
                if m in self.skipped:
                    continue
                for j, s in enumerate(self.splits):
                    cells.append(i * n_s + j)
                    worst.append(self.worst_acc(m, s))
                    loss.append(self.max_loss(m, s))
            for j, s in enumerate(self.splits):
                cells.append(n_m * n_s + j)
                worst.append(self.endpoint_acc(s))
                loss.append(self.endpoint_loss(s))
            rf.write_cells(cells, {"worst_acc": worst, "max_loss": loss})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConnectionReport:
        """Read a file written by :meth:`save` (:func:`landscape.io.read_connections`)."""
        return cls(**read_connections(path))


# ---------------------------------------------------------------------------- building
def compare_connections(
    model: nn.Module,
    A: Weights,
    B: Weights,
    splits: Mapping[str, Any],
    *,
    methods: Sequence[str] = METHODS,
    points: int = 21,
    wa_data=None,
    curves: Mapping[str, Any] | None = None,
    connection_models: Mapping[str, Any] | None = None,
    ridge: float = 0.0,
    wa_form: str = "paper",
    neuron: str = "blc",
    bn: str = "running",
    bn_data=None,
    device=None,
    precision: str = "fp32",
    out: str | os.PathLike | None = None,
    force: bool = False,
    resume: bool = False,
    progress: bool = False,
    attrs: Mapping[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
) -> ConnectionReport:
    """Connect ``A`` and ``B`` by every method and find the worst point of each path.

    Parameters
    ----------
    model : nn.Module
        An MLP stack (:func:`~landscape.connect.linear_chain`), a convolutional / residual
        network or a transformer (traceable attention stacks, Hugging Face GPT-2; a causal
        LM is measured per token) whose groups :mod:`~landscape.connect.structure` reads. WA
        methods run through transitional networks at the layers of sequential networks and
        at the cuts of residual ones (:mod:`~landscape.connect.adjust_graph`); elsewhere their
        rows are skipped with the reason in the report.
    A, B : Weights
        The two networks.
    splits : mapping of str to data
        Data splits to evaluate on, e.g. ``{"train": train, "test": test}`` (TensorData,
        ``(x, y)`` tuples, DataLoaders or iterables of batches: :func:`landscape.evaluate`).
    methods : sequence of str
        Registered names (:mod:`~landscape.connect.registry`; default the paper's six:
        ``"linear"``, ``"arc"``, ``"linear+wa"``, ``"arc+wa"``, ``"ot"``, ``"ot+wa"``). On a
        network with one hidden layer WA methods are :func:`wa_path`; on deeper ones they
        run through the transitional networks of :func:`~landscape.connect.multilayer_wa_path`
        (``points`` per step, ``stage`` holds the step number). Rows are labelled by the
        registry (:attr:`ConnectionReport.labels`, kept in the file).
    points : int
        Values of ``t`` along each path (for OT: of stage 1; stage 2 is evaluated at its swap
        points, one inside each swap).
    wa_data : TensorData, tuple, Tensor, DataLoader or iterable of batches, optional
        The batch WA fits the second layer on (default: the first split; all its inputs). WA paths start and
        end at ``A`` and ``B`` exactly (``snap_ends=True``).
    curves : mapping of str to Curve, optional
        Trained curves between ``A`` and ``B`` (:class:`~landscape.curves.Curve`, e.g. the
        paper's Bezier curves with 3 and 5 points), added as rows under their keys; they are
        evaluated at the same ``t``.
    connection_models : mapping of str to (flows, groups) or (flows, groups, template), optional
        Flow and Bijection connections (:func:`~landscape.connect.flows.fit_flows_for`,
        :func:`~landscape.connect.flows.fit_bijection`, or
        :func:`~landscape.connect.flows.load_connection_model`), added as rows under their
        keys: :func:`~landscape.connect.flows.flow_path` at the same ``t``; with the
        template of an aligned pool (:func:`~landscape.connect.flows.align_pool`),
        :func:`~landscape.connect.flows.aligned_flow_path` in two stages as for ``"ot"``.
    ridge : float
        Ridge term of every weight adjustment (0: exact least squares).
    wa_form : {"paper", "bias"}
        The weight adjustment (:data:`~landscape.connect.WA_FORMS`): the paper's (no bias
        column, ``A``'s output kept, two phases with one hidden layer; default) or ours with
        a bias column. Named in the row labels ("Linear + WA (paper)"). Residual networks
        take ``"bias"`` only: with ``"paper"`` their WA rows are skipped, saying so.
    neuron : {"blc", "bl"}
        The neuron the ``"ot"`` row matches on (:func:`~landscape.connect.match_neurons`):
        the paper's :math:`(b_i, l_i, c_i)` (default) or bias and incoming weights
        (row "OT (b, l)"). The ``"ot+wa"`` row matches the first layer's :math:`(b_i, l_i)`,
        as the paper connects that layer alone.
    bn, bn_data
        BatchNorm statistics along the paths (:func:`landscape.evaluate`): ``"running"``
        interpolates the running statistics with the weights; ``"recompute"`` (advised for
        networks with BatchNorm) recomputes them at every point on ``bn_data`` (default: the
        split being evaluated).
    device, precision, progress
        Passed to :func:`landscape.evaluate` (``progress``: its progress bars).
    out : path, optional
        Save the report there (:meth:`ConnectionReport.save`), rewritten after every method
        so an interrupted run keeps its finished methods; an existing file raises
        :class:`~landscape.io.ResultExistsError` before anything is computed unless ``force``
        or ``resume``.
    resume : bool
        Continue the report in ``out``: methods already there are read back, not recomputed,
        when the file was made with the same settings: ``points``, ``ridge``, ``bn``, splits,
        checkpoints (by sha256 when the weights came from files) and ``attrs`` (every
        attribute but the results the ``connections`` kind declares not compared); otherwise
        :class:`~landscape.io.ResultFileError`.
    attrs : mapping, optional
        Extra attributes stored in the file (model spec, data spec, ...).
    metrics : (str, str), optional
        The loss and accuracy of every point (:func:`path_metrics`; default chosen by the model), attribute ``metrics``.

    Returns
    -------
    ConnectionReport
    """
    methods, curves, flows = list(methods), dict(curves or {}), dict(connection_models or {})
    _check_rows(A, B, splits, methods, curves, flows)
    exists = _check_run(points, out, force, resume, wa_form, neuron)
    options, skipped = _prepare(model, methods, {"wa_form": wa_form, "neuron": neuron, "ridge": ridge})
    rep = _new_report(model, A, B, splits, methods, [*flows, *curves], options, points, bn, attrs, metrics)
    evaluation = dict(bn=bn, bn_data=bn_data, device=device, precision=precision, progress=progress)
    run = _Run(model, splits, rep, out, _prior_report(out, rep) if (exists and resume) else None, evaluation)
    run.endpoints(A, B)
    t = np.linspace(0.0, 1.0, int(points))
    for m in methods:
        run.method(registry.get(m), A, B, skipped.get(m), dict(options, t=t, snap_ends=True), wa_data)
    for name, (nu, groups_of_flows, *template) in flows.items():
        run.connection_model(name, A, B, nu, groups_of_flows, template[0] if template else None, t, neuron)
    for name, curve in curves.items():
        run.curve(name, curve, t)
    return run.finish()


def _check_run(points: int, out, force: bool, resume: bool, wa_form: str, neuron: str) -> bool:
    """Check the run's ``points``, ``force``, ``resume``, ``wa_form`` and ``neuron``; whether
    ``out`` exists (an existing file raises unless ``force`` or ``resume``)."""
    check_form(wa_form)
    check_neuron(neuron)
    if int(points) < 2:
        raise ValueError(f"points should be at least 2, got {points}")
    if resume and force:
        raise ValueError("resume and force contradict each other; pass one")
    exists = out is not None and os.path.lexists(os.fspath(out))
    if exists and not (force or resume):
        raise ResultExistsError(f"{os.fspath(out)} exists; pass resume=True to continue it or force=True to replace it")
    return exists


def _new_report(model, A, B, splits, methods, others, options, points, bn, attrs, metrics) -> ConnectionReport:
    """The empty report of a run: its rows (the methods, then connection models and curves
    under their names), their labels and the settings it is made with (the path metrics:
    :func:`path_metrics` of ``metrics``)."""
    pair = path_metrics(model, metrics)
    n_linear, groups = _structure(model)
    return ConnectionReport(
        methods=methods + others,
        splits=list(splits),
        attrs={
            "points": int(points),
            "linear_layers": n_linear,
            "groups": groups,
            "bn": bn,
            "ridge": float(options["ridge"]),
            "wa-form": options["wa_form"],
            "ot-neuron": options["neuron"],
            "A-sha256": A.sha256 or "",
            "B-sha256": B.sha256 or "",
            **dict(attrs or {}),
            "metrics": list(pair),
        },
        labels={**{m: registry.label(m, **options) for m in methods}, **{n: n for n in others}},
    )


def _check_rows(A: Weights, B: Weights, splits, methods: list[str], curves: dict, flows: dict) -> None:
    """The rows :func:`compare_connections` is asked for: registered methods, once each;
    splits, curves and connection models under names that can name arrays of the file;
    curves from ``A`` to ``B``."""
    unknown = [m for m in methods if m not in registry.names()]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; registered: {', '.join(registry.names())}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods has repeated names: {methods}")
    if not isinstance(splits, Mapping) or not splits:
        raise ValueError("splits should be a non-empty mapping of split name to data")
    for s in splits:
        if not isinstance(s, str) or not s or "/" in s or "." in s:
            raise ValueError(f"split names must be non-empty str without '/' or '.', got {s!r}")
    taken = set(registry.names()) | set(methods)
    for name in flows:
        if name in taken or name in curves or not name or "/" in name or "." in name:
            raise ValueError(f"connection model names must be new labels without '/' or '.', got {name!r}")
    for name, curve in curves.items():
        if name in taken or not name or "/" in name or "." in name:
            raise ValueError(f"curve names must be new labels without '/' or '.', got {name!r}")
        for end, w, which in ((curve.start, A, "A"), (curve.end, B, "B")):
            if not torch.allclose(end.flatten(torch.float64), w.flatten(torch.float64), rtol=1e-6, atol=1e-7):
                raise ValueError(f"curve {name!r} does not {'start' if which == 'A' else 'end'} at {which}")


def _prepare(model: nn.Module, methods: list[str], options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Each distinct :attr:`~landscape.connect.registry.Method.prepare` of ``methods``, once:
    the options the run goes on with, and the reason of every method that cannot follow
    ``model`` (its row is skipped)."""
    outcome: dict[Any, str | None] = {}
    for m in methods:
        prepare = registry.get(m).prepare
        if prepare is None or prepare in outcome:
            continue
        try:
            options = prepare(model, options)
            outcome[prepare] = None
        except UnsupportedModelError as e:
            outcome[prepare] = str(e)
    skipped = {m: outcome[p] for m in methods if (p := registry.get(m).prepare) is not None and outcome[p]}
    return options, skipped


def _structure(model: nn.Module) -> tuple[int, list[str]]:
    """The report's view of ``model``: the number of Linear layers of an MLP stack (0 for
    other networks) and the channel groups of other networks (a clear error when they
    cannot be traced)."""
    s = structure(model)
    if s.chain is not None:
        return len(s.chain.names), []
    return 0, [g.name for g in s.groups]  # convolutional / residual networks: channel groups


class _Run:
    """One run of :func:`compare_connections`: evaluates paths into the report, takes rows
    from the file it resumes and writes the file after every row."""

    def __init__(self, model: nn.Module, splits, rep: ConnectionReport, out, prior, evaluation: dict[str, Any]):
        self.model, self.splits, self.rep, self.out, self.prior = model, splits, rep, out, prior
        self.evaluation = evaluation
        self.data = None  # the batch of the methods that fit on data, once built

    def evaluate(self, points) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Accuracy and loss of every point on every split."""
        from ..evaluate import evaluate  # at call time: a run is interrupted through it in tests

        acc, loss = {}, {}
        ev = self.evaluation
        for s, data in self.splits.items():
            r = evaluate(
                self.model,
                points,
                data,
                metrics=self.rep.metrics,
                bn=ev["bn"],
                bn_data=ev["bn_data"] if ev["bn_data"] is not None else (data if ev["bn"] != "running" else None),
                device=ev["device"],
                precision=ev["precision"],
                progress=ev["progress"],
            )
            name_loss, name_acc = self.rep.metrics
            acc[s], loss[s] = np.asarray(r[name_acc], np.float64), np.asarray(r[name_loss], np.float64)
        return acc, loss

    def staged(self, path) -> tuple[np.ndarray, np.ndarray, dict, dict]:
        """``(t, stage, acc, loss)`` of a path in two stages (OT, aligned flows): each stage
        evaluated on its own (the paper reports each) and joined as the path joins them (the
        point both stages share once)."""
        a1, l1 = self.evaluate(path.stage1)
        a2, l2 = self.evaluate(path.stage2)
        keep = slice(path.stage2.K - int(np.sum(path.stage == 2)), None)
        acc = {s: np.concatenate([a1[s], a2[s][keep]]) for s in self.splits}
        loss = {s: np.concatenate([l1[s], l2[s][keep]]) for s in self.splits}
        return path.t, path.stage, acc, loss

    def resumed(self, name: str, attrs: tuple[str, ...] = ()) -> bool:
        """Take row ``name`` (and the file attributes ``attrs``) from the file being resumed
        if it is there; else False."""
        if self.prior is None or name not in self.prior.computed:
            return False
        for d in ("t", "stage", "acc", "loss"):
            getattr(self.rep, d)[name] = getattr(self.prior, d)[name]
        for k in attrs:
            if k in self.prior.attrs:
                self.rep.attrs.setdefault(k, self.prior.attrs[k])
        return True

    def add(self, name: str, t, stage, acc, loss) -> None:
        """Row ``name`` is done: into the report, and the file rewritten (an interrupted run
        resumes from it)."""
        rep = self.rep
        rep.t[name], rep.stage[name], rep.acc[name], rep.loss[name] = t, stage, acc, loss
        if self.out is not None:
            partial = dict(rep.attrs, complete=False, planned=list(rep.methods))  # `landscape info` counts
            ConnectionReport(
                methods=[m for m in rep.methods if m in rep.acc],
                splits=rep.splits,
                t=rep.t,
                stage=rep.stage,
                acc=rep.acc,
                loss=rep.loss,
                endpoints=rep.endpoints,
                attrs=partial,
                labels=rep.labels,
            ).save(self.out, force=True)

    def endpoints(self, A: Weights, B: Weights) -> None:
        acc, loss = self.evaluate([A, B])
        for s in self.splits:
            self.rep.endpoints[s] = {
                "A_acc": float(acc[s][0]),
                "B_acc": float(acc[s][1]),
                "A_loss": float(loss[s][0]),
                "B_loss": float(loss[s][1]),
            }

    def method(self, method: registry.Method, A: Weights, B: Weights, skipped: str | None, options, wa_data) -> None:
        """Row of a registered method: its path (:attr:`Method.connect`), evaluated; a
        single-stage path is stored with stage 0."""
        m, file_attrs = method.name, dict(method.file_attrs or {})
        if self.resumed(m, (*(("wa_samples",) if method.needs_data else ()), *file_attrs)):
            return
        if skipped is not None:
            self.rep.skipped[m] = skipped
            return
        data = None
        if method.needs_data:
            if self.data is None:
                first = next(iter(self.splits.values()))
                self.data = first_inputs(first if wa_data is None else wa_data, what="weight adjustment (wa_data)")
                self.rep.attrs["wa_samples"] = int(self.data.shape[0])
            data = self.data
        path = method(A, B, self.model, data, **options)
        if hasattr(path, "stage1") and hasattr(path, "stage2"):  # stage by stage, as the paper reports
            _, _, acc, loss = self.staged(path)
        else:
            acc, loss = self.evaluate(path)
        for k, value_of in file_attrs.items():
            value = value_of(path)
            if value is not None:
                self.rep.attrs[k] = value
        stage = np.zeros(path.K, np.int64) if len(path.stages) == 1 else path.stage
        self.add(m, path.t, stage, acc, loss)

    def connection_model(self, name: str, A: Weights, B: Weights, nu, groups, template, t, neuron: str) -> None:
        """Row of a Flow or Bijection: :func:`~landscape.connect.flows.flow_path`, or with the
        template of an aligned pool :func:`~landscape.connect.flows.aligned_flow_path` in two
        stages, as OT."""
        if self.resumed(name):
            return
        if template is not None:
            op = aligned_flow_path(A, B, self.model, groups, nu, template, t, neuron=neuron)
            self.add(name, *self.staged(op))
        else:
            acc, loss = self.evaluate(flow_path(A, B, groups, nu, t))
            self.add(name, t.copy(), np.zeros(len(t), np.int64), acc, loss)

    def curve(self, name: str, curve, t) -> None:
        """Row of a trained curve, at the methods' ``t``."""
        if self.resumed(name):
            return
        acc, loss = self.evaluate(curve.points(t))
        self.add(name, t.copy(), np.zeros(len(t), np.int64), acc, loss)

    def finish(self) -> ConnectionReport:
        if self.out is not None:
            self.rep.attrs["complete"] = True
            self.rep.save(self.out, force=True)
        return self.rep


def _prior_report(out, rep: ConnectionReport) -> ConnectionReport:
    """The report in ``out``, once checked to be made with the settings of ``rep``: the resume
    rule of every result file (:meth:`landscape.io.ResultFile.check_compatible`): all
    attributes but those the ``connections`` kind declares not compared must be equal."""
    with open_result(out) as rf:
        if rf.kind == KIND:  # another kind: load says so
            now = dict(rep.attrs, splits=list(rep.splits))
            if "metrics" not in rf.attrs and tuple(now["metrics"]) == PATH_METRICS["classifier"]:
                del now["metrics"]  # written before the attribute existed, with these metrics
            rf.check_compatible(now)
    return ConnectionReport.load(out)
