"""Surfaces: values at known points, files, resume, and torchrun sharding."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import landscape as ls
from landscape import directions as D

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _models(spec, kwargs, n, seed=0):
    out = []
    for i in range(n):
        torch.manual_seed(seed + i)
        out.append(ls.build_model(spec, kwargs))
    return out


def test_three_checkpoints_sit_at_their_coordinates():
    kw = {"in_features": 64, "widths": [24]}
    models = _models("mlp", kw, 3)
    w = [ls.Weights.from_module(m) for m in models]
    plane = D.three_point_plane(*w)
    A = plane.anchors
    xs = np.sort(np.array([0.0, A[1, 0], A[2, 0], -0.3]))
    ys = np.array([0.0, A[2, 1], 0.5 * A[2, 1]])
    test = ls.load_data("digits", "test")
    res = ls.compute_surface(models[0], plane, xs, ys, splits={"test": test}, precision="fp64", progress=False)
    direct = ls.evaluate(models[0], w, test, precision="fp64", progress=False)
    for k, (ax, ay) in enumerate(A):
        i, j = int(np.argmin(np.abs(xs - ax))), int(np.argmin(np.abs(ys - ay)))
        assert res["test_loss"][i, j] == pytest.approx(direct["loss"][k], rel=1e-12)
        assert res["test_acc"][i, j] == direct["acc"][k]


def test_random_plane_centre_equals_checkpoint_and_file_roundtrip(tmp_path):
    models = _models("convfc", {"in_channels": 1, "input_size": 8}, 1)
    w = ls.Weights.from_module(models[0])
    plane = D.random_plane(w, seed=4)
    data = ls.load_data("digits:image", "test", max_samples=120)
    out = tmp_path / "p.h5"
    res = ls.compute_surface(
        models[0],
        plane,
        [-0.5, 0.0, 0.5],
        [-0.5, 0.0, 0.5, 1.0],
        splits={"test": data},
        out=out,
        progress=False,
        attrs={"note": "x"},
    )
    direct = ls.evaluate(models[0], w, data, progress=False)
    assert res["test_loss"][1, 1] == pytest.approx(direct["loss"][0], rel=1e-6)
    with ls.open_result(out) as f:
        assert f.kind == "plane" and f.shape == (3, 4) and f.done.all()
        np.testing.assert_array_equal(f.read_metric("test_loss"), res["test_loss"])
        np.testing.assert_array_equal(f.read_array("y"), [-0.5, 0.0, 0.5, 1.0])
        assert f.attrs["surface-type"] == "random" and f.attrs["norm"] == "filter"
        basis = f.read_array("basis")
        # the directions are in the file: the surface can be recomputed from it alone
        torch.testing.assert_close(torch.from_numpy(basis[1]), plane.basis[1].flatten())
    # resume of a complete file computes nothing; a different grid is refused
    again = ls.compute_surface(
        models[0],
        plane,
        [-0.5, 0.0, 0.5],
        [-0.5, 0.0, 0.5, 1.0],
        splits={"test": data},
        out=out,
        resume=True,
        progress=False,
        attrs={"note": "x"},
    )
    assert again.evaluated == 0
    with pytest.raises(ls.ResultFileError):
        ls.compute_surface(
            models[0],
            plane,
            [-0.5, 0.5],
            [0.0],
            splits={"test": data},
            out=out,
            resume=True,
            progress=False,
            attrs={"note": "x"},
        )


def test_partial_file_resumes_only_missing_cells(tmp_path):
    models = _models("mlp", {"in_features": 64, "widths": [16]}, 2)
    plane = D.line_through(*[ls.Weights.from_module(m) for m in models])
    test = ls.load_data("digits", "test")
    xs = np.linspace(-0.5, 1.5, 9)
    full = ls.compute_surface(models[0], plane, xs, splits={"test": test}, progress=False)
    out = tmp_path / "l.h5"
    ls.compute_surface(models[0], plane, xs, splits={"test": test}, out=out, progress=False)
    with ls.open_result(out, "r+") as f:  # forget three cells, as a killed run would
        f._h5["done"][[1, 4, 7]] = 0
        f._h5["metrics/test_loss"][[1, 4, 7]] = np.nan
    res = ls.compute_surface(models[0], plane, xs, splits={"test": test}, out=out, resume=True, progress=False)
    assert res.evaluated == 3
    np.testing.assert_allclose(res["test_loss"], full["test_loss"], rtol=1e-6)


def test_parse_range_errors():
    assert ls.parse_range("0:1:3").tolist() == [0.0, 0.5, 1.0]
    for bad in ("1:0:5", "a:b:c", "0:1", "0:1:0"):
        with pytest.raises(ValueError, match="range"):
            ls.parse_range(bad)


def _surface_args(tmp_path, kw, n_ckpt=1, extra=(), samples=200, grid=4):
    paths = []
    for i, m in enumerate(_models("resnet20", kw, n_ckpt)):
        p = tmp_path / f"r{i}.pt"
        torch.save(m.state_dict(), p)
        paths.append(str(p))
    args = [
        "-m",
        "landscape",
        "surface",
        "--model",
        "resnet20",
        "--model-kwargs",
        json.dumps(kw),
        "--data",
        "digits:image",
        "--max-samples",
        str(samples),
        f"--x=-1:1:{grid}",
        f"--y=-1:1:{grid}",
        "--path",
        "loop",
        "--points-per-pass",
        "1",
        "--no-progress",
        *extra,
    ]
    for p in paths:
        args += ["--ckpt", p]
    return args


def _torchrun(nproc):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def test_torchrun_two_processes_equal_one_process(tmp_path):
    args = _surface_args(tmp_path, {"in_channels": 1, "num_classes": 10})
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    subprocess.run(
        [sys.executable, *args, "--out", str(one)], check=True, env=_env(), cwd=tmp_path, capture_output=True
    )
    r = subprocess.run(
        _torchrun(2) + args + ["--out", str(two)], env=_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    with ls.open_result(one) as a, ls.open_result(two) as b:
        assert a.done.all() and b.done.all()
        for n in a.metrics:
            np.testing.assert_allclose(b.read_metric(n), a.read_metric(n), rtol=1e-6, atol=0)
        for n in a.array_names():
            np.testing.assert_array_equal(a.read_array(n), b.read_array(n))
        skip = ("created", "finished", "elapsed-s")
        assert {k: v for k, v in a.attrs.items() if k not in skip} == {
            k: v for k, v in b.attrs.items() if k not in skip
        }


def _done(path):
    try:
        with ls.open_result(path) as f:
            return int(f.done.sum())
    except (ls.ResultFileError, OSError):
        return -1


def test_killed_torchrun_job_completes_with_resume(tmp_path):
    args = _surface_args(
        tmp_path, {"in_channels": 1, "num_classes": 10}, extra=("--bn", "recompute"), samples=1000, grid=5
    )
    out = tmp_path / "k.h5"
    proc = subprocess.Popen(
        _torchrun(2) + args + ["--out", str(out)],
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and _done(out) < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the job finished before it could be killed"
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert workers
    os.kill(int(workers[-1]), signal.SIGKILL)  # one rank dies: torchrun stops the group
    proc.wait(timeout=60)
    assert proc.returncode != 0
    partial = _done(out)
    assert 2 <= partial < 25
    r = subprocess.run(
        _torchrun(2) + args + ["--out", str(out), "--resume"], env=_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{25 - partial} cell(s) computed" in r.stdout
    ref = tmp_path / "ref.h5"
    subprocess.run(
        [sys.executable, *args, "--out", str(ref)], check=True, env=_env(), cwd=tmp_path, capture_output=True
    )
    with ls.open_result(ref) as a, ls.open_result(out) as b:
        assert b.done.all()
        for n in a.metrics:
            np.testing.assert_allclose(b.read_metric(n), a.read_metric(n), rtol=1e-6, atol=0)


def test_cli_surface_types(tmp_path, capsys):
    from landscape.cli import main

    kw = {"in_features": 64, "widths": [16]}
    paths = []
    for i, m in enumerate(_models("mlp", kw, 3)):
        paths.append(str(tmp_path / f"m{i}.pt"))
        torch.save(m.state_dict(), paths[-1])
    base = ["surface", "--model", "mlp", "--model-kwargs", json.dumps(kw), "--data", "digits", "--no-progress"]
    assert main(base + ["--ckpt", paths[0], "--x", "-1:1:3", "--out", str(tmp_path / "a.h5")]) == 0
    assert main(base + ["--ckpt", paths[0], "--ckpt", paths[1], "--out", str(tmp_path / "b.h5")]) == 0
    assert (
        main(
            base
            + [
                "--ckpt",
                paths[0],
                "--ckpt",
                paths[1],
                "--ckpt",
                paths[2],
                "--x",
                "-1:1:3",
                "--out",
                str(tmp_path / "c.h5"),
            ]
        )
        == 0
    )
    with ls.open_result(tmp_path / "b.h5") as f:
        assert f.kind == "line" and f.shape == (41,) and f.read_array("x")[0] == -0.5
    with ls.open_result(tmp_path / "c.h5") as f:
        assert f.attrs["surface-type"] == "three-checkpoints" and f.shape == (3, 3)
    capsys.readouterr()
    assert (
        main(base + ["--ckpt", paths[0], "--ckpt", paths[1], "--type", "plane", "--out", str(tmp_path / "d.h5")]) == 2
    )
    assert "--type plane needs 1 --ckpt, got 2" in capsys.readouterr().err


def _with_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kind", ["three-point", "pca"])
def test_three_point_and_pca_files_resume_under_another_thread_count(tmp_path, kind):
    # torchrun sets OMP_NUM_THREADS=1: a file written with 2 threads must resume with 1
    from landscape.surface import auto_range

    kw = {"in_features": 64, "widths": [512, 256]}  # 167k parameters: reductions split between threads
    models = _models("mlp", kw, 6, seed=40)
    weights = [ls.Weights.from_module(m) for m in models]
    test = ls.load_data("digits", "test", max_samples=40)
    out = tmp_path / f"{kind}.h5"

    def run(resume):
        plane = D.three_point_plane(*weights[:3]) if kind == "three-point" else D.pca_plane(weights)
        pts = plane.anchors if kind == "three-point" else plane.arrays["trajectory"]
        xs, ys = auto_range(pts[:, 0], 3), auto_range(pts[:, 1], 2)
        return ls.compute_surface(
            models[0], plane, xs, ys, splits={"test": test}, out=out, resume=resume, progress=False
        )

    full = _with_threads(2, lambda: run(False))
    with ls.open_result(out, "r+") as f:  # forget two cells, as a killed run would
        for cell in ((0, 1), (2, 0)):
            f._h5["done"][cell] = 0
            f._h5["metrics/test_loss"][cell] = np.nan
    again = _with_threads(1, lambda: run(True))
    assert again.evaluated == 2
    np.testing.assert_allclose(again["test_loss"], full["test_loss"], rtol=1e-6)


def test_cli_pca_plane_is_the_same_with_the_final_checkpoint_given_again(tmp_path):
    from landscape.cli import main

    kw = {"in_features": 64, "widths": [16]}
    folder = tmp_path / "run"
    folder.mkdir()
    for i, m in enumerate(_models("mlp", kw, 5, seed=50)):
        torch.save(m.state_dict(), folder / (f"epoch_{i}.pt" if i < 4 else "last.pt"))
    base = ["surface", "--model", "mlp", "--model-kwargs", json.dumps(kw), "--data", "digits", "--no-progress"]
    base += ["--splits", "test", "--trajectory", str(folder), "--x", "-1:1:2", "--y", "-1:1:2"]
    assert main(base + ["--out", str(tmp_path / "a.h5")]) == 0
    assert main(base + ["--ckpt", str(folder / "last.pt"), "--out", str(tmp_path / "b.h5")]) == 0
    with ls.open_result(tmp_path / "a.h5") as a, ls.open_result(tmp_path / "b.h5") as b:
        for name in ("basis", "trajectory", "explained-variance-ratio"):
            np.testing.assert_array_equal(a.read_array(name), b.read_array(name))
        assert a.read_array("trajectory").shape == (5, 2) and np.all(a.read_array("trajectory")[-1] == 0)
