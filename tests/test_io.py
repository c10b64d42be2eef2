"""Tests of landscape.io: result files, their validation, and survival of kill -9."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from landscape import io as lio

IO_PATH = Path(lio.__file__).resolve()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "h5-format.md"

ATTRS = {
    "model": {"name": "mlp", "hidden": [32, 16], "act": None, "bn": False},
    "checkpoints": ["a.pt", "b.pt"],
    "sha256": "ab" * 32,
    "data": "digits",
    "seed": 7,
    "lr": 0.05,
    "exact": True,
    "nothing": None,
    "pair": (1, "two"),
    "np-int": np.int32(-3),
    "np-float": np.float32(0.25),
    "np-bool": np.bool_(False),
    "np-array": np.array([1.5, 2.5]),
    "looks-like-json": "json:not really",
    "empty": "",
    "unicode": "λ-max",
    "big-int": 2**70,
}


def make(path, shape=(4, 5), metrics=("loss", "accuracy"), **kwargs):
    kwargs.setdefault("attrs", {"seed": 0})
    return lio.create_result(path, kind="surface-2d", shape=shape, metrics=list(metrics), **kwargs)


def known(index):
    index = np.asarray(index)
    return {"loss": index * 0.5 + 1.0, "accuracy": -0.25 * index}


# --------------------------------------------------------------------------- round trips


def test_cells_attrs_and_arrays_round_trip(tmp_path):
    path = tmp_path / "out.h5"
    arrays = {
        "x": np.linspace(-1, 1, 4),
        "y": np.linspace(-1, 1, 5).astype(np.float32),
        "basis": np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32),
        "ids": np.arange(6, dtype=np.int16).reshape(2, 3),
    }
    chunks = [np.array([0, 1, 2]), np.array([19, 7]), np.array([13]), np.array([4, 3])]
    with make(path, attrs=ATTRS, arrays=arrays) as rf:
        assert rf.mode == "r+"
        for chunk in chunks:
            rf.write_cells(chunk, known(chunk))
    written = np.concatenate(chunks)

    with lio.open_result(path) as rf:
        assert rf.kind == "surface-2d"
        assert rf.shape == (4, 5)
        assert rf.metrics == ["loss", "accuracy"]
        done = rf.done
        assert done.dtype == bool and done.shape == (4, 5)
        assert sorted(np.flatnonzero(done)) == sorted(written)
        assert rf.pending().tolist() == sorted(set(range(20)) - set(written.tolist()))
        for name in rf.metrics:
            values = rf.read_metric(name)
            assert values.dtype == np.float64 and values.shape == (4, 5)
            flat = values.ravel()
            np.testing.assert_array_equal(flat[written], known(written)[name])
            assert np.isnan(np.delete(flat, written)).all()
        assert sorted(rf.array_names()) == sorted(arrays)
        for name, array in arrays.items():
            got = rf.read_array(name)
            assert got.dtype == array.dtype
            np.testing.assert_array_equal(got, array)

        attrs = rf.attrs
        assert attrs["model"] == {
            "name": "mlp",
            "hidden": [32, 16],
            "act": None,
            "bn": False,
        }
        assert attrs["checkpoints"] == ["a.pt", "b.pt"]
        assert attrs["nothing"] is None
        assert attrs["pair"] == [1, "two"]
        assert attrs["exact"] is True and attrs["np-bool"] is False
        assert attrs["seed"] == 7 and type(attrs["seed"]) is int
        assert attrs["np-int"] == -3 and type(attrs["np-int"]) is int
        assert attrs["lr"] == 0.05 and attrs["np-float"] == 0.25
        np.testing.assert_array_equal(attrs["np-array"], [1.5, 2.5])
        for key in ("sha256", "data", "looks-like-json", "empty", "unicode", "big-int"):
            assert attrs[key] == ATTRS[key]
        assert attrs["library-version"]
        assert re.match(r"\d{4}-\d\d-\d\dT", attrs["created"])
        assert "format" not in attrs and rf.schema_version == lio.SCHEMA_VERSION

    # What a plain h5py reader sees.
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == lio.FORMAT_NAME
        assert f.attrs["schema-version"] == lio.SCHEMA_VERSION
        for name in ("metrics/loss", "metrics/accuracy", "done"):
            assert f[name].chunks is None and f[name].compression is None
            assert f[name].maxshape == f[name].shape


def test_write_cells_validates_its_input(tmp_path):
    with make(tmp_path / "out.h5") as rf:
        with pytest.raises(ValueError, match="missing \\['accuracy'\\]"):
            rf.write_cells([0], {"loss": [1.0]})
        with pytest.raises(ValueError, match="unknown \\['bogus'\\]"):
            rf.write_cells([0], {**known([0]), "bogus": [1.0]})
        with pytest.raises(IndexError, match="out of range"):
            rf.write_cells([20], known([20]))
        with pytest.raises(ValueError, match="repeated"):
            rf.write_cells([3, 3], known([3, 3]))
        with pytest.raises(ValueError, match="2 entries for 1 cells"):
            rf.write_cells([3], {"loss": [1.0, 2.0], "accuracy": [0.0]})
        assert rf.done.sum() == 0  # nothing was written by the failed calls
    with (
        lio.open_result(tmp_path / "out.h5") as rf,
        pytest.raises(ValueError, match="read-only"),
    ):
        rf.write_cells([0], known([0]))


def test_attrs_that_cannot_be_stored_are_refused_before_any_file_exists(tmp_path):
    with pytest.raises(TypeError, match="'bad'.*complex"):
        make(tmp_path / "a.h5", attrs={"bad": 1j})
    with pytest.raises(TypeError, match="dict key 3"):
        make(tmp_path / "b.h5", attrs={"bad": {3: "x"}})
    with pytest.raises(ValueError, match="reserved"):
        make(tmp_path / "c.h5", attrs={"format": "mine"})
    assert list(tmp_path.iterdir()) == []


def test_update_attrs_and_add_metrics_keep_the_cells(tmp_path):
    path = tmp_path / "out.h5"
    with make(path, attrs={"seed": 1}) as rf:
        rf.write_cells([2, 9], known([2, 9]))
        rf.update_attrs({"finished": True, "elapsed-s": 1.5, "notes": {"a": [1]}})
        assert rf.attrs["finished"] is True and rf.mode == "r+"
        rf.add_metrics(["lambda-max"])
        assert rf.metrics == ["loss", "accuracy", "lambda-max"] and rf.base_metrics == ["loss", "accuracy"]
        rf.write_cells([4], known([4]))  # the added metric may be left out
        assert np.isnan(rf.read_metric("lambda-max")).all()
        rf.set_metric_cells("lambda-max", [9], [4.0])
        rf.write_cells([3], {**known([3]), "lambda-max": [5.0]})
    with lio.open_result(path) as rf:
        assert rf.attrs["notes"] == {"a": [1]} and rf.attrs["seed"] == 1
        assert rf.attrs["elapsed-s"] == 1.5
        assert np.flatnonzero(rf.done).tolist() == [2, 3, 4, 9] and rf.base_metrics == ["loss", "accuracy"]
        np.testing.assert_array_equal(rf.read_metric("loss").ravel()[[2, 3, 9]], [2.0, 2.5, 5.5])
        lam = rf.read_metric("lambda-max").ravel()
        assert lam[9] == 4.0 and lam[3] == 5.0 and np.isnan(lam[2])
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]  # no temp file left


# --------------------------------------------------------------------------- overwriting


def test_existing_file_needs_force(tmp_path):
    path = tmp_path / "out.h5"
    with make(path, attrs={"run": "first"}) as rf:
        rf.write_cells([0], known([0]))
    with pytest.raises(lio.ResultExistsError) as info:
        make(path, attrs={"run": "second"})
    assert str(info.value) == (f"'{path}' already exists; pass --resume to continue it or --force to overwrite it")
    with lio.open_result(path) as rf:  # untouched
        assert rf.attrs["run"] == "first" and rf.done.sum() == 1

    with make(path, shape=(3,), metrics=["loss"], attrs={"run": "second"}, force=True) as rf:
        assert rf.shape == (3,)
    with lio.open_result(path) as rf:
        assert rf.attrs["run"] == "second" and rf.metrics == ["loss"]
        assert rf.done.sum() == 0 and rf.shape == (3,)
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_existing_non_hdf5_file_is_not_overwritten(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("precious\n")
    with pytest.raises(lio.ResultExistsError):
        make(path)
    assert path.read_text() == "precious\n"


# --------------------------------------------------------------------------- bad files


def _check_error(path, *fragments):
    with pytest.raises(lio.ResultFileError) as info:
        lio.open_result(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{path}'" in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_foreign_hdf5_file(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(10)
    _check_error(path, "not a landscape result file (no 'format' attribute)")
    with h5py.File(path, "a") as f:
        f.attrs["format"] = "something-else"
    _check_error(path, "not a landscape result file", "'something-else'")


def test_truncated_file(tmp_path):
    path = tmp_path / "out.h5"
    with make(path, arrays={"basis": np.ones((3, 20_000), np.float32)}) as rf:
        rf.write_cells([0, 1], known([0, 1]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _check_error(path, "truncated")
    path.write_bytes(data[:4])
    _check_error(path, "truncated or not an HDF5 file")
    path.write_bytes(b"")
    _check_error(path, "truncated or not an HDF5 file")


def test_text_missing_and_directory(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not hdf5\n" * 100)
    _check_error(text, "not an HDF5 file")
    _check_error(tmp_path / "missing.h5", "does not exist")
    _check_error(tmp_path, "is a directory")


def test_future_schema_version(tmp_path):
    path = tmp_path / "future.h5"
    make(path).close()
    with h5py.File(path, "a") as f:
        f.attrs["schema-version"] = 7
    message = _check_error(path)
    assert message == f"'{path}' has schema version 7; this landscape reads version 1"


def test_inconsistent_datasets(tmp_path):
    path = tmp_path / "odd.h5"
    make(path).close()
    with h5py.File(path, "a") as f:
        del f["metrics/loss"]
        f["metrics/loss"] = np.zeros(3)
    _check_error(path, "'/metrics/loss' has shape (3,)", "(4, 5)")
    with h5py.File(path, "a") as f:
        del f["metrics/loss"]
    _check_error(path, "lists metrics", "'loss'")


def test_open_mode_is_checked(tmp_path):
    make(tmp_path / "out.h5").close()
    with pytest.raises(ValueError, match="'r' or 'r\\+'"):
        lio.open_result(tmp_path / "out.h5", "w")


def test_one_writer_at_a_time_but_readers_always(tmp_path):
    path = tmp_path / "out.h5"
    with make(path) as writer:
        writer.write_cells([1], known([1]))
        with pytest.raises(lio.ResultFileError, match="being written by another"):
            lio.open_result(path, "r+")
        with lio.open_result(path) as reader:  # e.g. `landscape info` during a run
            assert np.flatnonzero(reader.done).tolist() == [1]
        writer.update_attrs({"finished": False})  # the rewritten file is locked again
        with pytest.raises(lio.ResultFileError, match="being written by another"):
            lio.open_result(path, "r+")
    with lio.open_result(path, "r+") as rf:
        assert rf.attrs["finished"] is False


# --------------------------------------------------------------------------- resuming


def test_check_compatible():
    old = {
        "data": "digits",
        "seed": 3,
        "model": {"w": [1, 2]},
        "created": "t0",
        "bn": None,
    }
    same = {"data": "digits", "seed": np.int64(3), "model": {"w": (1, 2)}, "bn": None}
    lio.check_compatible(old, {**same, "created": "t1", "elapsed-s": 2.0})

    with pytest.raises(lio.ResultFileError) as info:
        lio.check_compatible(old, {**same, "data": "synthetic:mnist"}, path="x.h5")
    assert str(info.value) == ("cannot resume 'x.h5': its 'data' is 'digits' but this run has 'synthetic:mnist'")
    with pytest.raises(lio.ResultFileError, match="its 'model' is .*'w': \\[1, 2\\]"):
        lio.check_compatible(old, {**same, "model": {"w": [1, 3]}})
    with pytest.raises(lio.ResultFileError, match="its 'seed' is 3 but this run has no 'seed'"):
        lio.check_compatible(old, {k: v for k, v in same.items() if k != "seed"})
    with pytest.raises(lio.ResultFileError, match="it has no 'extra' but this run has 1"):
        lio.check_compatible(old, {**same, "extra": 1})
    # The first differing key in sorted order is the one reported.
    with pytest.raises(lio.ResultFileError, match="'bn'"):
        lio.check_compatible(old, {**same, "bn": "recompute", "seed": 4})
    # Ignored keys are ignored; the default ignores only per-execution keys.
    lio.check_compatible(old, {**same, "seed": 4}, ignore=["seed", "created"])
    with pytest.raises(lio.ResultFileError, match="'created'"):
        lio.check_compatible(old, same, ignore=[])


def test_check_resume_on_an_open_file(tmp_path):
    path = tmp_path / "out.h5"
    attrs = {"data": "digits", "seed": 0}
    make(path, attrs=attrs).close()
    spec = {"kind": "surface-2d", "shape": (4, 5), "metrics": ["loss", "accuracy"]}
    with lio.open_result(path, "r+") as rf:
        rf.check_resume(**spec, attrs={**attrs, "library-version": "other"})
        with pytest.raises(lio.ResultFileError, match="its grid is \\(4, 5\\)"):
            rf.check_resume(**{**spec, "shape": (5, 5)}, attrs=attrs)
        with pytest.raises(lio.ResultFileError, match="its metrics are"):
            rf.check_resume(**{**spec, "metrics": ["loss"]}, attrs=attrs)
        with pytest.raises(lio.ResultFileError, match="'line' result|'surface-2d' result"):
            rf.check_resume(**{**spec, "kind": "line"}, attrs=attrs)
        with pytest.raises(lio.ResultFileError, match=f"cannot resume '{re.escape(str(path))}'"):
            rf.check_resume(**spec, attrs={**attrs, "seed": 1})


def test_open_or_create(tmp_path):
    path = tmp_path / "run.h5"
    coefficients = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    ids = np.arange(3, dtype=np.int32)
    spec = {
        "kind": "eval",
        "shape": (3,),
        "metrics": ["loss"],
        "arrays": {"coefficients": coefficients, "ids": ids},
    }
    attrs = {"data": "digits", "library-version": "0.1.0"}
    with lio.open_or_create(path, **spec, attrs=attrs, resume=True) as rf:  # nothing yet
        rf.write_cells([1], {"loss": [0.5]})
    with pytest.raises(lio.ResultExistsError):
        lio.open_or_create(path, **spec, attrs=attrs)
    with pytest.raises(ValueError, match="contradict"):
        lio.open_or_create(path, **spec, attrs=attrs, resume=True, force=True)
    resumed = {
        **attrs,
        "library-version": "0.2.0",
    }  # a per-execution key: still resumable
    with lio.open_or_create(path, **spec, attrs=resumed, resume=True) as rf:
        assert rf.pending().tolist() == [0, 2]
    with pytest.raises(lio.ResultFileError, match="its 'data' is 'digits'"):
        lio.open_or_create(path, **spec, attrs={**attrs, "data": "other"}, resume=True)
    moved = {**spec, "arrays": {"coefficients": coefficients[::-1], "ids": ids}}
    with pytest.raises(lio.ResultFileError, match="its array 'coefficients'"):
        lio.open_or_create(path, **moved, attrs=attrs, resume=True)
    with lio.open_or_create(path, **spec, attrs=attrs, resume=True) as rf:  # not left locked
        assert rf.done.sum() == 1
    with lio.open_or_create(path, **spec, attrs=attrs, force=True) as rf:
        assert rf.done.sum() == 0


# --------------------------------------------------------------------------- describe


def test_describe(tmp_path):
    path = tmp_path / "out.h5"
    with make(path, attrs={"data": "digits", "long": "z" * 500}, arrays={"x": np.zeros(4)}) as rf:
        rf.write_cells([3, 7, 12], known([3, 7, 12]))
        rf.set_metric_cells("loss", [0], [-100.0])  # a value without its flag is not counted
    text = lio.describe(path)
    assert "kind 'surface-2d'" in text
    assert "3/20 done (15.0%)" in text and "17 pending" in text
    assert re.search(r"loss\s+min 2.5 at \(0, 3\), max 7 at \(2, 2\)", text), text
    assert re.search(r"accuracy\s+min -3 at \(2, 2\), max -0.75 at \(0, 3\)", text), text
    assert "data: 'digits'" in text
    assert "z" * 200 not in text and "..." in text
    assert "x  (4,) float64" in text
    make(tmp_path / "empty.h5").close()
    assert "no values yet" in lio.describe(tmp_path / "empty.h5")


# --------------------------------------------------------------------------- docs


def test_docs_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {"__name__": "docs_example"})  # noqa: S102
    with lio.open_result(tmp_path / "example.h5") as rf:
        assert rf.done.sum() == 3


# --------------------------------------------------------------------------- kill -9

# The child loads io.py by file path (no torch import: quick restarts), creates or resumes
# the file, and writes the pending cells in a random order, a few per chunk.
CHILD = """
import importlib.util, os, sys, time
import numpy as np
spec = importlib.util.spec_from_file_location("landscape_io_child", sys.argv[1])
lio = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lio)
path, seed, shape = sys.argv[2], int(sys.argv[3]), (40, 50)
print("started", flush=True)
if os.path.exists(path):
    rf = lio.open_result(path, "r+")
else:
    rf = lio.create_result(path, kind="surface-2d", shape=shape, metrics=["loss", "accuracy"],
                           attrs={"seed": 0}, arrays={"x": np.arange(40.0)})
pending = rf.pending()
print("pending", len(pending), flush=True)
order = np.random.default_rng(seed).permutation(pending)
for start in range(0, len(order), 2):
    index = order[start:start + 2]
    rf.write_cells(index, {"loss": index * 0.5 + 1.0, "accuracy": -0.25 * index})
    time.sleep(0.001)
rf.update_attrs({"finished": True})
rf.close()
print("finished", flush=True)
"""

ATTR_CHILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("landscape_io_child", sys.argv[1])
lio = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lio)
rf = lio.open_result(sys.argv[2], "r+")
print("started", flush=True)
counter = rf.attrs.get("counter", 0)
while True:
    counter += 1
    rf.update_attrs({"counter": counter})
    if counter % 3 == 0:
        rf.add_metrics([f"extra-{counter}"])
"""


def _start(script, *args):
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(IO_PATH), *map(str, args)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "started"
    return proc


def _check_cells(path):
    """Open the file; every done cell holds exactly its value; others NaN or their value."""
    with lio.open_result(path) as rf:
        done = rf.done.ravel()
        index = np.arange(rf.size)
        for name, expected in known(index).items():
            values = rf.read_metric(name).ravel()
            np.testing.assert_array_equal(values[done], expected[done])
            rest = values[~done]
            assert np.all(np.isnan(rest) | (rest == expected[~done]))
        unflagged = int(np.sum(~done & ~np.isnan(rf.read_metric("loss").ravel())))
        return done, unflagged, rf.attrs


def test_kill_9_at_random_moments_then_resume(tmp_path):
    path = tmp_path / "killed.h5"
    rng = random.Random(20240611)
    previous_done = np.zeros(2000, dtype=bool)
    mid_run = 0
    for attempt in range(7):
        proc = _start(CHILD, path, attempt)
        time.sleep(rng.uniform(0.05, 0.5))
        proc.kill()
        proc.wait()
        lines = proc.stdout.read().split()
        proc.stdout.close()
        assert proc.returncode in (-9, 0)  # 0: it finished before the kill
        if "pending" in lines and path.exists():
            # The child resumed: it saw exactly the cells the last run left undone.
            assert int(lines[lines.index("pending") + 1]) == int((~previous_done).sum())
        if not path.exists():  # killed while creating: no file at all, never half a file
            continue
        done, _, _ = _check_cells(path)
        assert np.all(done[previous_done]), "a cell lost its done flag"
        mid_run += 0 < done.sum() < done.size
        previous_done = done

    proc = _start(CHILD, path, 99)
    assert proc.wait(timeout=30) == 0
    lines = proc.stdout.read().split()  # not communicate(): it skips readline's buffer
    proc.stdout.close()
    assert int(lines[lines.index("pending") + 1]) == int((~previous_done).sum())
    done, unflagged, attrs = _check_cells(path)
    assert done.all() and unflagged == 0 and attrs["finished"] is True
    assert mid_run >= 3, f"only {mid_run} kills landed while cells were being written"


def test_kill_9_during_atomic_rewrites(tmp_path):
    path = tmp_path / "finished.h5"
    index = np.arange(20)
    with make(path) as rf:
        rf.write_cells(index, known(index))
    rng = random.Random(7)
    counters = []
    for _ in range(4):
        proc = _start(ATTR_CHILD, path)
        time.sleep(rng.uniform(0.02, 0.3))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        done, _, attrs = _check_cells(path)
        assert done.all()
        counters.append(attrs.get("counter", 0))
    assert counters == sorted(counters) and counters[-1] > 0
    # Only stale temp files of killed rewrites may be left beside the result.
    others = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(re.fullmatch(r"\.finished\.h5\.tmp-\d+", name) for name in others), others
