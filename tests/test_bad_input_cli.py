"""Bad input through the command line, as a new user types it (issue 17).

Every case runs in a folder holding the files a user would have (two checkpoints, a data file, a
finished result file, a text file, an empty file, a folder) and asserts: exit code 2, exactly one
line on stderr that starts ``landscape`` and names what arrived and what was expected, no
traceback, and every file that was there before unchanged (same names, same SHA-256), nothing new.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import landscape as ls
from landscape.cli import main

MLP = ["--model", "mlp", "--model-kwargs", '{"widths": [16]}']
DIGITS = [*MLP, "--data", "digits", "--no-progress"]


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """The files of the user's folder, made once; each test copies them."""
    d = tmp_path_factory.mktemp("originals")
    for i in range(2):
        torch.manual_seed(i)
        torch.save(ls.build_model("mlp", {"widths": [16]}).state_dict(), d / f"c{i}.pt")
    rng = np.random.default_rng(0)
    np.savez(d / "data.npz", x=rng.standard_normal((20, 64)).astype(np.float32), y=rng.integers(0, 10, 20))
    (d / "empty.pt").write_bytes(b"")
    (d / "empty.npz").write_bytes(b"")
    (d / "notes.txt").write_text("hello\n")
    (d / "config.toml").write_text("[[[not toml\n")
    (d / "adir").mkdir()
    cwd = os.getcwd()
    os.chdir(d)
    try:
        assert main(["eval", *DIGITS, "--ckpt", "c0.pt", "--out", "r.h5"]) == 0
    finally:
        os.chdir(cwd)
    return d


@pytest.fixture
def user_dir(originals, tmp_path, monkeypatch):
    import shutil

    d = tmp_path / "work"
    shutil.copytree(originals, d)
    monkeypatch.chdir(d)
    return d


# (argv, fragments that must all be in the one line). Each names the bad value and what was expected.
CASES = [
    # checkpoints
    (["eval", *DIGITS, "--ckpt", "empty.pt"], ["'empty.pt' is empty", "expected a file written by torch.save"]),
    (["eval", *DIGITS, "--ckpt", "notes.txt"], ["'notes.txt' is not a readable PyTorch checkpoint", "expected"]),
    (["eval", *DIGITS, "--ckpt", "adir"], ["'adir' is a directory but not a model folder", "expected"]),
    (["eval", *DIGITS, "--ckpt", "nosuch.pt"], ["'nosuch.pt' does not exist"]),
    (
        ["eval", "--model", "mlp", "--model-kwargs", '{"widths": [8]}', "--data", "digits", "--ckpt", "c0.pt"],
        ["does not match the model", "(16, 64) in the checkpoint and (8, 64) in the model"],
    ),
    # models
    (["eval", "--model", "nosuchmodel", "--data", "digits", "--ckpt", "c0.pt"], ["nosuchmodel"]),
    (["eval", "--model", "mlp", "--model-kwargs", "{bad", "--data", "digits", "--ckpt", "c0.pt"], ["not valid JSON"]),
    (
        ["eval", "--model", "mlp", "--model-kwargs", "[1]", "--data", "digits", "--ckpt", "c0.pt"],
        ["model kwargs must be a dict or a JSON object, got list"],
    ),
    (
        ["eval", "--model", "mlp", "--model-kwargs", '{"nope": 1}', "--data", "digits", "--ckpt", "c0.pt"],
        ["rejected kwargs {'nope': 1}", "unexpected keyword argument 'nope'"],
    ),
    (
        ["eval", "--model", "hf:adir", "--data", "digits", "--ckpt", "c0.pt"],
        ["'adir' is not a Hugging Face model folder"],
    ),
    (["eval", "--model", "py:nosuchmod:f", "--data", "digits", "--ckpt", "c0.pt"], ["'py:nosuchmod:f'", "expected"]),
    # data
    (["eval", *MLP, "--data", "missing.npz", "--ckpt", "c0.pt"], ["'missing.npz' does not exist", "expected"]),
    (["eval", *MLP, "--data", "notes.txt", "--ckpt", "c0.pt"], ["'notes.txt'", "expected an .npz/.pt file"]),
    (
        ["eval", *MLP, "--data", "synthetic:n=oops", "--ckpt", "c0.pt"],
        ["cannot parse data spec", "expected synthetic:"],
    ),
    (["eval", *MLP, "--data", "py:nosuchmod:f", "--ckpt", "c0.pt"], ["could not import module 'nosuchmod'"]),
    (
        ["eval", *MLP, "--data", "text:nosuch.txt", "--ckpt", "c0.pt"],
        ["text path 'nosuch.txt' does not exist", "expected"],
    ),
    (["eval", *MLP, "--data", "cifar10:adir", "--ckpt", "c0.pt"], ["CIFAR directory 'adir' lacks", "expected"]),
    (["eval", *MLP, "--data", "digits", "--data-kwargs", "[1, 2]", "--ckpt", "c0.pt"], ["data kwargs must be a dict"]),
    (
        ["eval", *MLP, "--data", "data.npz", "--data-kwargs", '{"nope": 1}', "--ckpt", "c0.pt"],
        ["data kwargs {'nope': 1} apply to py:<module>:<function> specs"],
    ),
    (["eval", *DIGITS, "--seq-len", "0", "--ckpt", "c0.pt"], ["seq_len applies to text:<path> specs, not to 'digits'"]),
    (
        ["eval", *DIGITS, "--ckpt", "c0.pt", "--split", "nosuch"],
        ["split 'nosuch' is not one of ['train', 'test', 'all']"],
    ),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--max-samples", "0"], ["max_samples must be a positive int or None, got 0"]),
    (
        ["eval", *DIGITS, "--ckpt", "c0.pt", "--max-samples", "-5"],
        ["max_samples must be a positive int or None, got -5"],
    ),
    # metrics and engine
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--metrics", "nosuch"], ["unknown metric 'nosuch'; expected one of"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--batch-size", "0"], ["batch_size should be a positive integer", "got 0"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--points-per-pass", "0"], ["points_per_pass should be a positive integer"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--max-memory", "lots"], ["'lots' is not a size"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--max-memory", "1"], ["max_memory=1 bytes is too small for one point"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--precision", "fp8"], ["--precision: invalid choice: 'fp8'", "fp32"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--bn", "nosuch"], ["--bn: invalid choice: 'nosuch'", "running"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--path", "gpu"], ["--path: invalid choice: 'gpu'", "fused"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--device", "tpu9"], ["--device: 'tpu9' is not a device; expected cpu"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--device", "meta"], ["--device: 'meta' is not a device landscape runs on"]),
    # output files and options
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--out", "r.h5"], ["'r.h5' already exists; pass --resume", "--force"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--out", "r.h5", "--resume", "--force"], ["--resume and --force contradict"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--config", "nosuch.toml"], ["--config 'nosuch.toml'", "No such file"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--config", "notes.txt"], ["--config 'notes.txt' is not valid JSON"]),
    (["eval", *DIGITS, "--ckpt", "c0.pt", "--config", "config.toml"], ["--config 'config.toml'"]),
    (["eval", *DIGITS], ["the following arguments are required: --ckpt", "landscape eval --help"]),
    (["nocommand"], ["invalid choice: 'nocommand'", "'landscape --help'"]),
    # surfaces
    (
        ["surface", *DIGITS, "--ckpt", "c0.pt", "--type", "line", "--x", "1:0:5", "--out", "s.h5"],
        ["'1:0:5' needs MAX > MIN"],
    ),
    (
        ["surface", *DIGITS, "--ckpt", "c0.pt", "--type", "line", "--x", "a:b:c", "--out", "s.h5"],
        ["range 'a:b:c' should be MIN:MAX:COUNT"],
    ),
    (
        ["surface", *DIGITS, "--ckpt", "c0.pt", "--type", "line", "--x", "0:1:0", "--out", "s.h5"],
        ["range '0:1:0' needs finite bounds and COUNT >= 1"],
    ),
    (
        ["surface", *DIGITS, "--ckpt", "c0.pt", "--type", "line", "--x", "0:1:nan", "--out", "s.h5"],
        ["range '0:1:nan' should be MIN:MAX:COUNT"],
    ),
    (["surface", *DIGITS, "--ckpt", "c0.pt", "--type", "interpolate", "--out", "s.h5"], ["needs 2 --ckpt, got 1"]),
    (
        ["surface", *DIGITS, "--ckpt", "c0.pt", "--ckpt", "c1.pt", "--type", "three-point", "--out", "s.h5"],
        ["--type three-point needs 3 --ckpt, got 2"],
    ),
    (
        ["surface", *DIGITS, "--type", "pca", "--trajectory", "adir", "--out", "s.h5"],
        ["--trajectory folder 'adir' holds no .pt/.pth/.safetensors files"],
    ),
    (
        ["surface", *DIGITS, "--ckpt", "c0.pt", "--type", "plane", "--out", "r.h5", "--resume"],
        ["cannot resume 'r.h5': it is a 'eval' result but this run makes 'plane'"],
    ),
    (["surface", *DIGITS, "--ckpt", "c0.pt", "--type", "plane", "--norm", "nosuch", "--out", "s.h5"], ["--norm"]),
    # files of results
    (["info", "nosuch.h5"], ["'nosuch.h5' does not exist"]),
    (["info", "notes.txt"], ["'notes.txt' is truncated or not an HDF5 file", "expected a landscape result file"]),
    (["info", "adir"], ["'adir' is a directory; expected a landscape result file"]),
    (["plot", "nosuch.h5"], ["'nosuch.h5' does not exist"]),
    (["plot", "r.h5", "--metrics", "nosuch"], ["'r.h5' has no metric 'nosuch'; it has ['loss', 'acc']"]),
    (["plot", "r.h5", "--out", "notes.txt"], ["figure folder 'notes.txt' is a file; expected a folder"]),
    (["plot", "r.h5", "--format", "bmpx"], ["figure format(s) ['bmpx'] not supported; expected some of"]),
    (["export", "r.h5", "--vtp", "o.vtp"], ["needs a plane (2-D grid) but 'r.h5' is a 'eval' result"]),
    (["rerun", "notes.txt"], ["'notes.txt' is truncated or not an HDF5 file"]),
    # curves
    (["curve", "fit", *DIGITS, "--ckpt", "c0.pt", "--out", "cv.pt"], ["curve fit needs two --ckpt", "got 1"]),
    (
        ["curve", "fit", *DIGITS, "--ckpt", "c0.pt", "--ckpt", "c1.pt", "--out", "cv.pt", "--bends", "-1"],
        ["n_bends should be a non-negative integer, got -1"],
    ),
    (
        ["curve", "fit", *DIGITS, "--ckpt", "c0.pt", "--ckpt", "c1.pt", "--out", "cv.pt", "--epochs", "0"],
        ["epochs should be a positive integer, got 0"],
    ),
    (
        ["curve", "eval", *DIGITS, "--curve", "c0.pt", "--out", "ce.h5"],
        ["'c0.pt' is not a landscape curve file (no format 'landscape-curve')"],
    ),
    (["curve", "eval", *DIGITS, "--curve", "nosuch.pt", "--out", "ce.h5"], ["curve file 'nosuch.pt' does not exist"]),
    # connections and ensembles
    (
        ["connect", *DIGITS, "--ckpt", "c0.pt", "--ckpt", "c1.pt", "--methods", "nosuch", "--out", "cn.h5"],
        ["--methods 'nosuch': unknown ['nosuch']; expected some of"],
    ),
    (
        ["connect", *DIGITS, "--ckpt", "c0.pt", "--ckpt", "c1.pt", "--points", "1", "--out", "cn.h5"],
        ["--points should be at least 2, got 1"],
    ),
    (["connect", *DIGITS, "--ckpt", "c0.pt", "--out", "cn.h5"], ["connect needs two --ckpt (A and B), got 1"]),
    (["wa-ensemble", *DIGITS, "--ckpt", "c0.pt", "--out", "wa.h5"], ["wa-ensemble needs at least two --ckpt, got 1"]),
    (
        ["connection-model", *DIGITS, "--ckpt", "c0.pt", "--out", "cm.pt"],
        ["connection-model needs at least two --ckpt"],
    ),
    (["ensemble", "fge", *DIGITS, "--out", "ens"], ["ensemble fge starts from a trained checkpoint: pass --ckpt"]),
    (
        ["ensemble", "sse", *DIGITS, "--epochs", "0", "--out", "ens"],
        ["epochs and cycles should be positive integers, got 0"],
    ),
    (
        ["ensemble", "swa", *DIGITS, "--ckpt", "c0.pt", "--lr", "-1", "--out", "ens"],
        ["lr should be a positive number, got -1.0"],
    ),
    # Hessians and variational networks
    (["hessian", "eig", *DIGITS, "--ckpt", "c0.pt", "--top", "0"], ["--top 0: expected a positive integer"]),
    (["hessian", "trace", *DIGITS, "--ckpt", "c0.pt", "--samples", "0"], ["--samples 0: expected a positive integer"]),
    (
        ["hessian", "density", *DIGITS, "--ckpt", "c0.pt", "--out", "r.h5"],
        ["--out 'r.h5' is the figure: pass a .png or .pdf"],
    ),
    (["variational", *DIGITS, "--epochs", "0", "--out", "v.pt"], ["--epochs 0: expected a positive integer"]),
    (["variational", *DIGITS, "--out", "v.pt", "--lr", "0"], ["expected batch_size >= 1, lr > 0", "lr=0.0"]),
    (["variational", *DIGITS, "--out", "c0.pt"], ["'c0.pt' already exists; pass --force"]),
    (
        ["predict", "--ckpt", "c0.pt", "--data", "digits"],
        ["'c0.pt' is not a variational network file", "expected format 'landscape-variational'"],
    ),
    (["predict", "--ckpt", "nosuch.pt", "--data", "digits"], ["'nosuch.pt' does not exist"]),
    (["demo", "--out", "notes.txt"], ["demo output 'notes.txt' is a file; expected a folder"]),
    # loss-landscape's surface files (issue 19 item 3)
    (
        ["import-ll", "notes.txt", "--out", "ll.h5"],
        [
            "'notes.txt' is truncated or not an HDF5 file (no HDF5 signature); expected a surface file written by loss-landscape's plot_surface.py"
        ],
    ),
    (["import-ll", "r.h5", "--out", "ll.h5"], ["'r.h5' is already a landscape result file (kind 'eval')"]),
    (["import-ll", "nosuch.h5", "--out", "ll.h5"], ["'nosuch.h5' does not exist; expected a surface file"]),
    (["import-ll", "adir", "--out", "ll.h5"], ["'adir' is a directory; expected a surface file"]),
    (["import-ll", "r.h5", "--out", "r.h5", "--force"], ["--out 'r.h5' is the input file"]),
    (["export", "r.h5", "--ll", "ll.h5"], ["needs a line or plane with array(s) 'x' but 'r.h5' is a 'eval' result"]),
    (["export", "r.h5"], ["export needs --vtp OUT.vtp or --ll OUT.h5"]),
    (["export", "r.h5", "--vtp", "o.vtp", "--log", "ln"], ["argument --log: invalid choice: 'ln'"]),
    # curves: the learning rate, and dnn-mode-connectivity's curve checkpoints (issues 17, 19 item 4)
    (
        ["curve", "fit", *DIGITS, "--ckpt", "c0.pt", "--ckpt", "c1.pt", "--out", "cv.pt", "--lr", "-1"],
        ["lr should be a positive number, got -1.0"],
    ),
    (
        ["curve", "import", "c0.pt", *MLP, "--out", "cv.pt"],
        ["'c0.pt' is not a dnn-mode-connectivity curve checkpoint: key '1.weight'", "expected CurveNet's keys"],
    ),
]


@pytest.mark.parametrize("argv,fragments", CASES, ids=[" ".join(a)[:80] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_no_file_changes(user_dir, capsys, argv, fragments, folder_state):
    before = folder_state(user_dir)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("landscape") and ": error: " in line
    assert "Traceback" not in captured.err and "--debug for the traceback" not in line
    for fragment in fragments:
        assert fragment in line, line
    assert folder_state(user_dir) == before


def test_there_are_at_least_sixty_distinct_cases():
    assert len({tuple(a) for a, _ in CASES}) >= 60
