"""The command line: one-line errors, results files, resume after SIGKILL."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _ckpts(tmp_path, spec, kwargs, n, seed=0):
    paths = []
    for i in range(n):
        torch.manual_seed(seed + i)
        model = ls.build_model(spec, kwargs)
        p = tmp_path / f"c{i}.pt"
        torch.save(model.state_dict(), p)
        paths.append(str(p))
    return paths


MLP_ARGS = ["--model", "mlp", "--model-kwargs", '{"widths": [16]}', "--data", "digits", "--no-progress"]


def test_eval_prints_metrics_and_writes_file(tmp_path, capsys):
    paths = _ckpts(tmp_path, "mlp", {"widths": [16]}, 2)
    out = tmp_path / "r.h5"
    argv = ["eval", *MLP_ARGS, "--ckpt", paths[0], "--ckpt", paths[1], "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "c0.pt" in printed and "path: fused" in printed
    with ls.open_result(out) as f:
        assert f.done.all()
        loss = f.read_metric("loss")
        assert f.attrs["checkpoints"][1]["sha256"] == ls.weights.file_sha256(paths[1])
        assert f.attrs["data"]["spec"] == "digits"
        assert f.attrs["bn"] == "running" and f.attrs["precision"] == "fp32"
    model = ls.build_model("mlp", {"widths": [16]})
    test = ls.load_data("digits", "test")
    direct = ls.evaluate(model, [ls.load_checkpoint(p, model) for p in paths], test, progress=False)
    np.testing.assert_allclose(loss, direct["loss"], rtol=1e-6)
    # an existing file is not overwritten without --force
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0


@pytest.mark.parametrize(
    "argv_tail,fragment",
    [
        (["--data", "missing.npz"], "'missing.npz' does not exist"),
        (["--model", "nosuchmodel"], "nosuchmodel"),
        (["--model-kwargs", "{bad json"], "not valid JSON"),
        (["--max-memory", "lots"], "is not a size"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv_tail, fragment):
    paths = _ckpts(tmp_path, "mlp", {"widths": [16]}, 1)
    base = ["eval", *MLP_ARGS, "--ckpt", paths[0]]
    assert main(base + argv_tail) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("landscape: error:") and fragment in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_mismatched_checkpoint_and_debug_traceback(tmp_path):
    paths = _ckpts(tmp_path, "mlp", {"widths": [8]}, 1)
    cmd = [sys.executable, "-m", "landscape", "eval", *MLP_ARGS, "--ckpt", paths[0]]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"landscape: error: checkpoint '{paths[0]}' does not match the model: key '1.weight' has shape "
        "(8, 64) in the checkpoint and (16, 64) in the model"
    ]
    r = subprocess.run(cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr and "CheckpointError" in r.stderr


def test_pickle_checkpoint_needs_trust_flag(tmp_path, capsys):
    model = ls.build_model("mlp", {"widths": [16]})
    p = tmp_path / "pickled.pt"
    torch.save({"model": model.state_dict(), "loss_fn": nn.CrossEntropyLoss()}, p)
    argv = ["eval", *MLP_ARGS, "--ckpt", str(p)]
    assert main(argv) == 2
    assert "--trust-checkpoint" in capsys.readouterr().err
    assert main(argv + ["--trust-checkpoint"]) == 0


def test_corrupt_result_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 50)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.h5" in err and len(err.strip().splitlines()) == 1


def _attrs_without_timing(attrs):
    return {k: v for k, v in attrs.items() if k not in ("created", "finished", "elapsed-s")}


def _done_count(path):
    try:
        with ls.open_result(path) as f:
            return int(f.done.sum())
    except (ls.ResultFileError, OSError):
        return -1


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    """A run killed with SIGKILL several times (at random moments after it has made some
    progress, so kills land mid-computation and mid-write) and resumed ends with the same
    datasets and attributes as an uninterrupted run."""
    kw = {"num_classes": 10, "in_channels": 1}
    paths = _ckpts(tmp_path, "resnet20", kw, 8)
    args = [
        "-m",
        "landscape",
        "eval",
        "--model",
        "resnet20",
        "--model-kwargs",
        json.dumps(kw),
        "--data",
        "digits:image",
        "--split",
        "test",
        "--path",
        "loop",
        "--points-per-pass",
        "1",
        "--no-progress",
        "--bn",
        "recompute",
    ]
    for p in paths:
        args += ["--ckpt", p]
    ref = tmp_path / "ref.h5"
    subprocess.run(
        [sys.executable, *args, "--out", str(ref)], check=True, env=_env(), cwd=tmp_path, capture_output=True
    )

    out = tmp_path / "killed.h5"
    rng = random.Random(1234)
    kills, seen = 0, []
    while kills < 4:
        before = _done_count(out) if out.exists() else -1
        cmd = [sys.executable, *args, "--out", str(out)] + (["--resume"] if out.exists() else [])
        proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and _done_count(out) <= max(before, 0):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is not None:
            break  # finished before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        with ls.open_result(out) as f:  # readable after every kill
            done = f.done
            # values may be written without their done flag (recomputed on resume)
            assert np.isfinite(f.read_metric("loss")[done]).all()
        seen.append(int(done.sum()))
        if seen[-1] == len(paths):
            break  # killed after its last point, while closing: nothing is left to interrupt
    # progress is kept across kills, and at least two kills landed mid-run
    assert seen == sorted(seen) and sum(n < len(paths) for n in seen) >= 2, seen
    r = subprocess.run(
        [sys.executable, *args, "--out", str(out), "--resume"], env=_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    with ls.open_result(ref) as a, ls.open_result(out) as b:
        assert a.done.all() and b.done.all()
        for name in a.metrics:
            assert np.array_equal(a.read_metric(name), b.read_metric(name)), name
        for name in a.array_names():
            assert np.array_equal(a.read_array(name), b.read_array(name))
        assert _attrs_without_timing(a.attrs) == _attrs_without_timing(b.attrs)


def test_resume_refuses_a_different_run(tmp_path, capsys):
    paths = _ckpts(tmp_path, "mlp", {"widths": [16]}, 2)
    out = tmp_path / "r.h5"
    assert main(["eval", *MLP_ARGS, "--ckpt", paths[0], "--out", str(out)]) == 0
    assert main(["eval", *MLP_ARGS, "--ckpt", paths[0], "--out", str(out), "--resume", "--precision", "fp64"]) == 2
    err = capsys.readouterr().err
    assert "precision" in err and "fp32" in err and "fp64" in err


def test_info_summarises_a_file(tmp_path, capsys):
    paths = _ckpts(tmp_path, "mlp", {"widths": [16]}, 2)
    out = tmp_path / "r.h5"
    assert main(["eval", *MLP_ARGS, "--ckpt", paths[0], "--ckpt", paths[1], "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2/2" in text and "loss" in text


def test_connect_prints_the_table_writes_the_report_and_refuses_bad_input(tmp_path, capsys):
    from landscape.connect import ConnectionReport, compare_connections

    paths = _ckpts(tmp_path, "mlp", {"widths": [16]}, 2)
    out = tmp_path / "conn.h5"
    base = ["connect", *MLP_ARGS, "--ckpt", paths[0], "--ckpt", paths[1], "--points", "5", "--out", str(out)]
    assert main([*base, "--methods", "linear,ot+wa", "--plot"]) == 0
    printed = capsys.readouterr().out
    assert "| Linear |" in printed and "| OT + WA (paper) |" in printed and "| End points |" in printed
    assert "conn-connections-test.png" in printed
    rep = ConnectionReport.load(out)
    assert rep.computed == ["linear", "ot+wa"] and rep.attrs["checkpoints"][0]["sha256"]
    # the same numbers as the library call
    model = ls.build_model("mlp", {"widths": [16]})
    A, B = (ls.load_checkpoint(p, model) for p in paths)
    splits = {s: ls.load_data("digits", s) for s in ("train", "test")}
    direct = compare_connections(model, A, B, splits, methods=("linear", "ot+wa"), points=5)
    for m in rep.computed:
        np.testing.assert_array_equal(rep.acc[m]["test"], direct.acc[m]["test"])
    # existing file, bad methods, one checkpoint: one line, exit 2
    for argv, fragment in (
        ([*base, "--methods", "linear"], "already exists"),
        ([*base, "--methods", "spline", "--force"], "unknown ['spline']"),
        (["connect", *MLP_ARGS, "--ckpt", paths[0], "--out", str(tmp_path / "x.h5")], "two --ckpt"),
        ([*base, "--methods", "linear", "--points", "1", "--force"], "--points"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1, err
    # resume adds a method without recomputing the finished ones
    assert main([*base, "--methods", "linear,ot+wa,arc", "--resume"]) == 0
    again = ConnectionReport.load(out)
    assert again.computed == ["linear", "ot+wa", "arc"]
    np.testing.assert_array_equal(again.acc["linear"]["train"], rep.acc["linear"]["train"])


def test_connect_adds_trained_curves_as_rows(tmp_path, capsys):
    paths = _ckpts(tmp_path, "mlp", {"widths": [16]}, 3)
    curve_file = tmp_path / "curve.pt"
    fit = ["curve", "fit", *MLP_ARGS, "--ckpt", paths[0], "--ckpt", paths[1], "--epochs", "1"]
    assert main([*fit, "--out", str(curve_file)]) == 0
    out = tmp_path / "conn.h5"
    base = ["connect", *MLP_ARGS, "--ckpt", paths[0], "--ckpt", paths[1], "--points", "3", "--methods", "linear"]
    assert main([*base, "--curve", str(curve_file), "--curve", f"mine={curve_file}", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| Bezier (3) |" in printed and "| mine |" in printed
    # a curve between other checkpoints is refused
    other = ["connect", *MLP_ARGS, "--ckpt", paths[0], "--ckpt", paths[2], "--methods", "linear"]
    assert main([*other, "--curve", str(curve_file), "--out", str(tmp_path / "o.h5")]) == 2
    assert "does not end at B" in capsys.readouterr().err


def test_connect_a_convnet_recomputes_batchnorm_and_a_resnet_gets_wa(tmp_path, capsys):
    from landscape.connect import ConnectionReport

    kwargs = {"width": 4, "batch_norm": True}
    paths = _ckpts(tmp_path, "small_cnn", kwargs, 2)
    out = tmp_path / "conv.h5"
    argv = ["connect", "--model", "small_cnn", "--model-kwargs", json.dumps(kwargs), "--data", "digits:image"]
    argv += ["--no-progress", "--ckpt", paths[0], "--ckpt", paths[1], "--points", "3", "--out", str(out)]
    assert main([*argv, "--methods", "linear,ot,linear+wa"]) == 0
    printed = capsys.readouterr().out
    assert "| OT (stage 1) |" in printed and "| Linear + WA (paper) (step 3) |" in printed
    rep = ConnectionReport.load(out)
    assert rep.attrs["bn"] == "recompute" and rep.computed == ["linear", "ot", "linear+wa"]
    # residual networks: WA through the cuts of the graph (stem, 9 block sums, logits)
    rkw = {"width": 2, "in_channels": 1}
    rpaths = [str(tmp_path / f"r{i}.pt") for i in range(2)]
    for i, p in enumerate(rpaths):
        torch.manual_seed(i)
        torch.save(ls.build_model("resnet20", rkw).state_dict(), p)
    res = ["connect", "--model", "resnet20", "--model-kwargs", json.dumps(rkw), "--data", "digits:image"]
    res += ["--no-progress", "--ckpt", rpaths[0], "--ckpt", rpaths[1], "--points", "2", "--max-samples", "32"]
    # the paper has no residual form of WA: the default takes ours, says so, and labels the rows
    assert main([*res, "--methods", "linear,arc+wa", "--out", str(tmp_path / "r.h5")]) == 0
    captured = capsys.readouterr()
    assert "| Arc + WA (bias column) (step 11) |" in captured.out and "skipped" not in captured.out
    assert "residual networks are adjusted at the cuts of their graph with a bias column only" in captured.err
    # a model whose channels cannot be followed: one line, exit 2
    bad = ["connect", "--model", "resnet20", "--model-kwargs", '{"width": 2, "in_channels": 1}', "--data", "digits"]
    assert main([*bad, "--ckpt", paths[0], "--ckpt", paths[1], "--out", str(tmp_path / "x.h5")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_wa_ensemble_writes_the_curve_and_refuses_bad_input(tmp_path, capsys):
    from landscape.connect import WAEnsembleCurve

    kwargs = {"widths": [16, 8]}
    paths = _ckpts(tmp_path, "mlp", kwargs, 3)
    out = tmp_path / "ens.h5"
    argv = ["wa-ensemble", *MLP_ARGS[:2], "--model-kwargs", json.dumps(kwargs), *MLP_ARGS[4:]]
    argv += [a for p in paths for a in ("--ckpt", p)]
    assert main([*argv, "--out", str(out), "--plot"]) == 0
    printed = capsys.readouterr().out
    assert "| Ind |" in printed and "| WA(1) |" in printed and "ens-wa-ensemble.png" in printed
    curve = WAEnsembleCurve.load(out)
    assert curve.head_layers == [1, 2, 3] and curve.sizes == [1, 2, 3]
    for extra, fragment in (
        ([], "already exists"),
        (["--force", "--head-layers", "0,9"], "1..3"),
    ):
        assert main([*argv, "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1, err
    res = ["wa-ensemble", "--model", "resnet20", "--data", "digits:image", "--ckpt", paths[0], "--ckpt", paths[1]]
    assert main([*res, "--out", str(tmp_path / "c.h5")]) == 2
    assert "MLPs and sequential convnets" in capsys.readouterr().err


def test_connection_model_then_connect_with_its_row(tmp_path, capsys):
    paths = _ckpts(tmp_path, "mlp", {"widths": [16]}, 3)
    cm = tmp_path / "bij.pt"
    argv = ["connection-model", *MLP_ARGS, *[a for p in paths for a in ("--ckpt", p)], "--epochs", "2"]
    assert main([*argv, "--bijection", "--bijection-epochs", "1", "--out", str(cm)]) == 0
    assert "Bijection connection model (realnvp, 1 flows" in capsys.readouterr().out
    assert main([*argv, "--out", str(cm)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    out = tmp_path / "c.h5"
    conn = ["connect", *MLP_ARGS, "--ckpt", paths[0], "--ckpt", paths[1], "--methods", "linear", "--points", "3"]
    assert main([*conn, "--connection-model", str(cm), "--out", str(out)]) == 0
    assert "| Bijection (realnvp) |" in capsys.readouterr().out
    # the convnet recipe: aligned pool and Gaussian base; connect then runs two stages
    aligned = tmp_path / "aligned.pt"
    assert main([*argv, "--align", "--base", "gaussian", "--holdout", "1", "--out", str(aligned)]) == 0
    assert ls.connect.flows.load_connection_model(aligned)[2]["template"] is not None
    capsys.readouterr()
    assert main([*conn, "--connection-model", str(aligned), "--out", str(tmp_path / "a.h5")]) == 0
    assert "| Flow (realnvp) (stage 2) |" in capsys.readouterr().out
    assert main([*argv, "--holdout", "2", "--out", str(tmp_path / "h.pt")]) == 2
    assert "--holdout 2: expected 0..1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "method,extra,members",
    [
        ("fge", ["--cycles", "2", "--cycle-length", "4", "--lr-min", "0.001"], 2),
        ("sse", ["--epochs", "2", "--cycles", "2"], 2),
        ("swa", ["--epochs", "2", "--include-start"], 1),
        ("swa", ["--epochs", "3", "--swa-start", "1", "--swa-lr", "0.01", "--swa-c-epochs", "2"], 1),
    ],
)
def test_ensemble_methods_save_members_and_print_the_ensemble(tmp_path, capsys, method, extra, members):
    paths = _ckpts(tmp_path, "mlp", {"widths": [16]}, 1)
    out = tmp_path / "run"
    argv = ["ensemble", method, *MLP_ARGS, "--ckpt", paths[0], "--max-samples", "200", "--out", str(out), *extra]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{members} member(s)" in printed and f"| {method.upper()} |" in printed
    saved = sorted(p for p in os.listdir(out) if p.endswith(".pt") and p != "sgd.pt")
    assert len(saved) == members and os.path.exists(out / f"{method}-schedule.png")
    assert os.path.exists(out / "ensembles-budget.png")
    assert os.path.exists(out / "fge-snapshots.png") == (method == "fge")
    record = ls.ensembles.read_ensemble_run(out / f"{method}-run.h5")  # kind ensemble-run
    assert record["done"].all() and sorted(record["members"]) == saved
    assert record["method"] == method and "lr" in record["arrays"]
    if method == "swa":  # the width line through the SWA and SGD solutions
        width = ls.io.open_result(out / "swa-width.h5")
        assert width.attrs["surface-type"] == "swa-width" and np.isfinite(width.read_metric("test_err")).all()
        assert os.path.exists(out / "swa-width-line-loss.png")
    if "--swa-start" in extra:  # 2 iterations per epoch; averaged after epochs 1 and 3, one optimizer
        assert list(record["arrays"]["collected"]) == [2, 6]
        np.testing.assert_allclose(record["arrays"]["lr"], [0.05, 0.05, 0.01, 0.01, 0.01, 0.01])
    assert main(argv) == 2  # not empty: refuses without --force
    assert "--force" in capsys.readouterr().err


def test_ensemble_against_independent_networks_at_the_same_budget(tmp_path, capsys):
    from landscape.ensembles import EnsembleComparison

    paths = _ckpts(tmp_path, "mlp", {"widths": [16]}, 1)
    out = tmp_path / "run"
    argv = ["ensemble", "fge", *MLP_ARGS, "--ckpt", paths[0], "--max-samples", "200", "--out", str(out)]
    argv += ["--cycles", "2", "--cycle-length", "6", "--lr-min", "0.001", "--compare-independent"]
    assert main(argv) == 2  # the budget of --ckpt is unknown
    assert "--start-epochs" in capsys.readouterr().err
    assert main([*argv, "--start-epochs", "2", "--independent-epochs", "1"]) == 0
    printed = capsys.readouterr().out
    # 200 samples, batches of 128: 1 FGE iteration per epoch, 12 iterations -> 2 + 12 = 14 epochs
    assert "training 14 independent network(s) of 1 epochs" in printed and "| Ind (14 x 1 epochs) |" in printed
    c = EnsembleComparison.load(out / "ensembles.h5")
    assert c.labels == ["FGE", "Ind (14 x 1 epochs)"] and list(c.members) == [2, 14]
    assert list(c.per_member["budget"][0, :2]) == [5.0, 11.0] and c.budgets[1] == 14
    # interrupted after the FGE part and 5 independent networks: --resume trains only the rest
    for j in range(5, 14):
        os.remove(out / f"ind-{j}.pt")
    before = {p: os.path.getmtime(out / p) for p in ("fge-iter3.pt", "ind-4.pt")}
    full = [*argv, "--start-epochs", "2", "--independent-epochs", "1"]
    assert main(full) == 2 and "--resume" in capsys.readouterr().err
    assert main([*full, "--resume"]) == 0
    assert "resuming: fge members" in capsys.readouterr().out
    assert {p: os.path.getmtime(out / p) for p in before} == before
    again = EnsembleComparison.load(out / "ensembles.h5")
    np.testing.assert_array_equal(again.per_member["member_acc"], c.per_member["member_acc"])
    ind = ls.ensembles.read_ensemble_run(out / "ind-run.h5")
    assert ind["done"].all() and ind["budgets"].tolist() == list(range(1, 15))
    assert not [p for p in os.listdir(out) if p.endswith(".resume")]
    assert main([*argv, "--start-epochs", "2", "--independent-epochs", "1", "--resume", "--lr", "0.2"]) == 2
    assert "fge-run.h5': its 'lr' is 0.05 but this run has 0.2" in capsys.readouterr().err
    assert main([*full, "--resume", "--lr-independent", "0.1"]) == 2
    assert "ind-run.h5': its 'lr' is 0.05 but this run has 0.1" in capsys.readouterr().err


def test_ensemble_fge_needs_its_settings(tmp_path, capsys):
    paths = _ckpts(tmp_path, "mlp", {"widths": [16]}, 1)
    assert main(["ensemble", "fge", *MLP_ARGS, "--ckpt", paths[0], "--out", str(tmp_path / "o")]) == 2
    assert "--cycle-length" in capsys.readouterr().err
    assert main(["ensemble", "swa", *MLP_ARGS, "--out", str(tmp_path / "o")]) == 2
    assert "--ckpt" in capsys.readouterr().err


def test_variational_then_predict_three_schemes(tmp_path, capsys):
    vfile = tmp_path / "var.pt"
    argv = ["variational", "--model", "mlp", "--model-kwargs", '{"in_features": 64, "widths": [64]}']
    argv += ["--data", "digits", "--max-samples", "300", "--epochs", "3", "--no-progress", "--out", str(vfile)]
    assert main([*argv, "--parameterization", "variance", "--plain-layers", "9"]) == 2
    err = capsys.readouterr().err
    assert "--plain-layers 9" in err and "['1', '3']" in err and len(err.strip().splitlines()) == 1
    assert main([*argv, "--parameterization", "variance", "--plain-layers", "3", "--plot"]) == 0
    assert "variance network, 3 epochs" in capsys.readouterr().out and os.path.exists(tmp_path / "var-snr.png")
    assert main([*argv, "--parameterization", "variance"]) == 2  # exists
    assert "--force" in capsys.readouterr().err
    pred = ["predict", "--ckpt", str(vfile), "--data", "digits", "--max-samples", "200", "--samples", "5"]
    out = tmp_path / "pred.h5"
    assert main([*pred, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| deterministic |" in printed and "| ensemble |" in printed
    with ls.io.open_result(out) as f:
        acc = f.read_metric("acc")
        assert f.kind == "predict" and f.attrs["schemes"] == ["deterministic", "stochastic", "ensemble"]
    # zero means: the deterministic prediction is one class for every input
    y = ls.load_data("digits", "test", max_samples=200).y.numpy()
    assert acc[0] in {float((y == c).mean()) for c in range(10)}
    for extra, fragment in ((["--schemes", "mean"], "--schemes 'mean'"), (["--samples", "0"], "--samples 0")):
        assert main([*pred, *extra]) == 2
        assert fragment in capsys.readouterr().err
    assert main(["predict", "--ckpt", str(tmp_path / "var-snr.png"), "--data", "digits"]) == 2
    assert "not a readable safe PyTorch file" in capsys.readouterr().err
