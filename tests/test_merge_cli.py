"""``landscape merge``: every method through the command, the table, the file, resume, figures,
and bad input as one line with exit code 2."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import landscape as ls
from landscape.cli import main

MLP = ["--model", "mlp", "--model-kwargs", '{"widths": [16]}']
COMMON = [*MLP, "--data", "digits", "--no-progress"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("merge_ckpts")
    for i in range(4):
        torch.manual_seed(i)
        torch.save(ls.build_model("mlp", {"widths": [16]}).state_dict(), d / f"c{i}.pt")
    return d


@pytest.fixture
def here(ckpts, monkeypatch):
    monkeypatch.chdir(ckpts)
    return ckpts


RUNS = [
    (["--method", "task-arithmetic", "--base", "c0.pt", "--ckpt", "c1.pt", "--ckpt", "c2.pt", "--lambdas", "0:1:3"], (3,)),
    (
        ["--method", "task-arithmetic", "--plane", "--base", "c0.pt", "--ckpt", "c1.pt", "--ckpt", "c2.pt"]
        + ["--lambdas", "0,1", "--lambdas-b", "0,0.5,1"],
        (2, 3),
    ),
    (["--method", "ties", "--base", "c0.pt", "--ckpt", "c1.pt", "--ckpt", "c2.pt", "--densities", "0.2,1", "--lambdas", "1"], (2, 1)),
    (["--method", "dare", "--base", "c0.pt", "--ckpt", "c1.pt", "--p", "0.5", "--seeds", "0,1", "--lambdas", "1"], (1, 2, 1)),
    (["--method", "slerp", "--ckpt", "c1.pt", "--ckpt", "c2.pt", "--t", "0:1:5"], (5,)),
    (["--method", "soup", "--ckpt", "c1.pt", "--ckpt", "c2.pt", "--ckpt", "c3.pt"], (4,)),
    (["--method", "greedy-soup", "--ckpt", "c1.pt", "--ckpt", "c2.pt", "--ckpt", "c3.pt"], (5,)),
    (["--method", "wise-ft", "--base", "c0.pt", "--ckpt", "c1.pt", "--alphas", "0,1"], (2,)),
]  # fmt: skip


@pytest.mark.parametrize("argv, shape", RUNS, ids=[r[0][1] + ("-plane" if "--plane" in r[0] else "") for r in RUNS])
def test_every_method_writes_its_grid(here, capsys, argv, shape):
    out = f"m-{argv[1]}-{len(shape)}.h5"
    assert main(["merge", *argv, *COMMON, "--out", out, "--force"]) == 0
    text = capsys.readouterr().out
    assert f"merge {argv[1]}:" in text and "best test_acc" in text
    with ls.open_result(out) as f:
        assert f.kind == "merge" and tuple(f.shape) == shape
        assert f.attrs["method"] == argv[1]
        assert all(len(c["sha256"]) == 64 for c in f.attrs["checkpoints"])
        acc = f.read_metric("test_acc")
        assert np.isfinite(acc).all()
    if argv[1] == "greedy-soup":
        with ls.open_result(out) as f:
            assert f.attrs["rows"][-2:] == ["uniform", "greedy"]
            assert f.attrs["greedy-soup"]["held-out"] == "train"


def test_wise_ft_ends_are_the_checkpoints(here, capsys):
    assert main(["merge", "--method", "wise-ft", "--base", "c0.pt", "--ckpt", "c1.pt", "--alphas", "0,1", *COMMON, "--out", "w.h5"]) == 0  # fmt: skip
    model = ls.build_model("mlp", {"widths": [16]})
    test = ls.load_data("digits", "test")
    ends = [ls.load_checkpoint(p, model) for p in ("c0.pt", "c1.pt")]
    ref = ls.evaluate(model, ends, test, ["acc"], progress=False)["acc"]
    with ls.open_result("w.h5") as f:
        np.testing.assert_array_equal(f.read_metric("test_acc"), ref)


def test_tasks_resume_and_plot(here, capsys):
    argv = ["merge", "--method", "task-arithmetic", "--plane", "--base", "c0.pt", "--ckpt", "c1.pt", "--ckpt", "c2.pt"]
    argv += ["--lambdas", "0:1:3", "--task", "low=0-4", "--task", "high=5-9", *COMMON, "--out", "p.h5"]
    assert main(argv) == 0
    with ls.open_result("p.h5", "r+") as f:
        assert "test-low_acc" in f.metrics and "test-high_acc" in f.metrics
        assert f.attrs["tasks"] == {"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8, 9]}
        full = f.read_metric("test-low_acc").copy()
        f._h5["done"][1, 2] = 0  # a killed run
    capsys.readouterr()
    assert main([*argv, "--resume", "--plot"]) == 0
    text = capsys.readouterr().out
    assert "1 computed" in text
    assert os.path.exists("p-merge-test-low_acc.png")
    with ls.open_result("p.h5") as f:
        np.testing.assert_allclose(f.read_metric("test-low_acc"), full)


BAD = [
    (["--method", "ties", "--ckpt", "c1.pt"], "--method ties needs --base"),
    (["--method", "slerp", "--ckpt", "c1.pt"], "--method slerp needs 2 --ckpt, got 1"),
    (["--method", "soup", "--base", "c0.pt", "--ckpt", "c1.pt", "--ckpt", "c2.pt"], "takes no --base"),
    (["--method", "ties", "--base", "c0.pt", "--ckpt", "c1.pt", "--densities", "0,0.5"], "should be fractions in (0, 1]"),
    (["--method", "dare", "--base", "c0.pt", "--ckpt", "c1.pt", "--p", "1"], "should be drop probabilities in [0, 1)"),
    (["--method", "dare", "--base", "c0.pt", "--ckpt", "c1.pt", "--seeds", "a"], "--seeds 'a'"),
    (["--method", "task-arithmetic", "--base", "c0.pt", "--ckpt", "c1.pt", "--lambdas", "x"], "--lambdas 'x'"),
    (["--method", "task-arithmetic", "--base", "c0.pt", "--ckpt", "c1.pt", "--plane"], "needs 2 --ckpt, got 1"),
    (["--method", "slerp", "--ckpt", "c1.pt", "--ckpt", "c2.pt", "--plane"], "--plane applies to --method task-arithmetic"),
    (["--method", "soup", "--ckpt", "c1.pt", "--ckpt", "c2.pt", "--task", "low"], "--task 'low' should be NAME=CLASSES"),
    (["--method", "soup", "--ckpt", "c1.pt", "--ckpt", "c2.pt", "--task", "a=x"], "--task classes 'x'"),
    (["--method", "soup", "--ckpt", "c1.pt", "--ckpt", "c2.pt", "--task", "a=10-12"], "classes [10, 11, 12] are not all in 0..9"),
    (["--method", "soup", "--ckpt", "c1.pt", "--ckpt", "nosuch.pt"], "'nosuch.pt' does not exist"),
    (["--method", "nope", "--ckpt", "c1.pt"], "invalid choice: 'nope'"),
]  # fmt: skip


@pytest.mark.parametrize("argv, fragment", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line_exit_2(here, capsys, argv, fragment):
    before = sorted(os.listdir("."))
    assert main(["merge", *argv, *COMMON, "--out", "bad.h5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("landscape") and fragment in err[0], err
    assert sorted(os.listdir(".")) == before


def test_existing_out_needs_resume_or_force(here, capsys):
    argv = ["merge", "--method", "soup", "--ckpt", "c1.pt", "--ckpt", "c2.pt", *COMMON, "--out", "s.h5"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err


def test_report_section_draws_each_lambda_line_and_the_soup_table(here):
    """The HTML report's merge section: the metric against the last axis, one line per value of
    the first (the lambda-plane), with the file's values; soups as a table of their rows."""
    from landscape.plot.report import report_section

    plane = ["--method", "task-arithmetic", "--plane", "--base", "c0.pt", "--ckpt", "c1.pt", "--ckpt", "c2.pt"]
    assert (
        main(["merge", *plane, "--lambdas", "0,1", "--lambdas-b", "0,0.5,1", *COMMON, "--out", "rp.h5", "--force"]) == 0
    )
    section = report_section("rp.h5")
    assert section["builder"] == "merge"
    with ls.io.open_result("rp.h5") as f:
        acc = f.read_metric("test_acc")
    lines = next(b for b in section["blocks"] if b["title"] == "accuracy (%)")["series"]
    assert [s["label"] for s in lines] == ["test, lambda_a=0", "test, lambda_a=1"]
    np.testing.assert_allclose(lines[1]["y"], 100 * acc[1], rtol=1e-5)  # the page keeps 6 digits
    np.testing.assert_allclose(lines[0]["x"], [0, 0.5, 1])
    assert (
        main(["merge", "--method", "soup", "--ckpt", "c1.pt", "--ckpt", "c2.pt", *COMMON, "--out", "rs.h5", "--force"])
        == 0
    )
    (table,) = report_section("rs.h5")["blocks"]
    assert table["type"] == "table" and len(table["rows"]) == 3  # two ingredients and their soup
