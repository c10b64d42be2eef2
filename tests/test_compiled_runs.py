"""The compiled path in whole runs: its warm-up reported (progress bar, results of evaluate,
evaluate_grid and compute_surface), streamed data, resumed surface files, small chunks, the
auto choice on the pending points and a failure remembered in the process. Compilations are
counted with a stand-in backend that runs the graphs eagerly."""

import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape import compiled as C
from landscape import directions as D
from landscape import surface as S

E = sys.modules["landscape.evaluate"]  # the module (the package exports the function)


class _Bar:
    """A progress bar that records what it is told, in order."""

    def __init__(self):
        self.events = []

    def update(self, n):
        self.events.append(("update", n))

    def set_postfix_str(self, s=""):
        self.events.append(("postfix", s))

    def write(self, s, file=None):
        self.events.append(("write", s))

    def close(self):
        self.events.append(("close", None))


def _net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 5),
    )
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def _plane():
    nets = [_net(s) for s in (0, 1, 2)]
    return nets[0], D.three_point_plane(*[ls.Weights.from_module(n) for n in nets])


def _data(n=40, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


GRID = ([-0.5, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0])


# ---------------------------------------------------------------------------- 1. the warm-up reported
def test_the_warm_up_is_shown_on_the_bar_and_reported_once(monkeypatch, counter, capsys):
    model, plane = _plane()
    line = plane.grid(np.array([0.0, 0.5, 1.0]), np.array([0.0]))
    data = _data()
    res = ls.evaluate(model, line, data, path="compiled", batch_size=16)
    err = capsys.readouterr().err
    assert res.info["compile_seconds"] > 0
    assert err.count("compiling Sequential (one-time, ") == 1, err
    # the bar says why it stalls while compiling, then clears it; the line comes before any point
    bars = []
    monkeypatch.setattr(E, "_progress", lambda total, desc, enabled: bars.append(_Bar()) or bars[-1])
    monkeypatch.setattr(C, "_COMPILED", {})  # as in a new process
    ls.evaluate(model, line, data, path="compiled", batch_size=16)
    events = bars[0].events
    assert events[:3] == [("postfix", "compiling Sequential (one-time)"), ("postfix", ""), events[2]]
    assert events[2][0] == "write" and events[2][1].startswith("compiling Sequential (one-time, ")
    assert [e for e in events[3:] if e[0] in ("postfix", "write")] == []
    # a second run of the same model in the process pays nothing and says nothing
    again = ls.evaluate(model, line, data, path="compiled", batch_size=16)
    assert again.info["compile_seconds"] == 0.0
    assert [e for e in bars[1].events if e[0] in ("postfix", "write")] == []
    assert counter.graphs == 2


def test_surfaces_carry_the_warm_up_paid_over_chunks_and_splits(monkeypatch, counter):
    model, plane = _plane()
    bars = []
    monkeypatch.setattr(S, "_progress", lambda total, desc, enabled: bars.append(_Bar()) or bars[-1])
    splits = {"train": _data(40, 5), "test": _data(24, 6)}
    res = ls.compute_surface(model, plane, *GRID, splits=splits, path="compiled", points_per_pass=2, batch_size=16)
    assert res.path == "compiled" and res.info["points_per_pass"] == 2
    # one warm-up in the whole run (6 chunks, 2 splits): the one the process's compiled forward measured
    (entry,) = C._COMPILED.values()
    assert res.info["compile_seconds"] == entry.compile_seconds > 0
    writes = [e[1] for e in bars[0].events if e[0] == "write"]
    assert len(writes) == 1 and writes[0].startswith("compiling Sequential (one-time, ")
    assert bars[0].events[0] == ("postfix", "compiling Sequential (one-time)")
    again = ls.compute_surface(model, plane, *GRID, splits=splits, path="compiled", progress=False)
    assert again.info["compile_seconds"] == 0.0
    loop = ls.compute_surface(model, plane, *GRID, splits=splits, path="loop", progress=False)
    assert loop.info["compile_seconds"] == 0.0
    for name in loop.metrics:
        np.testing.assert_allclose(res[name], loop[name], rtol=1e-5)


# ---------------------------------------------------------------------------- 2. coverage
def test_streamed_data_with_a_short_last_batch_compiles_once(counter):
    model, plane = _plane()
    points = plane.grid(np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0]))
    x, y = _data(40)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)  # 16, 16, 8
    loop = ls.evaluate(model, points, (x, y), path="loop", batch_size=16, progress=False)
    comp = ls.evaluate(model, points, loader, path="compiled", progress=False)
    assert comp.path == "compiled" and comp.batch_size == 16
    assert counter.graphs == 1  # the short batch is padded, not compiled again
    assert comp.info["data_passes"] == 1  # all points of the chunk read each streamed batch once
    np.testing.assert_allclose(comp["loss"], loop["loss"], rtol=1e-5)
    np.testing.assert_array_equal(comp["acc"], loop["acc"])


def test_a_resumed_surface_file_gets_the_first_runs_values_without_compiling_again(counter, tmp_path):
    model, plane = _plane()
    splits = {"test": _data(40)}
    out = tmp_path / "plane.h5"
    first = ls.compute_surface(model, plane, *GRID, splits=splits, path="compiled", out=out, progress=False)
    assert first.path == "compiled" and counter.graphs == 1
    with ls.open_result(out, "r+") as f:  # forget two cells, as a killed run would
        for cell in ((0, 1), (2, 2)):
            f._h5["done"][cell] = 0
            f._h5["metrics/test_loss"][cell] = np.nan
    res = ls.compute_surface(model, plane, *GRID, splits=splits, path="compiled", out=out, resume=True, progress=False)
    assert res.evaluated == 2 and res.path == "compiled"
    assert counter.graphs == 1 and res.info["compile_seconds"] == 0.0
    # a point's values do not depend on the points sharing its run: equal to the first run's
    np.testing.assert_array_equal(res["test_loss"], first["test_loss"])
    np.testing.assert_array_equal(res["test_acc"], first["test_acc"])


def test_chunks_capped_by_the_point_bytes_and_a_small_budget(monkeypatch, counter):
    model, plane = _plane()
    points = plane.grid(np.array([-0.5, 0.0, 0.5, 1.0]), np.array([0.0, 1.0]))
    data = _data(40)
    whole = ls.evaluate(model, points, data, path="compiled", batch_size=16, progress=False)
    assert whole.points_per_pass == points.K
    # the large-model rule: one point per chunk when a point's tensors exceed _POINT_BYTES
    monkeypatch.setattr(E, "_POINT_BYTES", 1)
    single = ls.evaluate(model, points, data, path="compiled", batch_size=16, progress=False)
    assert single.path == "compiled" and single.points_per_pass == 1
    np.testing.assert_array_equal(single["loss"], whole["loss"])
    assert counter.graphs == 1
    # a budget that shrinks the batch (basis, data and a point fit, the activations of 40
    # samples do not): one more graph for the new batch shape, values as the loop's
    act = 6 * 8 * 8 * 4 * 3  # conv, BN and ReLU outputs of one sample in fp32, the bulk of them
    budget = points.J * points.P * 4 + 40 * 3 * 8 * 8 * 4 + points.P * 4 + 12 * act
    small = ls.evaluate(model, points, data, path="compiled", max_memory=budget, progress=False)
    assert small.path == "compiled" and 1 < small.batch_size < 16 and small.points_per_pass == 1
    loop = ls.evaluate(model, points, data, path="loop", batch_size=small.batch_size, progress=False)
    np.testing.assert_allclose(small["loss"], loop["loss"], rtol=1e-5)
    assert counter.graphs == 2


@pytest.mark.cuda
def test_offloaded_basis_on_a_gpu(counter):
    model, plane = _plane()
    points = plane.grid(np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0]))
    data = _data(40)
    loop = ls.evaluate(model, points, data, path="loop", device="cuda", batch_size=16, progress=False)
    comp = ls.evaluate(model, points, data, path="compiled", device="cuda", offload=True, batch_size=16, progress=False)
    assert comp.path == "compiled" and counter.graphs == 1
    np.testing.assert_allclose(comp["loss"], loop["loss"], rtol=1e-5)


# ---------------------------------------------------------------------------- 3. pending points, failures
def test_auto_weighs_the_warm_up_against_the_pending_points_only(monkeypatch, counter, tmp_path):
    model, plane = _plane()
    splits = {"test": _data(20)}
    # a cost model under which 12 points pay for the default 40 s warm-up and 3 do not:
    # points * 20 samples * 1e6 MACs / 1e6 MAC/s * 0.35 > 40 from 6 points on
    monkeypatch.setattr(C, "forward_macs", lambda *a, **k: 1_000_000)
    monkeypatch.setattr(C, "EAGER_MACS_PER_SECOND", {"cpu": 1e6, "cuda": 1e6})
    monkeypatch.setattr(C, "SAVED_FRACTION", 0.35)
    monkeypatch.setattr(C, "DEFAULT_COMPILE_SECONDS", 40.0)
    out = tmp_path / "plane.h5"
    first = ls.compute_surface(model, plane, *GRID, splits=splits, path="loop", out=out, progress=False)
    with ls.open_result(out, "r+") as f:  # three cells left, as a killed run would leave them
        for cell in ((0, 0), (1, 2), (3, 1)):
            f._h5["done"][cell] = 0
            f._h5["metrics/test_loss"][cell] = np.nan
    res = ls.compute_surface(model, plane, *GRID, splits=splits, out=out, resume=True, progress=False)
    assert res.evaluated == 3 and res.path == "loop" and counter.graphs == 0
    np.testing.assert_array_equal(res["test_loss"], first["test_loss"])
    # the same call on a grid of 12 pending cells compiles; so does evaluate over all points,
    # and its indices count the same way
    fresh = ls.compute_surface(model, plane, *GRID, splits=splits, progress=False)
    assert fresh.path == "compiled" and counter.graphs == 1
    monkeypatch.setattr(C, "_COMPILED", {})
    points = plane.grid(*map(np.asarray, GRID))
    few = ls.evaluate_points(model, points, splits["test"], indices=[0, 5, 11], progress=False)
    assert few.path == "loop"


def test_a_failed_compilation_is_remembered_and_warned_about_once(monkeypatch, counter):
    counter.fail = "no C compiler here"
    failing = counter
    model, plane = _plane()
    points = plane.grid(np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0]))
    data = _data(20)
    loop = ls.evaluate(model, points, data, path="loop", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = [ls.evaluate(model, points, data, path="compiled", progress=False) for _ in range(3)]
        grid = ls.compute_surface(model, plane, *GRID, splits={"test": data}, path="compiled", progress=False)
    messages = [str(w.message) for w in caught if "compiled path" in str(w.message)]
    assert len(messages) == 1 and "no C compiler here" in messages[0], messages
    assert failing.graphs == 1  # tried once in the process
    assert [r.path for r in runs] == ["loop"] * 3 and grid.path == "loop"
    for r in runs:
        np.testing.assert_array_equal(r["loss"], loop["loss"])
    # auto does not choose what failed, even where it would pay
    monkeypatch.setattr(C, "EAGER_MACS_PER_SECOND", {"cpu": 1e3, "cuda": 1e3})
    assert ls.evaluate(model, points, data, progress=False).path == "loop"
    assert failing.graphs == 1
