"""Tests of landscape.data: specs, splits, normalisation, files and errors."""

import os
import pickle

import numpy as np
import pytest
import torch

from landscape.data import DIGITS_SPLIT_SEED, DataError, TensorData, load_data

# ------------------------------------------------------------------------------- digits


def test_digits_split_sizes_and_shapes():
    train = load_data("digits", "train")
    test = load_data("digits", "test")
    everything = load_data("digits", "all")
    assert (len(train), len(test), len(everything)) == (1257, 540, 1797)
    assert train.x.shape == (1257, 64) and train.x.dtype == torch.float32
    assert train.y.dtype == torch.int64 and train.num_classes == 10
    assert train.input_shape == (64,)
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    image = load_data("digits:image", "test")
    assert image.x.shape == (540, 1, 8, 8)
    assert torch.equal(image.x.reshape(540, 64), test.x)


def test_digits_split_is_disjoint_covering_and_deterministic():
    from sklearn.datasets import load_digits

    raw = load_digits()
    pixels = torch.as_tensor(raw.data, dtype=torch.float32) / 16
    labels = torch.as_tensor(raw.target)
    perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(1797)
    train_idx, test_idx = perm[:1257], perm[1257:]
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert set(train_idx.tolist()) | set(test_idx.tolist()) == set(range(1797))
    train, test = load_data("digits", "train"), load_data("digits", "test")
    assert torch.equal(train.x, pixels[train_idx]) and torch.equal(train.y, labels[train_idx])
    assert torch.equal(test.x, pixels[test_idx]) and torch.equal(test.y, labels[test_idx])
    # The seed does not move the digits split.
    again = load_data("digits", "train", seed=123)
    assert torch.equal(again.x, train.x) and torch.equal(again.y, train.y)
    assert again.describe()["sha256"] == train.describe()["sha256"]
    assert train.describe()["digits_split_seed"] == DIGITS_SPLIT_SEED
    assert torch.equal(load_data("digits", "all").x[:1257], train.x)


def test_digits_max_samples_is_prefix():
    full = load_data("digits", "test")
    part = load_data("digits", "test", max_samples=17)
    assert len(part) == 17 and torch.equal(part.x, full.x[:17]) and torch.equal(part.y, full.y[:17])
    assert torch.equal(full.subset(17).x, part.x)


@pytest.mark.parametrize("spec", ["digits", "digits:image"])
def test_normalize_uses_train_statistics(spec):
    train = load_data(spec, "train", normalize=True)
    raw_train = load_data(spec, "train")
    channel_dims = [d for d in range(train.x.dim()) if d != 1]
    mean = train.x.double().mean(channel_dims)
    std = train.x.double().std(channel_dims, correction=0)
    live = raw_train.x.double().std(channel_dims, correction=0) > 0
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)
    assert torch.allclose(std[live], torch.ones_like(std[live]), atol=1e-5)
    assert torch.all(std[~live] == 0)
    # Test data and subsets get the same transform as the train split.
    test, raw_test = load_data(spec, "test", normalize=True), load_data(spec, "test")
    info = test.describe()
    assert info["normalization"] == "train-split"
    mu = torch.tensor(info["normalize_mean"], dtype=torch.float64)
    sd = torch.tensor(info["normalize_std"], dtype=torch.float64)
    sd = torch.where(sd == 0, torch.ones_like(sd), sd)
    shape = [1, -1] + [1] * (raw_test.x.dim() - 2)
    expected = (raw_test.x.double() - mu.reshape(shape)) / sd.reshape(shape)
    assert torch.allclose(test.x.double(), expected, atol=1e-6)
    small = load_data(spec, "train", normalize=True, max_samples=10)
    assert torch.allclose(small.x, train.x[:10])


def test_normalize_given_values():
    data = load_data("digits:image", "train", normalize=(0.5, 0.25), max_samples=5)
    raw = load_data("digits:image", "train", max_samples=5)
    assert torch.allclose(data.x, (raw.x - 0.5) / 0.25)
    info = data.describe()
    assert info["normalization"] == "given" and info["normalize_mean"] == [0.5]
    assert load_data("digits", max_samples=3).describe()["normalization"] == "none"
    with pytest.raises(DataError, match="normalize mean has 3 values; expected 1 or 64"):
        load_data("digits", normalize=([0.1, 0.2, 0.3], 1.0))
    with pytest.raises(DataError, match="normalize std .* <= 0"):
        load_data("digits", normalize=(0.0, 0.0))
    with pytest.raises(DataError, match="normalize must be True, False or a"):
        load_data("digits", normalize="yes")


# ---------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize(
    ("spec", "shape", "classes"),
    [
        ("synthetic:cifar10", (3, 32, 32), 10),
        ("synthetic:cifar100", (3, 32, 32), 100),
        ("synthetic:mnist", (1, 28, 28), 10),
        ("synthetic:3x16x16:7", (3, 16, 16), 7),
        ("synthetic:64:5", (64,), 5),
    ],
)
def test_synthetic_shapes(spec, shape, classes):
    data = load_data(spec, max_samples=40)
    assert data.x.shape == (40, *shape) and data.input_shape == shape
    assert data.num_classes == classes
    assert int(data.y.min()) >= 0 and int(data.y.max()) < classes


def test_synthetic_sizes_determinism_and_prefixes():
    spec = "synthetic:2x4x4:3:n=3000:test_n=700"
    train, test = load_data(spec, "train"), load_data(spec, "test")
    assert (len(train), len(test), len(load_data(spec, "all"))) == (3000, 700, 3700)
    assert torch.equal(load_data(spec, "train").x, train.x)
    # Train and test use different streams.
    assert not torch.equal(train.x[:700], test.x)
    assert torch.equal(load_data(spec, "train", max_samples=1500).x, train.x[:1500])
    other = load_data(spec, "train", seed=1)
    assert not torch.equal(other.x, train.x)
    default = load_data("synthetic:64:10", "test")
    assert len(default) == 2000 and len(load_data("synthetic:64:10", max_samples=20_000)) == 10_000
    assert abs(float(train.x.mean())) < 0.05 and abs(float(train.x.std()) - 1) < 0.05


def test_synthetic_bad_specs():
    with pytest.raises(DataError, match="'3xAx3' .* neither a preset"):
        load_data("synthetic:3xAx3")
    with pytest.raises(DataError, match="n='zero' in data spec"):
        load_data("synthetic:cifar10:n=zero")
    with pytest.raises(DataError, match="cannot parse data spec 'synthetic:cifar10:size=3'"):
        load_data("synthetic:cifar10:size=3")


# -------------------------------------------------------------------------------- files


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 3, 4, 4)).astype(np.float32)
    y = rng.integers(0, 4, 30)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    data = load_data(str(path))
    assert np.array_equal(data.x.numpy(), x) and np.array_equal(data.y.numpy(), y)
    assert data.y.dtype == torch.int64 and data.num_classes == int(y.max()) + 1
    assert torch.equal(load_data(str(path), "test").x, data.x)  # x/y serve every split
    relative = load_data("d.npz", root=str(tmp_path), max_samples=4)
    assert torch.equal(relative.x, data.x[:4])


def test_npz_split_arrays_and_uint8(tmp_path):
    x_train = np.arange(6 * 2 * 2, dtype=np.uint8).reshape(6, 2, 2)
    x_test = np.full((3, 2, 2), 255, dtype=np.uint8)
    path = tmp_path / "s.npz"
    np.savez(
        path,
        x_train=x_train,
        y_train=np.arange(6) % 2,
        x_test=x_test,
        y_test=np.array([0, 1, 2]),
    )
    train, test, both = (load_data(str(path), s) for s in ("train", "test", "all"))
    assert torch.allclose(train.x, torch.from_numpy(x_train).float() / 255)
    assert torch.equal(test.x, torch.ones(3, 2, 2))
    assert len(both) == 9 and train.num_classes == test.num_classes == 3


def test_npz_regression_targets(tmp_path):
    path = tmp_path / "r.npz"
    np.savez(path, x=np.zeros((5, 2), np.float64), y=np.linspace(0, 1, 5))
    data = load_data(str(path))
    assert data.num_classes is None and data.y.dtype == torch.float64
    assert data.x.dtype == torch.float64
    assert data.describe()["num_classes"] is None


def test_pt_round_trip(tmp_path):
    x, y = torch.randn(12, 5), torch.arange(12) % 3
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    data = load_data(str(tmp_path / "d.pt"))
    assert torch.equal(data.x, x) and torch.equal(data.y, y) and data.num_classes == 3
    torch.save((x, y), tmp_path / "t.pt")
    assert torch.equal(load_data(str(tmp_path / "t.pt")).y, y)
    torch.save([1, 2, 3], tmp_path / "bad.pt")
    with pytest.raises(DataError, match="bad.pt holds a list; expected a dict"):
        load_data(str(tmp_path / "bad.pt"))


def test_pt_is_loaded_safely(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"x": Evil(), "y": [1]}, handle, protocol=2)
    with pytest.raises(
        DataError,
        match=r"could not load .*evil.pt' with torch.load\(weights_only=True\)",
    ):
        load_data(str(tmp_path / "evil.pt"))


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"data file 'x.npz' does not exist \(expected an .npz/.pt file"):
        load_data("x.npz")
    np.savez(tmp_path / "ab.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(DataError, match=r"ab.npz has arrays \['a', 'b'\]; expected 'x' and 'y'"):
        load_data(str(tmp_path / "ab.npz"))
    np.savez(tmp_path / "len.npz", x=np.zeros((4, 2)), y=np.zeros(3, dtype=np.int64))
    with pytest.raises(
        DataError,
        match=r"x has shape \(4, 2\) but y has shape \(3,\); expected the same",
    ):
        load_data(str(tmp_path / "len.npz"))
    np.savez(tmp_path / "neg.npz", x=np.zeros((2, 2)), y=np.array([0, -1]))
    with pytest.raises(DataError, match="negative labels"):
        load_data(str(tmp_path / "neg.npz"))
    with pytest.raises(DataError, match=r"unknown data spec 'mnist' \(expected"):
        load_data("mnist")
    with pytest.raises(DataError, match="data path 'no/such/dir' does not exist"):
        load_data("no/such/dir")
    with pytest.raises(DataError, match="split 'val' is not one of"):
        load_data("digits", "val")
    with pytest.raises(DataError, match="max_samples must be a positive int"):
        load_data("digits", max_samples=0)
    with pytest.raises(DataError, match="expected 'digits', 'digits:flat' or 'digits:image'"):
        load_data("digits:rgb")


# ------------------------------------------------------------------ cifar and image folders


def _write_fake_cifar(directory, protocol):
    folder = directory / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as handle:
            pickle.dump(
                {b"batch_label": b"x", b"data": data, b"labels": labels},
                handle,
                protocol=protocol,
            )
    return folder, batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_directory(tmp_path, protocol):
    folder, batches = _write_fake_cifar(tmp_path, protocol)
    train = load_data(f"cifar10:{tmp_path}")
    assert train.x.shape == (20, 3, 32, 32) and train.num_classes == 10
    first, labels = batches["data_batch_1"]
    assert torch.allclose(train.x[:4], torch.from_numpy(first).float().reshape(4, 3, 32, 32) / 255)
    assert train.y[:4].tolist() == labels
    test = load_data(f"cifar10:{folder}", "test")
    assert test.y.tolist() == batches["test_batch"][1]
    assert len(load_data(str(folder), "all")) == 24  # a bare directory is recognised
    assert len(load_data("cifar10", "test", root=str(tmp_path))) == 4


def test_cifar_errors(tmp_path):
    with pytest.raises(DataError, match="CIFAR directory '.*nope' does not exist"):
        load_data(f"cifar10:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="'cifar10' names no directory; expected cifar10:<dir>"):
        load_data("cifar10")
    with pytest.raises(DataError, match="lacks .*data_batch_1"):
        load_data(f"cifar10:{tmp_path}")
    folder, _ = _write_fake_cifar(tmp_path, 2)

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": Evil(), b"labels": []}, handle)
    with pytest.raises(DataError, match="refusing to unpickle global"):
        load_data(f"cifar10:{folder}", "test")


def test_image_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for split, count in (("train", 3), ("test", 1)):
        for index, name in enumerate(["cat", "dog"]):
            (tmp_path / split / name).mkdir(parents=True)
            for k in range(count):
                pixels = np.full((5, 6, 3), 10 * index + k, dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{k}.png")
    train = load_data(str(tmp_path))
    assert train.x.shape == (6, 3, 5, 6) and train.num_classes == 2
    assert train.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(train.x[4], torch.full((3, 5, 6), 11 / 255))
    assert train.describe()["class_names"] == ["cat", "dog"]
    test = load_data(f"imagefolder:{tmp_path}", "test")
    assert test.y.tolist() == [0, 1]
    gray = tmp_path / "gray" / "a"
    gray.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(gray / "0.png")
    assert load_data(str(tmp_path / "gray")).x.shape == (1, 1, 4, 4)
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(gray / "1.png")
    with pytest.raises(DataError, match="is 4x5; expected 4x4"):
        load_data(str(tmp_path / "gray"))


# --------------------------------------------------------------------------- TensorData


def test_tensordata_batches_to_subset_describe():
    x = torch.arange(10.0).reshape(5, 2)
    data = TensorData(x, torch.tensor([0, 1, 0, 1, 1]), "hand", 2)
    batches = list(data.batches(2))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    assert torch.equal(torch.cat([b[0] for b in batches]), x)
    double = data.to(dtype=torch.float64)
    assert double.x.dtype == torch.float64 and double.y.dtype == torch.int64
    assert double.spec == "hand" and double.num_classes == 2
    assert len(data.subset(3)) == 3 and len(data.subset(None)) == 5
    info = data.describe()
    assert info["n"] == 5 and info["input_shape"] == [2] and len(info["sha256"]) == 64
    assert info["sha256"] != double.describe()["sha256"]
    changed = TensorData(x + 1e-3, data.y, "hand", 2)
    assert changed.describe()["sha256"] != info["sha256"]
    with pytest.raises(DataError, match="x has 5 samples but y has 4"):
        TensorData(x, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(DataError, match="batch_size must be a positive int, got 0"):
        next(data.batches(0))


# ------------------------------------------------------------------------ text corpora

JSON_DIR = os.path.join(os.path.dirname(os.__file__), "json")


def _corpus_bytes(folder, ext=None):
    """The files of a text: folder as the docs say: recursive, hidden and __pycache__ skipped,
    sorted by relative path, concatenated."""
    found = []
    for directory, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            if name.startswith(".") or (ext and not name.endswith(ext)):
                continue
            full = os.path.join(directory, name)
            found.append((os.path.relpath(full, folder).replace(os.sep, "/"), full))
    return len(found), b"".join(open(full, "rb").read() for _, full in sorted(found))


def test_text_corpus_sequences_split_and_ids_are_the_bytes():
    import hashlib

    n_files, corpus = _corpus_bytes(JSON_DIR)
    everything = load_data(f"text:{JSON_DIR}", "all")
    T = 128
    N = len(corpus) // T
    assert everything.x.shape == (N, T) and everything.x.dtype == torch.int64
    assert torch.equal(everything.y, everything.x) and everything.num_classes == 256
    assert bytes(everything.x.reshape(-1).to(torch.uint8).tolist()) == corpus[: N * T]
    # every 10th sequence (i % 10 == 9) is test, the rest train, both in corpus order
    train, test = load_data(f"text:{JSON_DIR}", "train"), load_data(f"text:{JSON_DIR}", "test")
    assert torch.equal(test.x, everything.x[9::10])
    assert torch.equal(train.x, everything.x[torch.arange(N) % 10 != 9])
    assert len(train) + len(test) == N
    # deterministic, and described by its files
    assert load_data(f"text:{JSON_DIR}", "test").fingerprint() == test.fingerprint()
    info = test.describe()
    assert info["text_files"] == n_files and info["seq_len"] == T and info["text_bytes"] == len(corpus)
    assert info["text_sha256"] == hashlib.sha256(corpus).hexdigest() and info["text_test_every"] == 10
    assert load_data(f"text:{JSON_DIR}", "test", max_samples=3).x.equal(test.x[:3])


def test_text_seq_option_single_file_and_extensions(tmp_path):
    a = load_data(f"text:{JSON_DIR}:seq=64", "train")
    b = load_data(f"text:{JSON_DIR}", "train", seq_len=64)
    assert a.x.shape[1] == 64 and torch.equal(a.x, b.x)
    assert load_data(f"text:{JSON_DIR}:seq=64", "train", seq_len=64).x.shape[1] == 64
    with pytest.raises(DataError, match="says seq=64 but seq_len=32 was given"):
        load_data(f"text:{JSON_DIR}:seq=64", seq_len=32)
    n_py, corpus_py = _corpus_bytes(JSON_DIR, ".py")
    only_py = load_data(f"text:{JSON_DIR}:ext=py:seq=16", "all")
    assert only_py.describe()["text_files"] == n_py
    assert bytes(only_py.x.reshape(-1).to(torch.uint8).tolist()) == corpus_py[: len(only_py) * 16]
    (tmp_path / "one.txt").write_bytes(bytes(range(256)) * 4)  # 1024 bytes
    one = load_data(f"text:{tmp_path / 'one.txt'}:seq=100", "all")
    assert one.x.shape == (10, 100) and one.x[0, :5].tolist() == [0, 1, 2, 3, 4]
    assert load_data(f"text:{tmp_path / 'one.txt'}:seq=100", "test").x.shape == (1, 100)


def test_text_errors(tmp_path):
    with pytest.raises(DataError, match="text path 'nope' does not exist"):
        load_data("text:nope")
    with pytest.raises(DataError, match="names no path"):
        load_data("text:")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        load_data(f"text:{tmp_path / 'empty'}")
    (tmp_path / "empty" / "e.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"holds no bytes \(1 empty file"):
        load_data(f"text:{tmp_path / 'empty'}")
    (tmp_path / "short.txt").write_bytes(b"abc")
    with pytest.raises(DataError, match="holds 3 bytes, fewer than one sequence of seq=128"):
        load_data(f"text:{tmp_path / 'short.txt'}")
    with pytest.raises(DataError, match="none is in the test split"):
        load_data(f"text:{tmp_path / 'short.txt'}:seq=1", "test")
    with pytest.raises(DataError, match="does not apply to 'text:"):
        load_data(f"text:{JSON_DIR}", normalize=True)
    with pytest.raises(DataError, match="seq_len applies to text:<path> specs"):
        load_data("digits", seq_len=8)


# ------------------------------------------------------------------------ py: specs

PY_MODULE = """
import torch
from torch.utils.data import DataLoader, TensorDataset

def xy(split, n=30):
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)

def dataset(split, n=30):
    return TensorDataset(*xy(split, n))

def loader(split, n=30, batch_size=8):
    return DataLoader(dataset(split, n), batch_size=batch_size)

def dicts(split):
    return [{"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": torch.zeros(2, 3, dtype=torch.long)}]

def strict(split):
    raise ValueError("no such split here")
"""


@pytest.fixture
def pymod(tmp_path, monkeypatch):
    import sys
    import uuid

    name = f"lspy_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PY_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield name
    sys.modules.pop(name, None)


def test_py_spec_returns_the_users_data_cut_to_max_samples(pymod):
    from landscape.batches import as_source
    from landscape.data import open_data

    pairs = open_data(f"py:{pymod}:xy", "test", max_samples=7)  # imported from the current directory
    x, y = __import__(pymod).xy("test")
    assert isinstance(pairs, TensorData) and pairs.spec == f"py:{pymod}:xy" and pairs.split == "test"
    assert torch.equal(pairs.x, x[:7]) and pairs.num_classes == int(y.max()) + 1
    ds = open_data(f"py:{pymod}:dataset", "test", max_samples=7, kwargs='{"n": 20}')
    assert isinstance(ds, torch.utils.data.Subset) and len(ds) == 7
    loader = open_data(f"py:{pymod}:loader", "test", max_samples=11)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [8, 3] and torch.equal(torch.cat([b[0] for b in batches]), x[:11])
    assert list(loader) and as_source(loader).describe()["spec"] == f"py:{pymod}:loader"
    whole = open_data(f"py:{pymod}:loader", "test")
    assert isinstance(whole, torch.utils.data.DataLoader) and as_source(whole).describe()["kind"] == "loader"
    # load_data reads (input, target) batches into memory
    mem = load_data(f"py:{pymod}:loader", "test", kwargs={"batch_size": 7}, max_samples=25)
    assert isinstance(mem, TensorData) and torch.equal(mem.x, x[:25]) and torch.equal(mem.y, y[:25])


def test_py_spec_errors(pymod):
    from landscape.data import open_data

    with pytest.raises(DataError, match=r"could not import module 'no_mod_q' for data spec 'py:no_mod_q:f'"):
        open_data("py:no_mod_q:f")
    with pytest.raises(DataError, match=rf"module '{pymod}' has no attribute 'nope'"):
        open_data(f"py:{pymod}:nope")
    with pytest.raises(DataError, match="is not py:<package.module>:<function>"):
        open_data(f"py:{pymod}")
    with pytest.raises(DataError, match=r"normalize \(--normalize\) does not apply"):
        open_data(f"py:{pymod}:xy", normalize=True)
    with pytest.raises(DataError, match=r"xy\('train', \*\*\{'m': 1\}\) raised TypeError"):
        open_data(f"py:{pymod}:xy", kwargs={"m": 1})
    with pytest.raises(DataError, match="raised ValueError: no such split here"):
        open_data(f"py:{pymod}:strict")
    with pytest.raises(DataError, match="not valid JSON"):
        open_data(f"py:{pymod}:xy", kwargs="{oops")
    with pytest.raises(DataError, match="apply to py:<module>:<function> specs, not to 'digits'"):
        load_data("digits", kwargs={"n": 1})
    with pytest.raises(DataError, match=r"gives dict batches with keys \['input_ids'\]; this analysis needs"):
        load_data(f"py:{pymod}:dicts")
