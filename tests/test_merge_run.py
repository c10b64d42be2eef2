"""Merges through the engine: the merge file, resume, and greedy soups on held-out data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import landscape as ls
from landscape import merge

_SPEC = {"in_features": 64, "widths": [16]}


def _trained(seeds=(0, 1, 2, 3), epochs=2):
    """Small MLPs trained briefly on digits from one initialisation (ingredients of a soup)."""
    train = ls.load_data("digits", "train")
    torch.manual_seed(0)
    base = ls.build_model("mlp", _SPEC)
    out = []
    for s in seeds:
        net = ls.build_model("mlp", _SPEC)
        net.load_state_dict(base.state_dict())
        ls.train.train_classifier(net, train, epochs=epochs, lr=0.05 * (1 + s % 2), seed=s)
        out.append(ls.Weights.from_module(net))
    return base, [ls.Weights.from_module(base), *out]


@pytest.fixture(scope="module")
def nets():
    return _trained()


def test_merge_file_holds_the_grid_and_equals_single_point_evaluations(nets, tmp_path):
    model, (base, *fts) = nets
    test = ls.load_data("digits", "test")
    grid = merge.ties_grid(base, fts[:2], [0.3, 1.0], [0.5, 1.0, 1.5])
    out = tmp_path / "ties.h5"
    res = merge.evaluate_merges(model, grid, {"test": test}, out=out, progress=False, attrs={"note": "x"})
    assert res["test_acc"].shape == (2, 3)
    for i, d in enumerate((0.3, 1.0)):
        for j, lam in enumerate((0.5, 1.0, 1.5)):
            one = ls.evaluate(model, [merge.ties_merge(base, fts[:2], d, lam)], test, ["acc"], progress=False)
            assert res["test_acc"][i, j] == pytest.approx(float(one["acc"][0]), abs=1e-12)
    with ls.open_result(out) as f:
        assert f.kind == "merge"
        assert f.attrs["method"] == "ties"
        assert f.attrs["axes"] == ["density", "lambda"]
        assert f.attrs["parameters"] == {"density": [0.3, 1.0], "lambda": [0.5, 1.0, 1.5]}
        assert f.attrs["options"] == {"scope": "model"}
        np.testing.assert_array_equal(f.read_array("axis-lambda"), [0.5, 1.0, 1.5])
    ls.io.check_kind(out)


def test_partial_merge_file_resumes_only_missing_cells(nets, tmp_path):
    model, (base, *fts) = nets
    test = ls.load_data("digits", "test")
    grid = merge.task_arithmetic_plane(base, fts[:2], np.linspace(0, 1.5, 4), np.linspace(0, 1.5, 4))
    out = tmp_path / "plane.h5"
    full = merge.evaluate_merges(model, grid, {"test": test}, out=out, progress=False)
    assert full.evaluated == 16
    with ls.open_result(out, "r+") as f:  # forget three cells, as a killed run would
        for i, j in ((0, 1), (2, 3), (3, 0)):
            f._h5["done"][i, j] = 0
        f._h5["metrics/test_loss"][3, 0] = np.nan
    again = merge.evaluate_merges(model, grid, {"test": test}, out=out, resume=True, progress=False)
    assert again.evaluated == 3
    np.testing.assert_allclose(again["test_loss"], full["test_loss"], rtol=1e-6)
    done = merge.evaluate_merges(model, grid, {"test": test}, out=out, resume=True, progress=False)
    assert done.evaluated == 0
    other = merge.task_arithmetic_plane(base, fts[:2], np.linspace(0, 1, 4), np.linspace(0, 1.5, 4))
    with pytest.raises(ValueError, match="parameters"):
        merge.evaluate_merges(model, other, {"test": test}, out=out, resume=True, progress=False)
    with pytest.raises(FileExistsError):
        merge.evaluate_merges(model, grid, {"test": test}, out=out, progress=False)


def _sequential_greedy(model, ings, held_out):
    """Wortsman et al.'s loop, one candidate soup at a time, with ls.evaluate."""
    acc = [float(ls.evaluate(model, [w], held_out, ["acc"], progress=False)["acc"][0]) for w in ings]
    order = sorted(range(len(ings)), key=lambda i: -acc[i])
    soup, best = [order[0]], acc[order[0]]
    for c in order[1:]:
        trial = soup + [c]
        mean = ls.PointSet.from_weights(ings, [[1 / len(trial) if i in trial else 0 for i in range(len(ings))]])
        score = float(ls.evaluate(model, mean, held_out, ["acc"], progress=False)["acc"][0])
        if score > best:
            soup, best = trial, score
    return soup, best


def test_greedy_soup_follows_the_sequential_algorithm_and_never_loses_to_its_best_ingredient(nets):
    model, (_, *ings) = nets
    held_out = ls.load_data("digits", "train", max_samples=400)
    soup = merge.greedy_soup(model, ings, held_out)
    members, best = _sequential_greedy(model, ings, held_out)
    assert soup.members == members
    assert soup.score == pytest.approx(best, abs=1e-12)
    assert merge.greedy_soup(model, ings, held_out, lookahead=1).members == members
    row = ls.PointSet.from_weights(ings, [soup.coefficients(len(ings))])
    again = float(ls.evaluate(model, row, held_out, ["acc"], precision="fp64", progress=False)["acc"][0])
    assert again >= soup.individual.max()
    assert soup.passes <= len(ings)  # candidates evaluated many per pass
    # a loss is minimised
    by_loss = merge.greedy_soup(model, ings, held_out, metric="loss")
    assert by_loss.score <= by_loss.individual.min()


def test_greedy_soup_of_a_bad_ingredient_leaves_it_out(nets):
    model, (_, *ings) = nets
    held_out = ls.load_data("digits", "train", max_samples=400)
    noise = ls.Weights({k: torch.randn_like(v) * 5 for k, v in ings[0].tensors.items()}, ings[0].layout)
    soup = merge.greedy_soup(model, [*ings[:2], noise], held_out)
    assert 2 not in soup.members
    assert soup.order[-1] == 2


def test_plot_merge_draws_one_line_per_setting_the_plane_and_the_soups(nets, tmp_path):
    from landscape.plot import plot_merge

    model, (base, *fts) = nets
    test = ls.load_data("digits", "test", max_samples=100)
    grid = merge.dare_grid(base, fts[:2], [0.5, 0.9], [0, 1], [0.0, 1.0, 2.0])
    merge.evaluate_merges(model, grid, {"test": test}, out=tmp_path / "d.h5", progress=False)
    fig = plot_merge(tmp_path / "d.h5", "test_acc")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4 and lines[0].get_xdata().tolist() == [0.0, 1.0, 2.0]
    with ls.open_result(tmp_path / "d.h5") as f:
        np.testing.assert_allclose(lines[3].get_ydata(), 100 * f.read_metric("test_acc")[1, 1])
    plane = merge.task_arithmetic_plane(base, fts[:2], [0, 1], [0, 0.5, 1])
    merge.evaluate_merges(model, plane, {"test": test}, out=tmp_path / "p.h5", progress=False)
    assert "λ-plane" in plot_merge(tmp_path / "p.h5").axes[0].get_title().replace("$\\lambda$", "λ")
    merge.evaluate_merges(model, merge.soup_grid(fts), {"test": test}, out=tmp_path / "s.h5", progress=False)
    assert len(plot_merge(tmp_path / "s.h5", "test_acc").axes[0].patches) == len(fts) + 1
    ls.evaluate(model, [base], test, out=tmp_path / "e.h5", progress=False)
    with pytest.raises(ValueError, match="needs a 'merge' file"):
        plot_merge(tmp_path / "e.h5")
