"""Paths and temporary files (issue 17): empty data and checkpoint files, output paths that
cannot be written, a directory given as --out, --y on a line, temporary files removed on a
clean interruption (Ctrl-C, SIGTERM) and stale ones of killed runs removed by the next run.
CLI: exit code 2, one line, no traceback, files that existed before keep their checksums."""

import errno
import inspect
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import landscape as ls
from landscape.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLP = '{"in_features": 64, "widths": [16]}'
ARGS = ["--model", "mlp", "--model-kwargs", MLP, "--no-progress"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working folder with two checkpoints, an empty .pt and an empty .npz."""
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        torch.manual_seed(i)
        torch.save(ls.build_model("mlp", {"in_features": 64, "widths": [16]}).state_dict(), tmp_path / f"c{i}.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "d").mkdir()
    return tmp_path


def _refused(argv, capsys, folder, folder_state, *expected):
    """Exit code 2, one line naming what arrived and what was expected, no traceback, nothing
    changed on disk."""
    before = folder_state(folder)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("landscape: error: "), err
    assert "Traceback" not in err and ".tmp-" not in err, err
    for text in expected:
        assert text in err, err
    assert folder_state(folder) == before
    return err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------ empty files


@pytest.mark.parametrize("name", ["empty.pt", "empty.npz"])
def test_empty_data_file_is_one_line(folder, capsys, name, folder_state):
    """An empty .pt gave IndexError, an empty .npz EOFError."""
    kind = ".npz archive" if name.endswith(".npz") else "torch.save file"
    argv = ["eval", *ARGS, "--data", name, "--ckpt", "c0.pt"]
    _refused(argv, capsys, folder, folder_state, f"data file '{name}' is empty (0 bytes); expected a", kind)


def test_empty_data_file_raises_data_error(folder):
    with pytest.raises(ls.data.DataError, match=r"'empty\.npz' is empty \(0 bytes\); expected an \.npz archive"):
        ls.load_data("empty.npz", "test")
    (folder / "text.pt").write_bytes(b"hello")  # torch.load: KeyError 101
    with pytest.raises(ls.data.DataError, match=r"'text\.pt' .*not a torch\.save file .*; expected a torch\.save file"):
        ls.load_data("text.pt", "test")


@pytest.mark.parametrize("name", ["empty.pt", "empty.npz"])
def test_empty_checkpoint_is_one_line(folder, capsys, name, folder_state):
    argv = ["eval", *ARGS, "--data", "digits", "--max-samples", "10", "--ckpt", name]
    err = _refused(argv, capsys, folder, folder_state, f"checkpoint '{name}'", "expected")
    assert "IndexError" not in err and "EOFError" not in err


# ------------------------------------------------------------------------ output paths


def test_output_in_a_missing_folder_names_the_users_path(folder, capsys, folder_state):
    """The message named the hidden temporary file '.r.h5.tmp-PID'."""
    argv = ["eval", *ARGS, "--data", "digits", "--max-samples", "10", "--ckpt", "c0.pt", "--out", "no/r.h5"]
    _refused(argv, capsys, folder, folder_state, "cannot write 'no/r.h5': its folder", "does not exist")
    argv = ["curve", "fit", *ARGS, "--data", "digits", "--max-samples", "10", "--ckpt", "c0.pt", "--ckpt", "c1.pt"]
    _refused(
        [*argv, "--epochs", "1", "--out", "no/c.pt"], capsys, folder, folder_state, "cannot write 'no/c.pt': its folder"
    )


def test_api_output_in_a_missing_folder(folder):
    with pytest.raises(ls.io.ResultFileError, match=r"cannot write 'no/r\.h5': its folder '.*no' does not exist"):
        ls.io.create_result("no/r.h5", kind="eval", shape=(2,), metrics=["loss"], attrs={})
    with pytest.raises(FileNotFoundError, match=r"cannot write 'no/w\.pt': its folder"):
        ls.weights.save_weights({"a": torch.zeros(2)}, "no/w.pt")
    assert not os.path.exists("no")


def test_write_errors_name_the_users_path_and_leave_no_temporary_file(folder):
    def full_disk(tmp):
        with open(tmp, "w") as f:
            f.write("partial")
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    with pytest.raises(OSError) as info:
        ls.io.atomic_write("out.pt", full_disk)
    assert str(info.value) == "cannot write 'out.pt': No space left on device"
    assert not [n for n in os.listdir(folder) if ".tmp-" in n or n == "out.pt"]


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_directory_as_out_says_a_file_path_is_expected(folder, capsys, force, folder_state):
    """It suggested --force, which then refused."""
    data = ["--data", "digits", "--max-samples", "10"]
    err = _refused(
        ["eval", *ARGS, *data, "--ckpt", "c0.pt", "--out", "d", *force],
        capsys,
        folder,
        folder_state,
        "'d' is a directory; expected a file path",
    )
    assert "--force" not in err and "--resume" not in err
    argv = ["curve", "fit", *ARGS, *data, "--ckpt", "c0.pt", "--ckpt", "c1.pt", "--epochs", "1", "--out", "d"]
    _refused([*argv, *force], capsys, folder, folder_state, "'d' is a directory; expected a file path")


def test_y_on_a_line_is_refused(folder, capsys, folder_state):
    """``surface interpolate --y ...`` ignored --y."""
    argv = ["surface", *ARGS, "--data", "digits", "--max-samples", "10", "--ckpt", "c0.pt", "--ckpt", "c1.pt"]
    argv += ["--x", "0:1:3", "--y", "0:1:3", "--out", "s.h5"]
    _refused(argv, capsys, folder, folder_state, "--y 0:1:3 was given but a interpolate surface is a line")
    line = ["surface", *ARGS, "--data", "digits", "--max-samples", "10", "--ckpt", "c0.pt", "--type", "line"]
    _refused(
        [*line, "--y", "-1:1:3", "--out", "s.h5"], capsys, folder, folder_state, "a line surface is a line (--x only)"
    )


# ------------------------------------------------------------------------ temporary files


def test_export_writes_through_the_one_temporary_file_helper():
    import landscape.plot.export as export

    source = inspect.getsource(export)
    assert "getpid" not in source and "tmp-" not in source and "atomic_write" in source


def test_stale_temporary_files_of_dead_processes_are_removed_by_the_next_write(folder):
    dead = _dead_pid()
    stale = folder / f".w.pt.tmp-{dead}"
    alive = folder / ".w.pt.tmp-1"  # pid 1 runs: its file may be in use
    other = folder / f".x.pt.tmp-{dead}"  # another output's: not ours to touch
    for p in (stale, alive, other):
        p.write_bytes(b"")
    ls.weights.save_weights({"a": torch.zeros(2)}, folder / "w.pt")
    assert not stale.exists() and alive.exists() and other.exists()
    assert (folder / "w.pt").exists()


def test_a_resumed_result_file_removes_stale_temporary_files(folder):
    path = folder / "r.h5"
    ls.io.create_result(path, kind="eval", shape=(2,), metrics=["loss"], attrs={}).close()
    stale = folder / f".r.h5.tmp-{_dead_pid()}"
    stale.write_bytes(b"")
    ls.io.open_or_create(path, kind="eval", shape=(2,), metrics=["loss"], attrs={}, resume=True).close()
    assert not stale.exists()
    assert ls.io.remove_stale_temps(path) == []


def test_keyboard_interrupt_while_writing_leaves_no_temporary_file(folder):
    def interrupted(tmp):
        with open(tmp, "wb"):
            pass
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ls.io.atomic_write("c.pt", interrupted)
    assert not [n for n in os.listdir(folder) if ".tmp-" in n]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_curve_fit_stopped_by_a_signal_leaves_no_temporary_file_and_resumes(folder, sig):
    """A zero-byte '.c.pt.tmp-PID' stayed next to the output of a killed curve fit."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    stale = folder / f".c.pt.tmp-{_dead_pid()}"  # left by an earlier kill -9
    stale.write_bytes(b"")
    argv = [sys.executable, "-m", "landscape", "curve", "fit", *ARGS, "--data", "digits", "--max-samples", "64"]
    argv += ["--ckpt", "c0.pt", "--ckpt", "c1.pt", "--epochs", "100000", "--out", "c.pt"]
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (folder / "c.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("landscape: interrupted;"), err
    assert sorted(n for n in os.listdir(folder) if n.startswith(".c.pt")) == []
    state = torch.load(folder / "c.pt", weights_only=False)
    assert state["epoch"] >= 1 and np.isfinite(state["history"][-1]["loss"])
