"""Eigenvalue maps of a surface file against dense Hessians at its cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import landscape as ls
from landscape import hessian as H

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dense_extremes(model, tensors, x, y):
    """Smallest and largest eigenvalue of the dense Hessian of the mean cross-entropy over the
    parameters, in float64."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [tensors[n].shape for n in names]
    flat0 = torch.cat([tensors[n].reshape(-1).double() for n in names])
    rest = {k: v.double() if v.is_floating_point() else v for k, v in tensors.items() if k not in names}

    def loss(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            parts[n] = flat[i : i + k].view(s)
            i += k
        return F.cross_entropy(functional_call(model.double(), {**parts, **rest}, (x.double(),)), y)

    ev = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat0))
    return float(ev[0]), float(ev[-1])


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"in_features": 64, "widths": [6], "num_classes": 10})
    w = ls.Weights.from_module(model)
    train = ls.load_data("digits", "train", max_samples=96)
    path = tmp_path_factory.mktemp("map") / "plane.h5"
    ls.compute_surface(
        model,
        ls.directions.random_plane(w, seed=1),
        np.linspace(-1, 1, 3),
        np.linspace(-1, 1, 3),
        splits={"train": train},
        out=path,
        progress=False,
    )
    return model, w, train, path


def test_map_equals_dense_eigenvalues_at_every_cell_and_the_centre_is_the_checkpoint(plane):
    model, w, train, path = plane
    res = H.eigen_map(model, path, train, tol=1e-10, max_iter=200, points_per_pass=4, dtype="fp64", progress=False)
    assert res.computed == 9 and res.shape == (3, 3)
    pts, _ = H.surface_points(model, path)
    for k in (0, 4, 8):
        lo, hi = _dense_extremes(
            ls.build_model("mlp", {"in_features": 64, "widths": [6]}), pts.point(k), train.x, train.y
        )
        i, j = np.unravel_index(k, (3, 3))
        assert res["lambda_max"][i, j] == pytest.approx(hi, rel=1e-6)
        assert res["lambda_min"][i, j] == pytest.approx(lo, rel=1e-6, abs=1e-9)
        assert res["eig_ratio"][i, j] == pytest.approx(abs(lo / hi), rel=1e-5)
    # the centre cell (0, 0) of a random plane is the checkpoint itself
    op = H.HVP(model, w, train, dtype="fp64")
    single = H.lanczos(op, tol=1e-10, max_iter=200)
    assert res["lambda_max"][1, 1] == pytest.approx(single.lambda_max, rel=1e-9)
    assert res["lambda_min"][1, 1] == pytest.approx(single.lambda_min, rel=1e-9)
    with ls.open_result(path) as f:  # written into the surface file, beside its metrics
        assert {"train_loss", "lambda_max", "eig_ratio"} <= set(f.metrics)
        assert f.attrs["hessian-map"]["tol"] == 1e-10


def test_map_resumes_missing_cells_and_refuses_other_settings(plane, tmp_path):
    import shutil

    model, _, train, path = plane
    copy = tmp_path / "copy.h5"
    shutil.copy(path, copy)
    full = H.eigen_map(model, copy, train, tol=1e-4, max_iter=60, points_per_pass=3, force=True, progress=False)
    assert full.computed == 9
    with ls.open_result(copy, "r+") as f:  # as if killed before the last two cells
        f.set_metric_cells("lambda_max", [7, 8], [np.nan, np.nan])
        before = f.read_metric("lambda_min").copy()
    again = H.eigen_map(model, copy, train, tol=1e-4, max_iter=60, points_per_pass=3, progress=False)
    assert again.computed == 2
    np.testing.assert_allclose(again["lambda_max"], full["lambda_max"], rtol=1e-6)
    np.testing.assert_array_equal(again["lambda_min"].reshape(-1)[:7], before.reshape(-1)[:7])
    with pytest.raises(ValueError, match="tol = 0.0001, not 0.01"):
        H.eigen_map(model, copy, train, tol=1e-2, max_iter=60, progress=False)
    redone = H.eigen_map(model, copy, train, tol=1e-2, force=True, progress=False)
    assert redone.computed == 9
    # the surface itself still resumes (its maps were added after it was made)
    w = ls.Weights.from_module(model)
    grid = np.linspace(-1, 1, 3)
    again = ls.compute_surface(
        model,
        ls.directions.random_plane(w, seed=1),
        grid,
        grid,
        splits={"train": train},
        out=copy,
        resume=True,
        progress=False,
    )
    assert again.evaluated == 0 and np.isfinite(again["train_loss"]).all()


def test_map_streams_loader_batches_and_records_the_selection(plane, tmp_path):
    import copy as copylib
    import shutil

    from torch.utils.data import DataLoader, TensorDataset

    model, w, train, path = plane
    opts = dict(tol=1e-10, max_iter=200, points_per_pass=5, dtype="fp64", progress=False, force=True)
    mem_path, stream_path = tmp_path / "mem.h5", tmp_path / "stream.h5"
    shutil.copy(path, mem_path)
    shutil.copy(path, stream_path)
    mem = H.eigen_map(model, mem_path, train, **opts)
    loader = DataLoader(TensorDataset(train.x, train.y), batch_size=25)  # 96 samples: 25, 25, 25, 21
    streamed = H.eigen_map(model, stream_path, loader, **opts)
    np.testing.assert_allclose(streamed["lambda_max"], mem["lambda_max"], rtol=1e-9)
    np.testing.assert_allclose(streamed["lambda_min"], mem["lambda_min"], rtol=1e-8, atol=1e-12)
    names = [n for n, _ in model.named_parameters()]
    with ls.open_result(stream_path) as f:
        settings = f.attrs["hessian-map"]
    assert settings["selection"]["rule"] == "requires_grad" and settings["selection"]["names"] == names
    assert settings["samples"] == 96 and settings["loss"] == "loss"
    # a frozen first layer leaves the map's Hessian over the last layer only, and says so
    frozen = copylib.deepcopy(model)
    for p in list(frozen.parameters())[:2]:
        p.requires_grad_(False)
    last = [n for n, p in frozen.named_parameters() if p.requires_grad]
    res = H.eigen_map(frozen, stream_path, loader, **opts)
    assert res.settings["selection"]["names"] == last and len(last) == 2
    op = H.HVP(model, w, train, params=last, dtype="fp64")
    assert res["lambda_max"][1, 1] == pytest.approx(H.lanczos(op, tol=1e-10, max_iter=200).lambda_max, rel=1e-9)


def test_map_refuses_a_model_that_does_not_fit(plane):
    _, _, train, path = plane
    other = ls.build_model("mlp", {"in_features": 64, "widths": [7], "num_classes": 10})
    with pytest.raises(ValueError, match="this model has"):
        H.eigen_map(other, path, train, progress=False)


# ---------------------------------------------------------------------------- the command
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from landscape.cli import main  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KW = {"in_features": 64, "widths": [8], "num_classes": 10}
COMMON = ["--model", "mlp", "--model-kwargs", json.dumps(KW), "--data", "digits", "--max-samples", "96"]


def _ckpt(tmp_path):
    torch.manual_seed(3)
    model = ls.build_model("mlp", KW)
    path = str(tmp_path / "m.pt")
    ls.save_weights(model.state_dict(), path)
    return model, path


def test_cli_eig_trace_density_and_bad_input(tmp_path, capsys):
    model, ckpt = _ckpt(tmp_path)
    train = ls.load_data("digits", "train", max_samples=96)
    ref = H.lanczos(H.HVP(model, ls.Weights.from_module(model), train), tol=1e-3, max_iter=50)
    assert main(["hessian", "eig", *COMMON, "--ckpt", ckpt]) == 0
    assert f"lambda_max {ref.lambda_max:.6g}" in capsys.readouterr().out
    assert main(["hessian", "trace", *COMMON, "--ckpt", ckpt, "--samples", "20"]) == 0
    est = H.hutchinson(H.HVP(model, ls.Weights.from_module(model), train), samples=20)
    assert f"trace {est.estimate:.6g}" in capsys.readouterr().out
    fig = tmp_path / "d.png"
    assert (
        main(["hessian", "density", *COMMON, "--ckpt", ckpt, "--probes", "2", "--steps", "5", "--out", str(fig)]) == 0
    )
    assert fig.exists() and f"-> {fig}, {tmp_path / 'd.h5'}" in capsys.readouterr().out
    saved = H.SpectralDensity.load(tmp_path / "d.h5")  # kind hessian-density
    assert saved.nodes.shape == (2, 5) and saved.selection["count"] == 4
    assert main(["hessian", "density", *COMMON, "--ckpt", ckpt, "--out", str(fig)]) == 2
    assert "--force" in capsys.readouterr().err
    for extra, fragment in (
        (["--params", "nope"], "--params 'nope' is neither"),
        (["--max-iter", "0"], "--max-iter 0"),
    ):
        assert main(["hessian", "eig", *COMMON, "--ckpt", ckpt, *extra]) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1, err
    # a module name selects its parameters: the block of the last layer alone
    assert main(["hessian", "eig", *COMMON, "--ckpt", ckpt, "--params", "3"]) == 0
    block = H.lanczos(H.HVP(model, ls.Weights.from_module(model), train, params=["3.weight", "3.bias"]), tol=1e-3)
    assert f"lambda_max {block.lambda_max:.6g}" in capsys.readouterr().out


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_cli_map_sharded_over_two_ranks_equals_one_process(tmp_path):
    model, _ = _ckpt(tmp_path)
    plane = ls.directions.random_plane(ls.Weights.from_module(model), seed=0)
    train = ls.load_data("digits", "train", max_samples=96)
    for name in ("one.h5", "two.h5"):
        grid = np.linspace(-1, 1, 3)
        ls.compute_surface(model, plane, grid, grid, splits={"train": train}, out=tmp_path / name, progress=False)
    hess = ["-m", "landscape", "hessian", "map", *COMMON, "--points-per-pass", "2", "--no-progress"]
    assert main([*hess[2:], str(tmp_path / "one.h5"), "--plot"]) == 0
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *hess, "two.h5"]
    r = subprocess.run(run, env=_env(), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    with ls.open_result(tmp_path / "one.h5") as a, ls.open_result(tmp_path / "two.h5") as b:
        assert np.isfinite(a.read_metric("lambda_max")).all()
        for m in H.MAP_METRICS:
            np.testing.assert_allclose(b.read_metric(m), a.read_metric(m), rtol=1e-5)
    assert (tmp_path / "one-hessian.png").exists()
