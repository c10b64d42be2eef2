"""--config FILE (TOML/JSON) equals the same options as flags, the command line overrides it,
every result file records its resolved options (cli-config) and `landscape rerun` runs them
again: nothing new for a finished file, the missing cells of an interrupted one."""

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

import landscape as ls
from landscape.cli import main


def _ckpts(tmp_path, n, seed=0):
    paths = []
    for i in range(n):
        torch.manual_seed(seed + i)
        p = tmp_path / f"c{i}.pt"
        torch.save(ls.build_model("mlp", {"widths": [16]}).state_dict(), p)
        paths.append(str(p))
    return paths


def _record(path):
    with ls.open_result(path) as f:
        return json.loads(f.attrs["cli-config"])


def _metrics(path):
    with ls.open_result(path) as f:
        return {n: f.read_metric(n) for n in f.metrics}, f.done.copy()


def test_config_file_run_equals_the_flag_run(tmp_path, capsys):
    paths = _ckpts(tmp_path, 2)
    cfg = tmp_path / "eval.toml"
    cfg.write_text(
        'model = "mlp"\nmodel-kwargs = {widths = [16]}\ndata = "digits"\nmax-samples = 300\n'
        f'ckpt = ["{paths[0]}", "{paths[1]}"]\nmetrics = ["loss", "acc", "nll"]\nno-progress = true\n'
    )
    assert main(["eval", "--config", str(cfg), "--out", str(tmp_path / "a.h5")]) == 0
    by_file = capsys.readouterr().out.splitlines()
    flags = ["eval", "--model", "mlp", "--model-kwargs", '{"widths": [16]}', "--data", "digits"]
    flags += ["--max-samples", "300", "--ckpt", paths[0], "--ckpt", paths[1], "--metrics", "loss,acc,nll"]
    assert main([*flags, "--no-progress", "--out", str(tmp_path / "b.h5")]) == 0
    by_flags = capsys.readouterr().out.splitlines()
    assert by_file[:-1] == by_flags[:-1] and len(by_file) == 4  # the table; the last line has times
    (a, _), (b, _) = _metrics(tmp_path / "a.h5"), _metrics(tmp_path / "b.h5")
    assert list(a) == ["loss", "acc", "nll"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    ra, rb = _record(tmp_path / "a.h5"), _record(tmp_path / "b.h5")
    assert ra["command"] == rb["command"] == ["eval"]
    assert ra["options"] == rb["options"] and "out" not in ra["options"]  # where it went is not recorded
    assert ra["options"]["model_kwargs"] == '{"widths": [16]}' and ra["options"]["ckpt"] == paths


def test_command_line_overrides_the_file(tmp_path):
    paths = _ckpts(tmp_path, 3)
    cfg = tmp_path / "eval.json"
    cfg.write_text(
        json.dumps(
            {
                "model": "mlp",
                "model_kwargs": {"widths": [16]},
                "data": "digits",
                "ckpt": paths[:2],
                "metrics": "loss",
                "max_samples": 200,
                "no_progress": True,
            }
        )
    )
    out = tmp_path / "r.h5"
    assert main(["eval", "--config", str(cfg), "--ckpt", paths[2], "--metrics", "loss,acc", "--out", str(out)]) == 0
    with ls.open_result(out) as f:
        assert f.metrics == ["loss", "acc"] and f.shape == (1,)  # --ckpt replaces the file's list
        assert f.attrs["checkpoints"][0]["sha256"] == ls.weights.file_sha256(paths[2])


@pytest.mark.parametrize(
    "text, message",
    [
        ('model = "mlp"\nbogus = 1\n', "unknown option 'bogus' for `landscape eval`"),
        (
            'model = "mlp"\nbn = "sometimes"\n',
            "'sometimes' is not one of running, recompute, recompute-batches, recompute-exact",
        ),
        ('model = "mlp"\nbatch-size = "many"\n', "'many' is not a valid value"),
        ("model = \n", "is not valid TOML"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert main(["eval", "--config", str(cfg), "--data", "digits", "--ckpt", "x.pt"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def _surface(tmp_path, paths, out):
    argv = ["surface", "--model", "mlp", "--model-kwargs", '{"widths": [16]}', "--data", "digits"]
    argv += ["--max-samples", "200", "--splits", "test", "--ckpt", paths[0], "--ckpt", paths[1]]
    argv += ["--x", "-0.5:1.5:9", "--path", "loop", "--points-per-pass", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0


def test_rerun_of_a_finished_file_computes_nothing(tmp_path, capsys):
    paths = _ckpts(tmp_path, 2)
    out = tmp_path / "line.h5"
    _surface(tmp_path, paths, out)
    before, _ = _metrics(out)
    capsys.readouterr()
    assert main(["rerun", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 cell(s) computed" in printed and "rerun: landscape surface" in printed
    after, done = _metrics(out)
    assert done.all() and all(np.array_equal(before[n], after[n]) for n in before)


def test_rerun_completes_an_interrupted_file_identically(tmp_path, capsys):
    paths = _ckpts(tmp_path, 2)
    full = tmp_path / "full.h5"
    _surface(tmp_path, paths, full)
    ref, _ = _metrics(full)
    cut = tmp_path / "cut.h5"
    shutil.copy(full, cut)
    lost = np.array([1, 4, 5, 8])
    with h5py.File(cut, "r+") as h5:  # as a run killed before these cells were written
        h5["done"][lost] = 0
        for name in h5["metrics"]:
            values = h5["metrics"][name][()]
            values[lost] = np.nan
            h5["metrics"][name][...] = values
    capsys.readouterr()
    assert main(["rerun", str(cut)]) == 0
    assert f"{lost.size} cell(s) computed" in capsys.readouterr().out
    again, done = _metrics(cut)
    assert done.all()
    for name in ref:
        np.testing.assert_array_equal(again[name], ref[name])
    new = tmp_path / "new.h5"  # --out NEW: the same command into a new file
    assert main(["rerun", str(full), "--out", str(new)]) == 0
    fresh, done = _metrics(new)
    assert done.all() and all(np.array_equal(fresh[n], ref[n]) for n in ref)
    assert _record(new) == _record(full)


def test_rerun_needs_a_recorded_command(tmp_path, capsys):
    out = tmp_path / "plain.h5"
    with ls.io.create_result(out, kind="eval", shape=(1,), metrics=["loss"], attrs={}) as rf:
        rf.write_cells([0], {"loss": np.zeros(1)})
    assert main(["rerun", str(out)]) == 2
    assert "records no cli-config" in capsys.readouterr().err


def test_rerun_of_a_hessian_density_writes_it_again_beside_its_figure(tmp_path, capsys):
    from landscape.hessian import SpectralDensity

    paths = _ckpts(tmp_path, 1)
    fig, h5 = tmp_path / "d.png", tmp_path / "d.h5"
    argv = ["hessian", "density", "--model", "mlp", "--model-kwargs", '{"widths": [16]}', "--data", "digits"]
    argv += ["--max-samples", "96", "--ckpt", paths[0], "--probes", "2", "--steps", "4", "--no-progress"]
    assert main([*argv, "--out", str(fig)]) == 0
    ref = SpectralDensity.load(h5)
    assert _record(h5)["command"] == ["hessian", "density"]
    os.remove(fig)
    assert main(["rerun", str(h5)]) == 0
    assert "rerun: landscape hessian density" in capsys.readouterr().out and fig.exists()
    np.testing.assert_array_equal(SpectralDensity.load(h5).nodes, ref.nodes)
    assert main([*argv, "--out", str(h5)]) == 2  # the figure, not the file beside it
    assert "is the figure" in capsys.readouterr().err
