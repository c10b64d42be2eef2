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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import ResultExistsError, create_result, read_connections
from ..weights import Weights
from .adjust import multilayer_wa_path, wa_path
from .matching import ot_path
from .paths import arc_path, linear_path
from .structure import structure

__all__ = ["METHODS", "ConnectionReport", "compare_connections"]

#: Connection methods known to :func:`compare_connections`, in the paper's order.
METHODS = ("linear", "arc", "linear+wa", "arc+wa", "ot", "ot+wa")

#: Row labels of the table.
_LABELS = {
    "linear": "Linear",
    "arc": "Arc",
    "linear+wa": "Linear + WA",
    "arc+wa": "Arc + WA",
    "ot": "OT",
    "ot+wa": "OT + WA",
}

KIND = "connections"
ENDPOINTS = "End points"


#: How the row labels name the two formulations of weight adjustment (:data:`WA_FORMS`).
_WA_FORM_LABELS = {"paper": "paper", "bias": "bias column"}


def _label(method: str, wa_form: str | None = None, neuron: str | None = None) -> str:
    """The row label of ``method``: WA rows name their formulation (``"Linear + WA (paper)"``,
    ``"Linear + WA (bias column)"``), OT rows matched on bias and incoming weights alone say
    so (``"OT (b, l)"``; the paper's neuron (b, l, c) is plain ``"OT"``)."""
    label = _LABELS.get(method, method)
    if method.endswith("+wa") and wa_form is not None:
        label += f" ({_WA_FORM_LABELS.get(wa_form, wa_form)})"
    elif method == "ot" and neuron == "bl":
        label += " (b, l)"
    return label


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
        ``acc[method][split]``: accuracy (fraction in ``[0, 1]``) at every point.
    endpoints : dict of str to dict of str to float
        ``endpoints[split]`` holds ``A_acc``, ``B_acc``, ``A_loss``, ``B_loss``.
    skipped : dict of str to str
        Methods not computed and why.
    attrs : dict
        Extra attributes saved with the report (points, WA batch size, ...).
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
    def ot_neuron(self) -> str:
        """The neuron OT matched on (``"blc"`` or ``"bl"``; older files: ``"bl"``)."""
        return str(self.attrs.get("ot-neuron", "bl"))

    def label(self, method: str) -> str:
        """The row label of ``method`` in this report (see :func:`_label`)."""
        return _label(method, self.wa_form, self.ot_neuron)

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
        head = "| Method | " + " | ".join(f"Worst {s} acc (%)" for s in self.splits) + " |"
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
        ``stages`` (worst accuracy per OT stage) and ``table`` (:meth:`markdown`).
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
def _inputs(data):
    """Inputs of ``wa_data``: a tensor, or all inputs of any data (a TensorData / (x, y) tuple:
    its ``x``; a loader or iterable: the single input tensor of every batch, concatenated)."""
    from ..batches import first_inputs

    return first_inputs(data, what="weight adjustment (wa_data)")


def _ot_t(t1: np.ndarray, t2: np.ndarray) -> tuple[np.ndarray, np.ndarray, slice]:
    """Joined parameters of the two OT stages, as :func:`~landscape.connect.concatenate_paths`
    maps them; returns ``(t, stage, keep)`` where ``keep`` selects stage 2's kept points."""

    def span(t):
        lo, hi = float(t[0]), float(t[-1])
        return (t - lo) / (hi - lo) if hi > lo else np.ones_like(t)

    keep = slice(1, None) if len(t2) > 1 else slice(None)
    a, b = span(t1) / 2.0, (1.0 + span(t2)[keep]) / 2.0
    stage = np.concatenate([np.ones(len(a), np.int64), np.full(len(b), 2, np.int64)])
    return np.concatenate([a, b]), stage, keep


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
) -> ConnectionReport:
    """Connect ``A`` and ``B`` by every method and find the worst point of each path.

    Parameters
    ----------
    model : nn.Module
        A plain MLP stack (two or more Linear layers, see
        :func:`~landscape.connect.linear_chain`), or a convolutional / residual network
        whose channels :func:`~landscape.connect.graph.trace_groups` can follow. WA methods
        run through transitional networks at the layers of sequential networks and at the
        cuts of residual ones (:mod:`~landscape.connect.adjust_graph`); a model neither
        can follow gets its WA rows skipped with the reason in the report.
    A, B : Weights
        The two networks.
    splits : mapping of str to data
        Data splits to evaluate on, e.g. ``{"train": train, "test": test}`` (TensorData,
        ``(x, y)`` tuples, DataLoaders or iterables of batches: :func:`landscape.evaluate`).
    methods : sequence of str
        Any of ``"linear"``, ``"arc"``, ``"linear+wa"``, ``"arc+wa"``, ``"ot"``,
        ``"ot+wa"``. On a network with one hidden layer WA methods are :func:`wa_path`; on
        deeper ones they run through the transitional networks of
        :func:`~landscape.connect.multilayer_wa_path` (``points`` per step, ``stage`` holds
        the step number).
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
    device, precision
        Passed to :func:`landscape.evaluate`.
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
    progress : bool
        Progress bars of :func:`landscape.evaluate`.
    attrs : mapping, optional
        Extra attributes stored in the file (model spec, data spec, ...).

    Returns
    -------
    ConnectionReport
    """
    from ..evaluate import evaluate

    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods has repeated names: {methods}")
    if not isinstance(splits, Mapping) or not splits:
        raise ValueError("splits should be a non-empty mapping of split name to data")
    for s in splits:
        if not isinstance(s, str) or not s or "/" in s or "." in s:
            raise ValueError(f"split names must be non-empty str without '/' or '.', got {s!r}")
    curves = dict(curves or {})
    flows = dict(connection_models or {})
    for name in flows:
        if name in METHODS or name in methods or name in curves or not name or "/" in name or "." in name:
            raise ValueError(f"connection model names must be new labels without '/' or '.', got {name!r}")
    for name, curve in curves.items():
        if name in METHODS or name in methods or not name or "/" in name or "." in name:
            raise ValueError(f"curve names must be new labels without '/' or '.', got {name!r}")
        for end, w, which in ((curve.start, A, "A"), (curve.end, B, "B")):
            if not torch.allclose(end.flatten(torch.float64), w.flatten(torch.float64), rtol=1e-6, atol=1e-7):
                raise ValueError(f"curve {name!r} does not {'start' if which == 'A' else 'end'} at {which}")
    if int(points) < 2:
        raise ValueError(f"points should be at least 2, got {points}")
    if resume and force:
        raise ValueError("resume and force contradict each other; pass one")
    exists = out is not None and os.path.lexists(os.fspath(out))
    if exists and not (force or resume):
        raise ResultExistsError(f"{os.fspath(out)} exists; pass resume=True to continue it or force=True to replace it")
    split_names = list(splits)
    from .adjust import check_form
    from .matching import check_neuron

    check_form(wa_form)
    check_neuron(neuron)
    wa_error = None  # why weight adjustment cannot run on this model (residual networks)
    if any(m.endswith("+wa") for m in methods):
        from .adjust import NotSequentialError, wa_layer_count
        from .structure import UnsupportedModelError

        try:
            wa_layers = wa_layer_count(model)
        except UnsupportedModelError as e:
            try:  # residual networks: transitional networks at the graph's cuts
                from .adjust_graph import wa_cuts

                wa_layers = len(wa_cuts(model))
                if wa_form != "bias":  # the paper has no residual form: ours, labelled as such
                    warnings.warn(
                        f"wa_form={wa_form!r}: residual networks are adjusted at the cuts of their graph with a "
                        f"bias column only; the WA rows use wa_form='bias' and say so",
                        UserWarning,
                        stacklevel=2,
                    )
                    wa_form = "bias"
            except UnsupportedModelError as e2:
                why = e2 if isinstance(e, NotSequentialError) else e
                wa_error = f"weight adjustment cannot follow this model: {str(why).splitlines()[0]}"
    chain = structure(model).chain
    n_linear = len(chain.names) if chain is not None else 0
    groups = None
    if chain is None:  # convolutional / residual networks: channel groups (clear error if untraceable)
        from .graph import trace_groups

        groups = trace_groups(model)
    t = np.linspace(0.0, 1.0, int(points))
    X = None

    def run(pts) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        acc, loss = {}, {}
        for s, data in splits.items():
            r = evaluate(
                model,
                pts,
                data,
                metrics=("loss", "acc"),
                bn=bn,
                bn_data=bn_data if bn_data is not None else (data if bn != "running" else None),
                device=device,
                precision=precision,
                progress=progress,
            )
            acc[s], loss[s] = np.asarray(r["acc"], np.float64), np.asarray(r["loss"], np.float64)
        return acc, loss

    rep = ConnectionReport(
        methods=methods + list(flows) + list(curves),
        splits=split_names,
        attrs={
            "points": int(points),
            "linear_layers": n_linear,
            "groups": [g.name for g in groups] if groups is not None else [],
            "bn": bn,
            "ridge": float(ridge),
            "wa-form": wa_form,
            "ot-neuron": neuron,
            "A-sha256": A.sha256 or "",
            "B-sha256": B.sha256 or "",
            **dict(attrs or {}),
        },
    )
    prior = _prior_report(out, rep) if (exists and resume) else None

    def done(m: str) -> bool:
        """Take ``m`` from the earlier file if it is there; else False."""
        if prior is None or m not in prior.computed:
            return False
        for d in ("t", "stage", "acc", "loss"):
            getattr(rep, d)[m] = getattr(prior, d)[m]
        for k in ("wa_samples", "wa_steps", "ot_swaps"):
            if k in prior.attrs and (m.endswith("+wa") or m == "ot"):
                rep.attrs.setdefault(k, prior.attrs[k])
        return True

    def checkpoint() -> None:
        """Write what is finished so far (an interrupted run resumes from it)."""
        if out is not None:
            partial = dict(rep.attrs, complete=False, planned=list(rep.methods))  # `landscape info` counts
            finished = [m for m in rep.methods if m in rep.acc]
            ConnectionReport(
                methods=finished,
                splits=rep.splits,
                t=rep.t,
                stage=rep.stage,
                acc=rep.acc,
                loss=rep.loss,
                endpoints=rep.endpoints,
                attrs=partial,
            ).save(out, force=True)

    acc, loss = run([A, B])
    for s in split_names:
        rep.endpoints[s] = {
            "A_acc": float(acc[s][0]),
            "B_acc": float(acc[s][1]),
            "A_loss": float(loss[s][0]),
            "B_loss": float(loss[s][1]),
        }

    for m in methods:
        if done(m):
            continue
        base, wa = m.split("+")[0], m.endswith("+wa")
        if wa and wa_error is not None:
            rep.skipped[m] = wa_error
            continue
        if wa:
            if X is None:
                X = _inputs(splits[split_names[0]] if wa_data is None else wa_data)
                rep.attrs["wa_samples"] = int(X.shape[0])
            if wa_layers == 2:
                tm, pts = wa_path(A, B, model, X, t, method=base, wa_form=wa_form, ridge=ridge, snap_ends=True)
                tm = np.asarray(tm, np.float64)
                stage = np.zeros(len(tm), np.int64)
                if base == "ot" or wa_form == "paper":  # OT stages or the paper's two phases
                    stage = np.where(tm <= 0.5, 1, 2).astype(np.int64)
            else:
                tm, pts, bounds = multilayer_wa_path(
                    A, B, model, X, t, method=base, wa_form=wa_form, ridge=ridge, snap_ends=True
                )
                tm = np.asarray(tm, np.float64)
                # step k covers [bounds[k-1], bounds[k]]; a joint belongs to the step it ends
                steps = len(bounds) - 1
                stage = np.clip(np.searchsorted(bounds, tm, side="left"), 1, steps).astype(np.int64)
                rep.attrs["wa_steps"] = steps
            rep.acc[m], rep.loss[m] = run(pts)
        elif base == "ot":
            op = ot_path(A, B, model, t, neuron=neuron)
            a1, l1 = run(op.stage1)
            a2, l2 = run(op.stage2)
            tm, stage, keep = _ot_t(np.asarray(op.t1), np.asarray(op.t2))
            rep.acc[m] = {s: np.concatenate([a1[s], a2[s][keep]]) for s in split_names}
            rep.loss[m] = {s: np.concatenate([l1[s], l2[s][keep]]) for s in split_names}
            rep.attrs.setdefault("ot_swaps", len(op.swaps))
        else:
            pts = linear_path(A, B, t) if base == "linear" else arc_path(A, B, model, t)
            tm, stage = t.copy(), np.zeros(len(t), np.int64)
            rep.acc[m], rep.loss[m] = run(pts)
        rep.t[m], rep.stage[m] = tm, stage
        checkpoint()

    for name, (nu, groups_of_flows, *template) in flows.items():
        if done(name):
            continue
        from .flows import aligned_flow_path, flow_path

        if template and template[0] is not None:  # flows of an aligned pool: two stages, as OT
            op = aligned_flow_path(A, B, model, groups_of_flows, nu, template[0], t, neuron=neuron)
            a1, l1 = run(op.stage1)
            a2, l2 = run(op.stage2)
            tm, stage, keep = _ot_t(np.asarray(op.t1), np.asarray(op.t2))
            rep.acc[name] = {s: np.concatenate([a1[s], a2[s][keep]]) for s in split_names}
            rep.loss[name] = {s: np.concatenate([l1[s], l2[s][keep]]) for s in split_names}
            rep.t[name], rep.stage[name] = tm, stage
        else:
            rep.acc[name], rep.loss[name] = run(flow_path(A, B, groups_of_flows, nu, t))
            rep.t[name], rep.stage[name] = t.copy(), np.zeros(len(t), np.int64)
        checkpoint()

    for name, curve in curves.items():
        if done(name):
            continue
        rep.acc[name], rep.loss[name] = run(curve.points(t))
        rep.t[name], rep.stage[name] = t.copy(), np.zeros(len(t), np.int64)
        checkpoint()

    if out is not None:
        rep.attrs["complete"] = True
        rep.save(out, force=True)
    return rep


def _prior_report(out, rep: ConnectionReport) -> ConnectionReport:
    """The report in ``out``, once checked to be made with the settings of ``rep``: the resume
    rule of every result file (:meth:`landscape.io.ResultFile.check_compatible`): all
    attributes but those the ``connections`` kind declares not compared must be equal."""
    from ..io import open_result

    with open_result(out) as rf:
        if rf.kind == KIND:  # another kind: load says so
            rf.check_compatible(dict(rep.attrs, splits=list(rep.splits)))
    return ConnectionReport.load(out)
