"""``landscape sharpness``: the table, the file, --resume, the figure and one-line errors."""

import numpy as np
import pytest
import torch

import landscape as ls
from landscape import sharpness as S
from landscape.cli import main
from landscape.plot import plot_sharpness
from landscape.plot.report import report_section

ARGS = ["--model", "mlp", "--model-kwargs", '{"widths": [8]}', "--data", "digits", "--no-progress"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sharp") / "c0.pt"
    torch.save(ls.build_model("mlp", {"widths": [8]}).state_dict(), path)
    return str(path)


def test_the_command_prints_the_table_writes_a_resumable_file_and_its_figure(ckpt, tmp_path, capsys):
    out = tmp_path / "s.h5"
    argv = ["sharpness", *ARGS, "--ckpt", ckpt, "--max-samples", "300", "--worst-case", "0.05,0.1"]
    argv += ["--gaussian", "0.01", "--samples", "6", "--m", "150", "--steps", "3", "--out", str(out), "--plot"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "worst-case l2 rho=0.05" in printed and "gaussian sigma=0.01" in printed
    assert "11 cell(s) computed" in printed  # L(w), 2 x 2 batches, 6 perturbations
    assert (tmp_path / "s-sharpness.png").exists()
    fig = plot_sharpness(out)  # one column per measure, labelled from the file
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["worst-case l2 rho=0.05", "worst-case l2 rho=0.1", "gaussian sigma=0.01"]
    dots = [c for c in fig.axes[0].collections if type(c).__name__ == "PathCollection"]
    assert [len(c.get_offsets()) for c in dots] == [2, 2, 6]  # a dot per batch or perturbation
    rep = S.read_sharpness(out)
    # the HTML report's section: a row per measure whose mean is the library's increase
    (table, lines) = report_section(out)["blocks"]
    assert [row[0] for row in table["rows"]] == ticks and [row[1] for row in table["rows"]] == [
        "2 of 2",
        "2 of 2",
        "6 of 6",
    ]
    np.testing.assert_allclose([float(row[2]) for row in table["rows"]], [v.increase for v in rep.values], rtol=1e-3)
    assert [len(s["y"]) for s in lines["series"]] == [2, 2, 6]
    # the library gives the same numbers
    model = ls.build_model("mlp", {"widths": [8]})
    data = ls.load_data("digits", "train", max_samples=300)
    direct = S.compute_sharpness(
        model,
        ls.load_checkpoint(ckpt, model),
        data,
        [S.Measure("worst-case", 0.05), S.Measure("worst-case", 0.1), S.Measure("gaussian", 0.01)],
        samples=6,
        m=150,
        steps=3,
        progress=False,
    )
    for x, y in zip(rep.values, direct.values):
        np.testing.assert_allclose(x.losses, y.losses, rtol=1e-6)
    assert rep.info["attrs"]["checkpoint"]["sha256"] == ls.weights.file_sha256(ckpt)
    # resuming a finished file computes nothing; another setting cannot resume it
    assert main([*argv[:-1], "--resume"]) == 0
    assert "0 cell(s) computed" in capsys.readouterr().out
    assert main([*argv[:-1], "--resume", "--seed", "3"]) == 2
    assert "cannot resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "no measure asked for; expected at least one of --worst-case"),
        (["--gaussian", "0.1,abc"], "--gaussian '0.1,abc': expected positive numbers separated by commas"),
        (["--sphere", "-1"], "expected positive numbers"),
        (["--worst-case", "0.1", "--m", "0"], "--m 0: expected a positive integer"),
        (["--worst-case", "0.1", "--confidence", "1.5"], "--confidence 1.5: expected a number between 0 and 1"),
        (["--worst-case", "0.1", "--plot"], "--plot draws the --out file; pass --out too"),
        (["--worst-case", "0.1", "--params", "nothing"], "--params 'nothing' is neither a parameter nor a module"),
    ],
)
def test_bad_input_exits_2_with_one_line(ckpt, capsys, extra, message):
    assert main(["sharpness", *ARGS, "--ckpt", ckpt, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_an_existing_file_needs_resume_or_force(ckpt, tmp_path, capsys):
    out = tmp_path / "s.h5"
    out.write_text("not ours")
    assert main(["sharpness", *ARGS, "--ckpt", ckpt, "--sphere", "0.1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists; pass --resume to continue it or --force to overwrite it" in err
    assert out.read_text() == "not ours"
