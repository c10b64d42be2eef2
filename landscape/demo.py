"""``landscape demo``: the main job on bundled data (scikit-learn's digits), on the CPU.

Trains small seeded MLPs on digits and writes the surfaces of Li et al. (2018) and Garipov
et al. (2018) with their figures: a 1D interpolation, a filter-normalized random plane, the
plane through three checkpoints and the PCA plane of a training trajectory, a Bezier curve
(Garipov et al. 2018), the connection table of Anokhin & Yarotsky (2020) and independent,
snapshot, FGE and SWA ensembles at equal training budgets (Garipov et al. 2018, Table 1)
and the Hessian eigenvalue maps of a 7 x 7 random plane (Li et al. 2018, Figure 7), and all of
them in one HTML page, ``report.html`` (:mod:`landscape.plot.report`). The whole demo stays
under 2 minutes on 2 cores.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from .threads import single_thread as _single_thread
from .train import train_classifier

__all__ = ["run_demo", "train_classifier"]

# the demo draws these (``landscape plot FILE.h5`` draws every metric of a file)
_DEMO_FIGURE_METRICS = ("train_loss", "test_acc")


def _train_or_load(path: str, build, train, *, seed: int, epochs: int, force: bool, trajectory_dir: str | None = None):
    """Train a seeded model and save it, or reuse the checkpoint of an earlier demo."""
    from .weights import save_weights

    done = os.path.exists(path) and not force
    if trajectory_dir is not None:
        done = done and all(
            os.path.exists(os.path.join(trajectory_dir, f"epoch_{e:03d}.pt")) for e in range(epochs + 1)
        )
    if done:
        return
    torch.manual_seed(seed)
    model = build()
    if trajectory_dir is None:
        train_classifier(model, train, epochs=epochs, seed=seed)
    else:
        os.makedirs(trajectory_dir, exist_ok=True)
        save_weights(model.state_dict(), os.path.join(trajectory_dir, "epoch_000.pt"), force=True)
        for e in range(1, epochs + 1):  # one epoch at a time, saving the trajectory
            train_classifier(model, train, epochs=1, lr=0.05 * (1 - (e - 1) / epochs), seed=seed * 1000 + e)
            save_weights(model.state_dict(), os.path.join(trajectory_dir, f"epoch_{e:03d}.pt"), force=True)
    save_weights(model.state_dict(), path, force=True)


@dataclass
class _Run:
    """What every stage of the demo shares: the folder, the options, the data and the models."""

    out_dir: str
    fig_dir: str
    force: bool
    progress: bool
    model: torch.nn.Module
    weights: list
    splits: dict
    model_attrs: dict
    summary: list = field(default_factory=list)

    def attrs(self, used) -> dict:
        return {**self.model_attrs, "checkpoints": [{"path": x.source, "sha256": x.sha256} for x in used]}

    def figures(self, name: str, path: str, res=None, metrics=None) -> None:
        """Draw a file's figures (those of an earlier demo are kept unless ``force``)."""
        from .plot import plot_file

        try:
            figs = plot_file(path, self.fig_dir, formats=("png", "pdf"), metrics=metrics, force=self.force)
        except FileExistsError:
            figs = []
        self.summary.append((name, path, res, figs))

    def surface(self, name: str, plane, xs, ys, attrs: dict, splits=None, figures: bool = True):
        from .surface import compute_surface

        path = os.path.join(self.out_dir, f"{name}.h5")
        res = compute_surface(
            self.model,
            plane,
            xs,
            ys,
            splits=splits or self.splits,
            out=path,
            resume=not self.force,
            force=self.force,
            attrs=attrs,
            progress=self.progress,
        )
        if figures:
            self.figures(name, path, res, _DEMO_FIGURE_METRICS)
        return path, res


def run_demo(out_dir: str = "landscape-demo", *, force: bool = False, progress: bool = True) -> dict:
    """Run the demo; returns what was written and the headline numbers.

    Trains three seeded MLPs on digits (the first with its trajectory saved every epoch),
    then writes, with figures: the 1D interpolation between two of them, a filter-normalized
    random plane around one, the plane through all three, the PCA plane of the
    trajectory, a Bezier curve between two of them (its profile against the straight
    line and the plane through its bend), the distribution-based connections of the same
    two (:func:`~landscape.connect.compare_connections`, the Bezier curve as a row), fast
    ensembles at equal budgets and Hessian eigenvalue maps; then ``report.html``, every result
    file in one self-contained page. An earlier demo's files in
    ``out_dir`` are reused (resumed), and replaced only with ``force``.
    """
    from .data import load_data
    from .models import build_model
    from .weights import load_checkpoint

    t0 = time.perf_counter()
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"demo output '{out_dir}' is a file; expected a folder (new or of an earlier demo)")
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    train, test = load_data("digits", "train"), load_data("digits", "test")
    spec, kwargs = "mlp", {"in_features": 64, "widths": [128], "num_classes": 10}
    build = lambda: build_model(spec, kwargs)  # noqa: E731
    epochs = 12
    ckpts = [os.path.join(out_dir, f"mlp-seed{s}.pt") for s in (1, 2, 3)]
    traj_dir = os.path.join(out_dir, "trajectory-seed1")
    for s, path in zip((1, 2, 3), ckpts):
        with _single_thread():
            _train_or_load(
                path, build, train, seed=s, epochs=epochs, force=force, trajectory_dir=traj_dir if s == 1 else None
            )
    model = build()
    w = [load_checkpoint(p, model) for p in ckpts]
    traj = [load_checkpoint(os.path.join(traj_dir, f"epoch_{e:03d}.pt"), model) for e in range(epochs + 1)]
    run = _Run(
        out_dir,
        fig_dir,
        force,
        progress,
        model,
        w,
        {"train": train, "test": test},
        {"model": {"spec": spec, "kwargs": kwargs}},
    )
    _surfaces(run, traj)
    bezier = _bezier(run)
    report = _connections(run, bezier.curve)
    ensembles = _ensembles(run, train, test, epochs)
    hmap = _hessian_map(run, load_data("digits", "train", max_samples=512))
    page = _report(run)
    elapsed = time.perf_counter() - t0
    _print_summary(run, elapsed, ckpts, traj_dir, epochs, bezier, report, ensembles, hmap, page)
    return {
        "out_dir": out_dir,
        "checkpoints": ckpts,
        "files": [p for _, p, _, _ in run.summary],
        "figures": [f for *_, figs in run.summary for f in figs],
        "report": page["path"],
        "seconds": elapsed,
    }


def _surfaces(run: _Run, traj) -> None:
    """The four surfaces of Li et al. (2018): interpolation, random plane, three checkpoints, PCA."""
    from . import directions
    from .surface import auto_range

    w = run.weights
    pca = directions.pca_plane(traj)
    three = directions.three_point_plane(*w)
    grid25 = np.linspace(-1, 1, 25)
    run.surface(
        "interpolation", directions.line_through(w[0], w[1]), np.linspace(-0.5, 1.5, 41), None, run.attrs(w[:2])
    )
    run.surface("random-plane", directions.random_plane(w[0], seed=0), grid25, grid25, run.attrs(w[:1]))
    anchors = three.anchors
    run.surface(
        "three-checkpoints", three, auto_range(anchors[:, 0], 25, 0.3), auto_range(anchors[:, 1], 25, 0.3), run.attrs(w)
    )
    points = pca.arrays["trajectory"]
    attrs = run.attrs([traj[-1]])
    attrs["trajectory"] = [{"path": x.source, "sha256": x.sha256} for x in traj]
    run.surface("pca-trajectory", pca, auto_range(points[:, 0], 25, 0.3), auto_range(points[:, 1], 25, 0.3), attrs)


def _bezier(run: _Run):
    """Mode connectivity: a Bezier curve between the first two models (Garipov et al. 2018), its
    profile against the line and the plane through its bend."""
    from . import curves
    from .surface import auto_range

    w = run.weights
    curve_file = os.path.join(run.out_dir, "bezier-seed1-seed2.pt")
    curve = curves.Curve(w[0], w[1], n_bends=1, kind="bezier")
    with _single_thread():
        fit = curves.fit_curve(
            run.model,
            curve,
            run.splits["train"],
            epochs=30,
            lr=0.05,
            weight_decay=5e-4,
            seed=0,
            checkpoint=curve_file,
            resume=not run.force,
            force=run.force,
            progress=run.progress,
        )
    profile_path = os.path.join(run.out_dir, "bezier-profile.h5")
    profile = curves.evaluate_curve(
        run.model,
        curve,
        run.splits,
        points=61,
        out=profile_path,
        resume=not run.force,
        force=run.force,
        attrs=run.model_attrs,
        progress=run.progress,
    )
    cplane = curves.curve_plane(curve)
    anchors = np.concatenate([cplane.anchors, cplane.arrays["trajectory"]])
    xs, ys = auto_range(anchors[:, 0], 21, 0.2), auto_range(anchors[:, 1], 21, 0.4)
    cplane_path, cres = run.surface("bezier-plane", cplane, xs, ys, run.attrs(w[:2]), figures=False)
    run.figures("bezier-profile", profile_path, None, _DEMO_FIGURE_METRICS)
    run.figures("bezier-plane", cplane_path, None, _DEMO_FIGURE_METRICS)
    return SimpleNamespace(
        curve=curve,
        fit=fit,
        profile=profile,
        plane=cres,
        file=curve_file,
        profile_file=profile_path,
        plane_file=cplane_path,
    )


def _connections(run: _Run, curve):
    """Distribution-based connections of the same two models (Anokhin & Yarotsky 2020), next to
    the trained Bezier curve."""
    from .connect import compare_connections

    path = os.path.join(run.out_dir, "connections.h5")
    with _single_thread():
        report = compare_connections(
            run.model,
            run.weights[0],
            run.weights[1],
            run.splits,
            points=21,
            wa_data=run.splits["train"],
            curves={"Bezier (3)": curve},
            out=path,
            resume=not run.force,
            force=run.force,
            attrs=run.attrs(run.weights[:2]),
        )
    run.figures("connections", path)
    return report


def _ensembles(run: _Run, train, test, epochs: int):
    """Fast ensembles against independent networks at equal training budgets (FGE paper, Table 1)."""
    from .ensembles import EnsembleComparison, compare_ensembles, run_at_budget

    path = os.path.join(run.out_dir, "ensembles.h5")
    if os.path.exists(path) and not run.force:
        ensembles = EnsembleComparison.load(path)
    else:
        with _single_thread():
            runs = [
                run_at_budget(run.model, train, m, budget_epochs=epochs, n=3, seed=7)
                for m in ("ind", "sse", "fge", "swa")
            ]
        ensembles = compare_ensembles(run.model, runs, test)
        ensembles.attrs.update(run.model_attrs, data="digits", split="test")
        ensembles.save(path, force=True)
    run.figures("ensembles", path)
    return ensembles


def _hessian_map(run: _Run, data):
    """Hessian eigenvalue maps on a 7 x 7 version of the random plane (Li et al. 2018, Figure 7)."""
    from . import directions
    from .hessian import eigen_map

    grid = np.linspace(-1, 1, 7)
    plane = directions.random_plane(run.weights[0], seed=0)
    path, _ = run.surface(
        "hessian-plane",
        plane,
        grid,
        grid,
        run.attrs(run.weights[:1]),
        splits={"train": run.splits["train"]},
        figures=False,
    )
    with _single_thread():
        hmap = eigen_map(
            run.model,
            path,
            data,
            data_spec={"data": "digits", "split": "train", "max-samples": 512},
            force=run.force,
            progress=run.progress,
        )
    run.figures("hessian-plane", path)
    return hmap


def _report(run: _Run) -> dict:
    """Every result file of the demo in one HTML page (:func:`landscape.plot.report.write_report`),
    ``report.html`` beside the figures' folder: rewritten only when its inputs changed (an
    earlier demo's page that differs is kept unless ``force``, as the figures are)."""
    from .plot.report import write_report

    path = os.path.join(run.out_dir, "report.html")
    files = list(dict.fromkeys(p for _, p, _, _ in run.summary))
    try:
        written = write_report(files, path, title="landscape demo", force=run.force)
        state = "written" if written else "unchanged"
    except FileExistsError:
        written, state = False, "kept (an earlier demo's; --force rewrites it)"
    return {"path": path, "written": written, "state": state, "files": len(files)}


def _print_summary(run: _Run, elapsed, ckpts, traj_dir, epochs, bezier, report, ensembles, hmap, page) -> None:
    summary = run.summary
    fit, profile, cres = bezier.fit, bezier.profile, bezier.plane
    print(f"landscape demo: {run.out_dir}/ in {elapsed:.1f} s (engine path {summary[0][2].path})")
    print(f"  checkpoints: {', '.join(ckpts)}; trajectory: {traj_dir}/ ({epochs + 1} checkpoints)")
    for name, path, res, _figs in summary:
        if res is None:
            continue
        tl, vl = res["train_loss"], res["test_loss"]
        print(
            f"  {name:18s} {path}: train loss {np.nanmin(tl):.3f}..{np.nanmax(tl):.3f}, "
            f"test loss {np.nanmin(vl):.3f}..{np.nanmax(vl):.3f}, {res.evaluated} cells computed"
        )
    b = profile.barriers
    print(
        f"  bezier curve       {bezier.file} ({len(fit.history)} epochs): train-loss barrier "
        f"{b['curve']['train']:.3f} nats vs {b['line']['train']:.3f} on the line; test error max "
        f"{100 * (1 - np.nanmin(profile.curve('test_acc'))):.1f}% vs {100 * (1 - np.nanmin(profile.line('test_acc'))):.1f}% "
        f"-> {bezier.profile_file}, {bezier.plane_file} (train loss {np.nanmin(cres['train_loss']):.3f}..{np.nanmax(cres['train_loss']):.3f})"
    )
    print(f"  connections        {os.path.join(run.out_dir, 'connections.h5')}: worst accuracy (%) along each path")
    print("    " + report.markdown(stages=False).replace("\n", "\n    "))
    print(
        f"  ensembles          {os.path.join(run.out_dir, 'ensembles.h5')}: test error (%) at 3 budgets of {epochs} epochs (B = one network)"
    )
    print("    " + _budget_table(ensembles).replace("\n", "\n    "))
    r = hmap["eig_ratio"]
    print(
        f"  hessian map        {os.path.join(run.out_dir, 'hessian-plane.h5')}: 7x7 random plane, lambda_max {np.nanmin(hmap['lambda_max']):.3g}.."
        f"{np.nanmax(hmap['lambda_max']):.3g}, |lambda_min/lambda_max| {r[3, 3]:.3g} at the checkpoint, up to "
        f"{np.nanmax(r):.3g} ({hmap.computed} cells computed)"
    )
    size = os.path.getsize(page["path"]) / 1e6
    print(f"  report             {page['path']}: {page['files']} result files, {size:.2f} MB, {page['state']}")
    new = sum(len(f) for *_, f in summary) + int(page["written"])
    print(f"  figures and report: {run.fig_dir}/, {page['path']} ({new} new files)")


def _budget_table(c) -> str:
    """Error (%) of every method's ensemble at 1B, 2B, 3B from an EnsembleComparison of runs
    at ``n = 3`` (the ensemble of the members available within each budget)."""
    B = float(c.attrs["runs"][0]["budget-epochs"])
    lines = ["| Method | 1B | 2B | 3B |", "|---|---:|---:|---:|"]
    for i, label in enumerate(c.labels):
        b, a = c.per_member["budget"][i], c.per_member["cumulative_acc"][i]
        cells = []
        for n in (1, 2, 3):
            ok = np.isfinite(b) & (b <= n * B + 1e-9)
            cells.append(f"{100 * (1 - a[ok][-1]):.2f}" if ok.any() else "-")
        lines.append(f"| {label.split()[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
