"""Ensembles at equal budgets: budget accounting, the independent oracle, the comparison file."""

import numpy as np
import pytest
import torch

import landscape as ls
from landscape.demo import train_classifier
from landscape.ensembles import EnsembleComparison, Run, compare_ensembles, fresh_copy, run_at_budget
from landscape.plot import plot_ensembles


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model = ls.build_model("mlp", {"in_features": 64, "widths": [16], "num_classes": 10})
    train = ls.load_data("digits", "train", max_samples=320)
    test = ls.load_data("digits", "test", max_samples=200)
    return model, train, test


def test_independent_members_equal_networks_trained_by_hand(setup):
    model, train, _ = setup
    run = run_at_budget(model, train, "ind", budget_epochs=2, n=2, seed=3, batch_size=64)
    assert run.budgets == [2, 4] and run.label == "Ind 2B"
    for j, w in enumerate(run.members):
        net = fresh_copy(model, 3000 + j)
        train_classifier(net, train, epochs=2, lr=0.05, batch_size=64, seed=3000 + j)
        for k, v in net.state_dict().items():
            torch.testing.assert_close(w[k], v, rtol=0, atol=0)
    assert not torch.equal(run.members[0]["1.weight"], run.members[1]["1.weight"])


@pytest.mark.parametrize("method", ["sse", "fge", "swa"])
def test_fast_methods_spend_the_same_budget(setup, method):
    model, train, _ = setup
    B, n, cycles = 5, 2, 2
    run = run_at_budget(model, train, method, budget_epochs=B, n=n, cycles=cycles, fast_fraction=0.4, batch_size=64)
    b = np.asarray(run.budgets)
    assert np.all(np.diff(b) > 0) and b[-1] <= n * B + 1e-9
    expected = n if method == "swa" else n * cycles
    assert len(run.members) == expected
    for j in range(n):  # every run's members fall inside its own budget
        mine = b[(b > j * B) & (b <= (j + 1) * B + 1e-9)]
        assert len(mine) == expected // n
    if method == "fge":  # after (1 - f) B = 3 epochs of ordinary training, snapshots mid-cycle
        assert np.all((b[:cycles] > 3) & (b[:cycles] <= 5))
    if method == "sse":  # snapshots at the ends of the cosine cycles
        assert b[cycles - 1] == pytest.approx(B)


def test_bad_arguments_are_refused(setup):
    model, train, _ = setup
    with pytest.raises(ValueError, match="not one of"):
        run_at_budget(model, train, "bagging", budget_epochs=2)
    with pytest.raises(ValueError, match="no ordinary training"):
        run_at_budget(model, train, "fge", budget_epochs=1)
    with pytest.raises(ValueError, match="positive integer"):
        run_at_budget(model, train, "ind", budget_epochs=2, n=0)


def test_comparison_rows_file_round_trip_and_figure(setup, tmp_path):
    model, train, test = setup
    members = [fresh_copy(model, s) for s in range(3)]
    for s, net in enumerate(members):
        train_classifier(net, train, epochs=2, batch_size=64, seed=s)
    ws = [ls.Weights.from_module(n) for n in members]
    runs = [Run("three", ws, [2.0, 4.0, 6.0]), Run("one", ws[:1], [2.0])]
    c = compare_ensembles(model, runs, test)
    # oracle: the members' probabilities averaged by hand in float64
    x, y = test.x.double(), test.y
    probs = []
    for net in members:
        probs.append(torch.softmax(net.double()(x), -1))
    for m in range(1, 4):
        p = torch.stack(probs[:m]).mean(0)
        assert c.per_member["cumulative_acc"][0, m - 1] == pytest.approx(float((p.argmax(1) == y).double().mean()))
    assert c.acc[1] == pytest.approx(c.per_member["member_acc"][0, 0])
    assert np.isnan(c.per_member["budget"][1, 1]) and list(c.members) == [3, 1]
    assert list(c.budgets) == [6.0, 2.0]
    assert "| three | 6 | 3 |" in c.markdown()
    path = c.save(tmp_path / "ens.h5")
    back = EnsembleComparison.load(path)
    assert back.labels == c.labels and np.allclose(back.acc, c.acc)
    np.testing.assert_array_equal(back.per_member["budget"], c.per_member["budget"])
    with pytest.raises(FileExistsError):
        c.save(path)
    fig = plot_ensembles(path)
    assert len(fig.axes[0].lines) == 2
    from landscape.plot import plot_file

    written = plot_file(path, tmp_path / "fig", formats=("png",))
    assert [p.endswith("ens-ensembles.png") for p in written] == [True]


def test_comparison_refuses_mismatched_runs(setup):
    model, _, test = setup
    w = ls.Weights.from_module(model)
    with pytest.raises(ValueError, match="1 members but 2 budgets"):
        compare_ensembles(model, [Run("x", [w], [1.0, 2.0])], test)


def test_swa_runs_are_the_repository_procedure_or_the_restarted_one(setup):
    from landscape.ensembles import swa

    model, train, _ = setup
    kw = dict(budget_epochs=3, n=1, seed=2, lr=0.1, fast_fraction=0.4, batch_size=64)
    for restart in (False, True):
        run = run_at_budget(model, train, "swa", swa_restart=restart, **kw)
        net = fresh_copy(model, 2000)
        opts = dict(seed=2000, batch_size=64)
        if restart:  # cosine training for (1 - f) B = 2 epochs, then a fresh optimizer
            train_classifier(net, train, epochs=2, lr=0.1, **opts)
            want = swa(net, ls.Weights.from_module(net), train, epochs=1, lr=0.05, include_start=False, **opts)
            assert want.collected == [5]
        else:  # one optimizer, the repository's schedule, averaging after epochs 2 and 3
            want = swa(net, ls.Weights.from_module(net), train, epochs=3, swa_start=2, lr=0.1, swa_lr=0.05, **opts)
            assert want.collected == [10, 15]
            assert want.lr[:10].tolist() == [0.1] * 10 and want.lr[10:].tolist() == pytest.approx([0.05] * 5)
        assert run.attrs["swa-procedure"] == ("restart" if restart else "repository")
        for k, v in want.weights.tensors.items():
            torch.testing.assert_close(run.members[0][k], v, rtol=0, atol=0)
