"""Sizes checked before work (issue 17): output files above 2 GB and runs needing more memory
than the machine has are refused in seconds, writing nothing, unless allow_large=True (CLI:
--allow-large); synthetic data is sized before it is generated; long runs print an ETA."""

import io as stdio
import os
import time

import numpy as np
import pytest
import torch

import landscape as ls
from landscape import budget
from landscape.budget import TooLargeError
from landscape.cli import build_parser, main

MLP = {"in_features": 64, "widths": [16]}


def _mlp():
    torch.manual_seed(0)
    return ls.build_model("mlp", MLP)


def _plane(model):
    return ls.directions.random_plane(ls.Weights.from_module(model), seed=1)


def _test_data():
    return ls.load_data("digits", "test", max_samples=20)


# ------------------------------------------------------------------------ the output file


def test_a_10000_by_10000_surface_is_refused_in_seconds_writing_nothing(tmp_path, folder_state):
    """The repro: it allocated about 10 GB and wrote a 5.7 GB file before its first cell."""
    model = _mlp()
    (tmp_path / "keep.txt").write_text("before")
    before = folder_state(tmp_path)
    xs = np.linspace(-1, 1, 10000)
    plane, splits = _plane(model), {"train": _test_data(), "test": _test_data()}
    t0 = time.perf_counter()
    with pytest.raises(TooLargeError) as info:
        ls.compute_surface(model, plane, xs, xs, splits=splits, out=tmp_path / "big.h5", progress=False)
    assert time.perf_counter() - t0 < 5
    message = str(info.value)
    # 4 metrics x 8 bytes + 1 done byte + 3 coefficients x 8 bytes per cell = 57 bytes per cell
    assert "would take 5.7 GB on disk" in message and "above the 2 GB limit" in message
    assert "allow_large=True" in message and "--allow-large" in message and "\n" not in message
    assert folder_state(tmp_path) == before


def test_output_size_is_the_sum_of_its_datasets():
    parts = ls.io.result_file_bytes((30, 40), ["a", "b", "c"], {"x": np.zeros(30), "basis": 1000})
    assert sum(parts.values()) == 30 * 40 * (3 * 8 + 1) + 30 * 8 + 1000


def test_create_result_refuses_above_the_limit_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "MAX_OUTPUT_BYTES", 1000)
    path = tmp_path / "r.h5"
    with pytest.raises(TooLargeError, match=r"result file '.*r\.h5' would take 1.01 kB on disk"):
        ls.io.create_result(path, kind="eval", shape=(112,), metrics=["loss"], attrs={})
    assert os.listdir(tmp_path) == []  # no file, no temporary file
    ls.io.create_result(path, kind="eval", shape=(112,), metrics=["loss"], attrs={}, allow_large=True).close()
    assert path.exists()
    with budget.allowing_large(True):
        ls.io.create_result(tmp_path / "s.h5", kind="eval", shape=(112,), metrics=["loss"], attrs={}).close()
    assert (tmp_path / "s.h5").exists()
    assert not budget.large_allowed()  # the block ended


def test_surface_allow_large_writes_what_the_check_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "MAX_OUTPUT_BYTES", 2000)
    model = _mlp()
    kwargs = dict(splits={"test": _test_data()}, progress=False)
    with pytest.raises(TooLargeError):
        ls.compute_surface(model, _plane(model), [-1, 0, 1], [-1, 0, 1], out=tmp_path / "s.h5", **kwargs)
    assert os.listdir(tmp_path) == []
    res = ls.compute_surface(
        model, _plane(model), [-1, 0, 1], [-1, 0, 1], out=tmp_path / "s.h5", allow_large=True, **kwargs
    )
    assert res.evaluated == 9 and os.path.getsize(tmp_path / "s.h5") > 2000


# ------------------------------------------------------------------------ memory


def test_a_run_needing_more_memory_than_available_is_refused(monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda device=None: 10_000_000)
    model = _mlp()
    xs = np.linspace(-1, 1, 300)
    with pytest.raises(TooLargeError) as info:
        ls.compute_surface(model, _plane(model), xs, xs, splits={"test": _test_data()}, progress=False)
    message = str(info.value)
    assert message.startswith("a 300 x 300 random surface would need about")
    # 90000 cells: coefficients 2 x 90000 x 3 x 8 + 2 x 90000 x 8 (and the grid coordinates),
    # results: (2 metrics x 2 + 2) x 90000 x 8
    assert "coefficients 5.76 MB, results 4.32 MB" in message
    assert "10 MB available on the host; pass allow_large=True (CLI: --allow-large)" in message


def test_check_memory_counts_what_is_held_as_already_allocated(monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda device=None: 1000)
    assert budget.check_memory({"data": 5000, "new": 900}, "x", held=5000) == 5900
    with pytest.raises(TooLargeError, match=r"x would need about 6.1 kB of memory \(data 5 kB, new 1.1 kB\), 6 kB"):
        budget.check_memory({"data": 5000, "new": 1100}, "x", held=5000)
    assert budget.check_memory({"new": 10**12}, "x", allow_large=True) == 10**12


def test_available_memory_reads_the_host():
    with open("/proc/meminfo") as f:
        line = next(t for t in f if t.startswith("MemAvailable:"))
    expected = int(line.split()[1]) * 1024
    assert abs(budget.available_memory() - expected) < 0.2 * expected


# ------------------------------------------------------------------------ synthetic data


def test_synthetic_data_is_sized_before_it_is_generated():
    """A spec of 1e8 samples grew until memory ran out."""
    t0 = time.perf_counter()
    with pytest.raises(TooLargeError) as info:
        ls.load_data("synthetic:cifar10:n=100000000", "train")
    assert time.perf_counter() - t0 < 5
    message = str(info.value)
    # 1e8 x (3 x 32 x 32 x 4 + 8) bytes, twice
    assert "'synthetic:cifar10:n=100000000' (100000000 samples of shape 3x32x32)" in message
    assert "2.46 TB of memory" in message and "allow_large=True" in message
    with pytest.raises(TooLargeError):
        ls.data.open_data("synthetic:cifar10:n=100000000", "all", max_samples=10**8)
    assert len(ls.load_data("synthetic:cifar10:n=100000000", "train", max_samples=7)) == 7


def test_cli_refuses_large_synthetic_data_in_one_line(tmp_path, capsys, monkeypatch, folder_state):
    monkeypatch.chdir(tmp_path)
    torch.save(_mlp().state_dict(), tmp_path / "a.pt")
    before = folder_state(tmp_path)
    argv = ["eval", "--model", "mlp", "--model-kwargs", '{"in_features": 3072, "widths": [16]}']
    argv += ["--data", "synthetic:cifar10:n=100000000", "--split", "train", "--ckpt", "a.pt", "--out", "r.h5"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("landscape: error: data spec 'synthetic:cifar10:n=100000000'") and "--allow-large" in err
    assert folder_state(tmp_path) == before


# ------------------------------------------------------------------------ CLI


def _surface_argv(tmp_path, *extra):
    return [
        "surface",
        "--model",
        "mlp",
        "--model-kwargs",
        '{"in_features": 64, "widths": [16]}',
        "--data",
        "digits",
        "--max-samples",
        "20",
        "--ckpt",
        str(tmp_path / "a.pt"),
        "--no-progress",
        *extra,
    ]


def test_cli_refuses_a_huge_grid_in_one_line_and_allow_large_overrides(tmp_path, capsys, monkeypatch, folder_state):
    torch.save(_mlp().state_dict(), tmp_path / "a.pt")
    before = folder_state(tmp_path)
    out = str(tmp_path / "big.h5")
    argv = _surface_argv(tmp_path, "--x", "-1:1:10000", "--y", "-1:1:10000", "--out", out)
    t0 = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - t0 < 20
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "would take 5.7 GB on disk" in err and "--allow-large" in err
    assert folder_state(tmp_path) == before
    # the flag reaches the check (made small here so that the run is short)
    monkeypatch.setattr(budget, "MAX_OUTPUT_BYTES", 2000)
    small = _surface_argv(tmp_path, "--x", "-1:1:3", "--y", "-1:1:3", "--out", out)
    assert main(small) == 2 and not os.path.exists(out)
    capsys.readouterr()
    assert main([*small, "--allow-large"]) == 0
    assert os.path.getsize(out) > 2000


def test_every_command_that_writes_takes_allow_large():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")

    def leaves(p, name):
        subs = [a for a in p._actions if isinstance(getattr(a, "choices", None), dict)]
        if not subs:
            yield name, p
        for a in subs:
            for child, cp in a.choices.items():
                yield from leaves(cp, f"{name} {child}")

    checked = 0
    for name, p in sub.choices.items():
        for full, leaf in leaves(p, name):
            flags = {s for a in leaf._actions for s in a.option_strings}
            if "--force" in flags:
                assert "--allow-large" in flags, full
                checked += 1
    assert checked >= 10


# ------------------------------------------------------------------------ ETA


def test_report_eta_prints_one_line_for_long_runs():
    out = stdio.StringIO()
    # 64 cells in 0.5 s: 1e8 cells take (1e8 - 64) / 128 s, about 217 h
    eta = budget.report_eta("surface plane", 64, 10**8, 0.5, file=out)
    assert eta == pytest.approx((10**8 - 64) / 128)
    assert out.getvalue() == "surface plane: 100000000 cells, about 217 h left (first 64 in 0.5 s)\n"
    quiet = stdio.StringIO()
    assert budget.report_eta("surface plane", 64, 640, 0.5, file=quiet) == pytest.approx(4.5)
    assert quiet.getvalue() == ""


def test_a_long_surface_prints_its_eta(monkeypatch, capsys):
    monkeypatch.setattr(budget, "ETA_REPORT_SECONDS", -1.0)
    model = _mlp()
    xs = np.linspace(-1, 1, 12)
    ls.compute_surface(model, _plane(model), xs, xs, splits={"test": _test_data()}, points_per_pass=16)
    err = capsys.readouterr().err
    assert "surface random: 144 cells, about" in err and "(first 16 in" in err


def test_evaluate_out_is_size_checked_and_allow_large_lets_it_through(tmp_path, monkeypatch):
    """The output check lives where result files are created; evaluate passes allow_large on."""
    import torch

    import landscape as ls
    from landscape import budget

    monkeypatch.setattr(budget, "MAX_OUTPUT_BYTES", 1000)
    model = ls.build_model("mlp", {"in_features": 4, "widths": [8], "num_classes": 3})
    w = ls.Weights.from_module(model)
    data = (torch.randn(6, 4), torch.randint(0, 3, (6,)))
    out = tmp_path / "e.h5"
    with pytest.raises(budget.TooLargeError, match=r"above the .* limit; pass allow_large=True"):
        ls.evaluate(model, [w] * 50, data, progress=False, out=str(out))
    assert not out.exists() and list(tmp_path.iterdir()) == []
    res = ls.evaluate(model, [w] * 50, data, progress=False, out=str(out), allow_large=True)
    assert out.exists() and res.metrics["loss"].shape == (50,)


def test_training_runs_are_refused_when_their_copies_cannot_fit(monkeypatch):
    """SSE keeps a snapshot per cycle besides the weights, gradients and momentum: with 1 MB
    available, 4 + 3 copies of a 0.3 MB model cannot fit; allow_large lets it through."""
    import torch

    import landscape as ls
    import landscape.ensembles  # noqa: F401
    from landscape import budget

    model = ls.build_model("mlp", {"in_features": 64, "widths": [1024], "num_classes": 10})
    model_bytes = budget.tensor_bytes(model)
    data = (torch.randn(16, 64), torch.randint(0, 10, (16,)))
    monkeypatch.setattr(budget, "available_memory", lambda device=None: 1_000_000)
    with pytest.raises(budget.TooLargeError, match=r"SSE of 3 snapshots would need about .*model x 7 .* available"):
        ls.ensembles.sse(model, data, epochs=1, cycles=3, batch_size=8, lr=0.1)
    assert budget.check_training(model, data, "x", copies=2) == 2 * model_bytes + budget.tensor_bytes(data)
    with budget.allowing_large(True):
        res = ls.ensembles.sse(model, data, epochs=1, cycles=1, batch_size=8, lr=0.1)
    assert len(res.members) == 1


def test_a_curve_fit_is_refused_before_any_work_when_its_copies_cannot_fit(monkeypatch):
    """A curve fit keeps the user's model, its training copy, the n_bends + 2 control points, the
    gradients and momentum of the trained ones and t_per_batch points phi(t): one bend with
    fixed ends is 2 + 3 + 2 x 1 + 1 = 8 copies of a 0.3 MB model; both ends released and two t:
    2 + 3 + 2 x 3 + 2 = 13."""
    from landscape.curves import Curve, fit_curve

    spec = {"in_features": 64, "widths": [1024], "num_classes": 10}
    torch.manual_seed(0)
    model, other = ls.build_model("mlp", spec), ls.build_model("mlp", spec)
    curve = Curve(ls.Weights.from_module(model), ls.Weights.from_module(other), n_bends=1, kind="bezier")
    before = curve.bends.detach().clone()
    data = (torch.randn(16, 64), torch.randint(0, 10, (16,)))
    monkeypatch.setattr(budget, "available_memory", lambda device=None: 1_000_000)
    kwargs = dict(epochs=1, batch_size=8, lr=0.1, progress=False, device="cpu")
    with pytest.raises(TooLargeError, match=r"^curve fit would need about .*\(model x 8 .* available on the host"):
        fit_curve(model, curve, data, **kwargs)
    assert torch.equal(curve.bends.detach(), before)  # refused before any step
    with pytest.raises(TooLargeError, match=r"model x 13 "):
        fit_curve(model, curve, data, fix_start=False, fix_end=False, t_per_batch=2, **kwargs)
    with budget.allowing_large(True):
        res = fit_curve(model, curve, data, **kwargs)
    assert len(res.history) == 1 and not torch.equal(curve.bends.detach(), before)
