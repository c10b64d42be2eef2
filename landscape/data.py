"""Data specs -> in-memory tensors, or the user's own data sets.

This module turns a *data spec* (a short string that is also recorded in result files) into
data: :func:`load_data` always gives a :class:`TensorData` held in memory, :func:`open_data`
(what the command line calls) also hands on the DataLoader or Dataset a ``py:`` spec returns,
for the analyses that stream batches (see :mod:`landscape.batches`).  Nothing is ever
downloaded.

Spec grammar
------------
``digits`` / ``digits:flat`` / ``digits:image``
    scikit-learn's bundled 8x8 digits (1,797 images).  Pixel values are divided by 16 so they
    lie in ``[0, 1]``.  ``flat`` (the default) gives ``x`` of shape ``[N, 64]``, ``image`` gives
    ``[N, 1, 8, 8]``.  The train/test split is fixed: a permutation drawn with
    ``numpy.random.RandomState(DIGITS_SPLIT_SEED)`` puts its first 1,257 indices in ``train``
    and the remaining 540 in ``test`` (the ``seed`` argument does not change it).
``synthetic:<preset>[:n=<N>][:test_n=<M>]``
    Gaussian noise inputs and uniform random labels, for timing.  Presets: ``cifar10``
    (``[N, 3, 32, 32]``, 10 classes), ``cifar100`` (100 classes), ``svhn`` (``[N, 3, 32, 32]``,
    10 classes), ``mnist`` (``[N, 1, 28, 28]``, 10 classes), ``digits`` (``[N, 64]``, 10 classes).
``synthetic:<C>x<H>x<W>[:<classes>][:n=<N>][:test_n=<M>]``
    The same with any shape (``synthetic:3x32x32:10``, ``synthetic:64:10``); classes default
    to 10.  ``n`` is the size of the train split (default 10,000), ``test_n`` that of the test
    split (default ``max(1, n // 5)``, i.e. 2,000); ``all`` is train followed by test.
    The data depend only on ``(seed, split, sample index)``: samples are drawn in blocks of
    1,024 from generators seeded by ``numpy.random.SeedSequence([seed, split, block])``, so
    ``max_samples`` gives exactly the first samples of the full split, and train and test are
    drawn from different streams.
``path/to/file.npz`` / ``path/to/file.pt`` (or ``.pth``)
    Arrays ``x`` and ``y`` (used for every split), or ``x_train``/``y_train``/``x_test``/
    ``y_test`` chosen by split (``all`` concatenates train and test).  An optional scalar
    ``num_classes`` overrides the class count inferred from integer labels.  ``.pt`` files hold
    a dict of tensors with those keys, or a tuple ``(x, y)``, and are read with
    ``torch.load(weights_only=True)``.  ``uint8`` inputs are divided by 255, other integer
    inputs become float32; floating inputs keep their dtype (float16/bfloat16 become float32).
    Integer labels become int64 class indices; floating labels are kept as regression targets
    (``num_classes`` is then ``None``).
``cifar10:<dir>`` / ``cifar100:<dir>``
    The python-pickle CIFAR batches (``cifar-10-batches-py`` / ``cifar-100-python``); ``<dir>``
    may be that folder or its parent.  Read with a restricted unpickler that only accepts
    numpy arrays.  ``x`` is ``[N, 3, 32, 32]`` in ``[0, 1]``.  Without ``<dir>``, ``root`` is used.
``text:<path>[:seq=<T>][:ext=<e1>,<e2>...]``
    A local text corpus for causal language models, with a byte-level tokenizer: token =
    byte value, vocabulary 256 (``num_classes=256``).  ``<path>`` is a file, or a folder whose
    files are read recursively (hidden files and folders and ``__pycache__`` folders skipped;
    ``ext=py,txt`` keeps only those extensions) in the sorted order of their relative paths
    (``/``-separated), and concatenated as they are.  The bytes are cut into non-overlapping
    sequences of ``T`` bytes (``seq=T`` or ``seq_len=T``, default 128; the last partial
    sequence is dropped): ``x`` is ``[N, T]`` int64 token ids and ``y`` the same ids (the
    ``token_loss``/``perplexity``/``token_acc`` metrics shift by one position themselves).
    The split is fixed: sequence ``i`` (0-based, in corpus order) is in ``test`` when
    ``i % 10 == 9`` (every 10th sequence), in ``train`` otherwise; ``all`` is every sequence
    in order.  :meth:`TensorData.describe` records ``text_files`` (count), ``text_bytes``,
    ``text_sha256`` (of the concatenated bytes), ``seq_len`` and ``text_test_every``.
``py:<package.module>:<function>``
    Your own data: ``function(split, **kwargs)`` (``kwargs`` from ``--data-kwargs``, a JSON
    object) returns a map-style ``Dataset``, a ``DataLoader``, any re-iterable of batches, a
    :class:`TensorData` or a pair ``(x, y)`` of tensors.  The module is imported as model
    specs are (the current directory is importable; see
    :func:`landscape.models.registry.import_object`).  ``max_samples`` keeps the first
    samples (a ``Subset`` of a Dataset; the first batches of a loader, the last one cut);
    ``normalize`` does not apply (normalise inside the function).  :func:`open_data` returns
    loaders and datasets as they are (streamed by the engine); :func:`load_data` reads their
    ``(input, target)`` batches into a :class:`TensorData`.
``imagefolder:<dir>`` or an existing directory
    ``<dir>/<class>/<image>`` (classes numbered in sorted order, as torchvision's
    ``ImageFolder``).  If ``<dir>/train`` (and ``<dir>/test`` or ``<dir>/val``) exist they are
    used by split; otherwise the folder serves every split.  Images must share one size; they
    are read as grayscale ``[N, 1, H, W]`` when all of them are grayscale, RGB otherwise.  A
    directory that holds CIFAR batches is read as CIFAR.

Relative paths are resolved against ``root`` when it is given.

Normalisation
-------------
``normalize=True`` subtracts the per-channel mean and divides by the per-channel standard
deviation (population, ``correction=0``) of the **whole train split** of the same spec, so
every split and every ``max_samples`` gets the same transform.  Channels are dim 1 of ``x``
(the 64 features of flat digits are 64 channels).  Channels with zero deviation are only
centred.  ``normalize=(mean, std)`` applies the given values (scalars or one per channel).
What was applied is recorded in :meth:`TensorData.describe`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._kwargs import parse_kwargs
from .batches import DataError

__all__ = [
    "DIGITS_SPLIT_SEED",
    "DIGITS_TRAIN_SIZE",
    "SYNTHETIC_PRESETS",
    "as_xy",
    "DataError",
    "TEXT_SEQ_LEN",
    "TEXT_TEST_EVERY",
    "TensorData",
    "load_data",
    "open_data",
]

DIGITS_SPLIT_SEED = 0
DIGITS_TRAIN_SIZE = 1257
SYNTHETIC_PRESETS: dict[str, tuple[tuple[int, ...], int]] = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "svhn": ((3, 32, 32), 10),
    "mnist": ((1, 28, 28), 10),
    "digits": ((64,), 10),
}
TEXT_SEQ_LEN = 128
TEXT_TEST_EVERY = 10
_TEXT_OPTIONS = ("seq", "seq_len", "ext")
_SYNTHETIC_TRAIN_SIZE = 10_000
_SYNTHETIC_BLOCK = 1024
_SPLITS = ("train", "test", "all")
_SPLIT_CODES = {"train": 0, "test": 1}
_IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".ppm",
    ".pgm",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
)
_EXPECTED_SPECS = (
    "an .npz/.pt file with arrays x and y, or one of: digits, synthetic:<shape>, cifar10:<dir>, an image folder, "
    "text:<path>, py:<module>:<function>"
)


class TensorData:
    """A data set held in memory as two tensors.

    Parameters
    ----------
    x : Tensor[N, ...]
        Inputs.
    y : Tensor[N]
        int64 class labels, or floating regression targets.
    spec : str
        The data spec the tensors came from (recorded in result files).
    num_classes : int or None
        Number of classes; ``None`` for regression targets.
    split : str or None
        ``"train"``, ``"test"``, ``"all"``, or ``None`` for tensors built by hand.
    normalization : dict or None
        ``{"source": "train-split" | "given", "mean": [...], "std": [...]}`` if a
        normalisation was applied to ``x``.
    info : dict or None
        Extra reproducibility attributes (seeds, source paths), merged into :meth:`describe`.

    Examples
    --------
    >>> import torch
    >>> data = TensorData(torch.zeros(5, 2), torch.tensor([0, 1, 0, 1, 1]), num_classes=2)
    >>> [tuple(xb.shape) for xb, yb in data.batches(2)]
    [(2, 2), (2, 2), (1, 2)]
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        spec: str = "tensors",
        num_classes: int | None = None,
        *,
        split: str | None = None,
        normalization: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise DataError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
        if x.dim() < 1 or y.dim() < 1:
            raise DataError(
                f"x has shape {tuple(x.shape)} and y has shape {tuple(y.shape)}; "
                "expected a leading sample dimension in both"
            )
        if x.shape[0] != y.shape[0]:
            raise DataError(f"x has {x.shape[0]} samples but y has {y.shape[0]} ({spec}); expected the same number")
        self.x = x
        self.y = y
        self.spec = spec
        self.num_classes = num_classes
        self.split = split
        self.normalization = normalization
        self.info = dict(info or {})

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, ``x.shape[1:]``."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (
            f"TensorData(spec={self.spec!r}, split={self.split!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"dtype={self.x.dtype}, device={self.x.device})"
        )

    def _replace(self, x: Tensor, y: Tensor) -> TensorData:
        return TensorData(
            x,
            y,
            self.spec,
            self.num_classes,
            split=self.split,
            normalization=self.normalization,
            info=self.info,
        )

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(x, y)`` batches in order, without shuffling; the last one may be smaller.

        Parameters
        ----------
        batch_size : int
            Samples per batch, at least 1.

        Yields
        ------
        x : Tensor[B, ...]
        y : Tensor[B]
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive int, got {batch_size!r}")
        for start in range(0, len(self), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TensorData:
        """Return a copy on ``device``; ``dtype`` applies to ``x`` only (labels keep theirs)."""
        return self._replace(self.x.to(device=device, dtype=dtype), self.y.to(device=device))

    def subset(self, max_samples: int | None) -> TensorData:
        """Return the first ``max_samples`` samples (all of them if ``None`` or larger)."""
        if max_samples is None or max_samples >= len(self):
            return self._replace(self.x, self.y)
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 0:
            raise DataError(f"max_samples must be a non-negative int or None, got {max_samples!r}")
        return self._replace(self.x[:max_samples], self.y[:max_samples])

    def select_classes(self, classes: Sequence[int]) -> TensorData:
        """The samples whose label is one of ``classes`` (in their order), e.g. one task of a
        class-incremental split; ``describe()`` records the classes (``info["classes"]``)."""
        wanted = sorted({int(c) for c in classes})
        if not wanted:
            raise DataError("select_classes needs at least one class, got none")
        if self.num_classes is not None and (wanted[0] < 0 or wanted[-1] >= self.num_classes):
            raise DataError(f"classes {wanted} are not all in 0..{self.num_classes - 1} of {self.spec!r}")
        keep = torch.isin(self.y, torch.tensor(wanted, dtype=self.y.dtype, device=self.y.device))
        if not bool(keep.any()):
            raise DataError(f"no sample of {self.spec!r} ({self.split}) has a label in {wanted}")
        info = {**self.info, "classes": wanted}
        return TensorData(
            self.x[keep],
            self.y[keep],
            self.spec,
            self.num_classes,
            split=self.split,
            normalization=self.normalization,
            info=info,
        )

    def fingerprint(self) -> str:
        """sha256 over the dtype, shape and raw bytes of ``x`` and then of ``y``."""
        digest = hashlib.sha256()
        for tensor in (self.x, self.y):
            flat = tensor.detach().to("cpu").contiguous()
            digest.update(f"{flat.dtype}{tuple(flat.shape)}".encode())
            digest.update(flat.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """Attributes that identify this data in result files.

        Returns
        -------
        dict
            ``spec``, ``split``, ``n``, ``input_shape`` (list), ``num_classes`` (None for
            regression), ``x_dtype``, ``y_dtype``, ``normalization`` (``"none"``,
            ``"train-split"`` or ``"given"``), ``normalize_mean`` / ``normalize_std`` (lists or
            None), ``sha256`` (see :meth:`fingerprint`) and the entries of ``info``.
        """
        norm = self.normalization
        out: dict[str, Any] = {
            "spec": self.spec,
            "split": self.split,
            "n": len(self),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "x_dtype": str(self.x.dtype).removeprefix("torch."),
            "y_dtype": str(self.y.dtype).removeprefix("torch."),
            "normalization": norm["source"] if norm else "none",
            "normalize_mean": list(norm["mean"]) if norm else None,
            "normalize_std": list(norm["std"]) if norm else None,
            "sha256": self.fingerprint(),
        }
        out.update(self.info)
        return out


# --------------------------------------------------------------------------------------------
# raw loaders: each returns (x, y, num_classes, info) for one split, before normalisation


def as_xy(data) -> tuple[Tensor, Tensor]:
    """The inputs and targets of a dataset argument: a :class:`TensorData` (anything with
    ``.x`` and ``.y``) or a tuple ``(x, y)`` of tensors; one clear error otherwise."""
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        return data[0], data[1]
    raise TypeError(
        f"data should be a TensorData (landscape.load_data) or a tuple (x, y) of tensors, got {type(data).__name__}"
    )


def _parse_options(spec: str, tokens: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    positional: list[str] = []
    options: dict[str, str] = {}
    for token in tokens:
        if "=" in token:
            key, _, value = token.partition("=")
            options[key.strip()] = value.strip()
        elif token:
            positional.append(token.strip())
    return positional, options


def _parse_int(spec: str, name: str, value: str, minimum: int = 1) -> int:
    try:
        out = int(value)
    except ValueError:
        out = minimum - 1
    if out < minimum:
        raise DataError(f"{name}={value!r} in data spec {spec!r}; expected an integer >= {minimum}")
    return out


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)
    return images, np.asarray(bunch.target, dtype=np.int64)


def _digits_indices(split: str, total: int) -> np.ndarray:
    perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(total)
    if split == "train":
        return perm[:DIGITS_TRAIN_SIZE]
    if split == "test":
        return perm[DIGITS_TRAIN_SIZE:]
    return perm


def _load_digits(spec: str, tokens: list[str], split: str, max_samples: int | None):
    positional, options = _parse_options(spec, tokens)
    if options or len(positional) > 1 or (positional and positional[0] not in ("flat", "image")):
        raise DataError(f"unknown option in data spec {spec!r}; expected 'digits', 'digits:flat' or 'digits:image'")
    image_form = bool(positional) and positional[0] == "image"
    images, labels = _digits_arrays()
    idx = _digits_indices(split, len(labels))
    if max_samples is not None:
        idx = idx[:max_samples]
    x = torch.from_numpy(images[idx].copy())
    x = x.reshape(len(idx), 1, 8, 8) if image_form else x.reshape(len(idx), 64)
    y = torch.from_numpy(labels[idx].copy())
    info = {
        "digits_split_seed": DIGITS_SPLIT_SEED,
        "digits_train_size": DIGITS_TRAIN_SIZE,
        "digits_test_size": len(labels) - DIGITS_TRAIN_SIZE,
    }
    return x, y, 10, info


def _synthetic_block(seed: int, split: str, block: int, shape, classes: int):
    state = np.random.SeedSequence([seed, _SPLIT_CODES[split], block]).generate_state(2, np.uint64)
    generator = torch.Generator().manual_seed(int(state[0]) & ((1 << 63) - 1))
    x = torch.randn((_SYNTHETIC_BLOCK, *shape), generator=generator)
    y = torch.randint(0, classes, (_SYNTHETIC_BLOCK,), generator=generator)
    return x, y


def _synthetic_split(seed: int, split: str, n: int, shape, classes: int):
    xs, ys = [], []
    for block in range((n + _SYNTHETIC_BLOCK - 1) // _SYNTHETIC_BLOCK):
        x, y = _synthetic_block(seed, split, block, shape, classes)
        xs.append(x)
        ys.append(y)
    if not xs:
        return torch.empty((0, *shape)), torch.empty((0,), dtype=torch.int64)
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def _load_synthetic(
    spec: str, tokens: list[str], split: str, max_samples: int | None, seed: int, allow_large: bool = False
):
    positional, options = _parse_options(spec, tokens)
    unknown = sorted(set(options) - {"n", "test_n"})
    if unknown or not positional or len(positional) > 2:
        raise DataError(
            f"cannot parse data spec {spec!r}; expected synthetic:<preset> or "
            f"synthetic:<C>x<H>x<W>[:<classes>][:n=<N>][:test_n=<M>], presets "
            f"{sorted(SYNTHETIC_PRESETS)}"
        )
    if positional[0] in SYNTHETIC_PRESETS:
        if len(positional) > 1:
            raise DataError(f"data spec {spec!r} names a preset and a class count; give one of them")
        shape, classes = SYNTHETIC_PRESETS[positional[0]]
    else:
        try:
            shape = tuple(int(s) for s in positional[0].lower().split("x"))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise DataError(
                f"synthetic shape {positional[0]!r} in data spec {spec!r} is neither a preset "
                f"{sorted(SYNTHETIC_PRESETS)} nor a shape like 3x32x32"
            )
        classes = _parse_int(spec, "classes", positional[1]) if len(positional) > 1 else 10
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be a non-negative int, got {seed!r}")
    n_train = _parse_int(spec, "n", options["n"]) if "n" in options else _SYNTHETIC_TRAIN_SIZE
    n_test = _parse_int(spec, "test_n", options["test_n"]) if "test_n" in options else max(1, n_train // 5)
    sizes = {"train": n_train, "test": n_test}
    parts = ["train", "test"] if split == "all" else [split]
    _check_synthetic_size(spec, sizes, parts, max_samples, shape, allow_large)
    xs, ys = [], []
    remaining = max_samples
    for part in parts:
        n = sizes[part] if remaining is None else min(sizes[part], remaining)
        x, y = _synthetic_split(seed, part, n, shape, classes)
        xs.append(x)
        ys.append(y)
        if remaining is not None:
            remaining -= n
    info = {
        "seed": seed,
        "synthetic_train_size": n_train,
        "synthetic_test_size": n_test,
    }
    return torch.cat(xs), torch.cat(ys), classes, info


def _check_synthetic_size(spec: str, sizes: dict, parts: list[str], max_samples, shape, allow_large: bool) -> None:
    """Refuse (:class:`landscape.budget.TooLargeError`) synthetic data larger than the
    memory available, before any of it is generated: float32 inputs and int64 labels, held
    twice while the blocks are joined."""
    from .budget import check_memory

    n = sum(sizes[p] for p in parts)
    if max_samples is not None:
        n = min(n, max_samples)
    per_sample = 4 * math.prod(shape) + 8
    check_memory(
        {"generated blocks": n * per_sample, "joined copy": n * per_sample},
        f"data spec {spec!r} ({n} samples of shape {'x'.join(map(str, shape))})",
        allow_large=allow_large,
    )


def _as_input_tensor(value: Any, name: str, source: str) -> Tensor:
    try:
        tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: array {name!r} cannot be read as a tensor ({exc})") from None
    tensor = tensor.detach()
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float32) / 255.0
    if tensor.dtype in (torch.float16, torch.bfloat16) or not tensor.is_floating_point():
        return tensor.to(torch.float32)
    return tensor


def _as_label_tensor(value: Any, name: str, source: str) -> Tensor:
    try:
        tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: array {name!r} cannot be read as a tensor ({exc})") from None
    tensor = tensor.detach()
    if tensor.is_floating_point():
        return tensor
    if tensor.is_complex():
        raise DataError(f"{source}: {name} is complex; expected integer labels or float targets")
    tensor = tensor.to(torch.int64)
    if tensor.dim() != 1:
        raise DataError(f"{source}: {name} has shape {tuple(tensor.shape)}; expected 1-D class labels")
    if tensor.numel() and int(tensor.min()) < 0:
        raise DataError(f"{source}: {name} has negative labels (min {int(tensor.min())}); expected class indices >= 0")
    return tensor


def _arrays_to_split(arrays: dict[str, Any], split: str, source: str):
    names = sorted(arrays)
    split_keys = ("x_train", "y_train", "x_test", "y_test")
    if all(k in arrays for k in split_keys):
        parts = ["train", "test"] if split == "all" else [split]
        label_keys = ["y_train", "y_test"]
    elif "x" in arrays and "y" in arrays:
        parts = [None]
        label_keys = ["y"]
    else:
        raise DataError(
            f"{source} has arrays {names}; expected 'x' and 'y' (or 'x_train', 'y_train', 'x_test', 'y_test')"
        )
    xs, ys = [], []
    for part in parts:
        xk, yk = ("x", "y") if part is None else (f"x_{part}", f"y_{part}")
        x = _as_input_tensor(arrays[xk], xk, source)
        y = _as_label_tensor(arrays[yk], yk, source)
        if x.dim() < 1 or y.dim() < 1 or x.shape[0] != y.shape[0]:
            raise DataError(
                f"{source}: {xk} has shape {tuple(x.shape)} but {yk} has shape "
                f"{tuple(y.shape)}; expected the same number of samples"
            )
        xs.append(x)
        ys.append(y)
    if len({y.dtype for y in ys}) > 1 or len({x.shape[1:] for x in xs}) > 1:
        raise DataError(f"{source}: the train and test arrays differ in sample shape or label type")
    y = torch.cat(ys)
    x = torch.cat(xs)
    if "num_classes" in arrays:
        num_classes = int(np.asarray(arrays["num_classes"]).reshape(()))
    elif y.is_floating_point():
        num_classes = None
    else:
        all_labels = [_as_label_tensor(arrays[k], k, source) for k in label_keys]
        num_classes = max((int(t.max()) + 1 for t in all_labels if t.numel()), default=0)
    return x, y, num_classes


def _check_not_empty(path: str, expected: str) -> None:
    """An empty data file gets one sentence (np.load raises EOFError, torch.load IndexError)."""
    if os.path.getsize(path) == 0:
        raise DataError(f"data file {path!r} is empty (0 bytes); expected {expected}")


_NPZ_EXPECTED = "an .npz archive (numpy.savez) with arrays x and y (or x_train, y_train, x_test, y_test)"
_PT_EXPECTED = (
    "a torch.save file of a dict with tensors x and y (or x_train, y_train, x_test, y_test) or a tuple (x, y)"
)


def _load_npz(path: str, split: str):
    _check_not_empty(path, _NPZ_EXPECTED)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):  # a single .npy array saved under an .npz name
                raise ValueError("it holds one array, not an archive of named arrays")
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"could not read {path!r} as an .npz archive ({reason}); expected {_NPZ_EXPECTED}") from None
    return _arrays_to_split(arrays, split, os.path.basename(path))


def _load_pt(path: str, split: str):
    _check_not_empty(path, _PT_EXPECTED)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, (IndexError, KeyError)):  # what torch.load hits first in a file it did not write
            first_line = f"not a torch.save file ({type(exc).__name__} {first_line})"
        raise DataError(
            f"could not load {path!r} with torch.load(weights_only=True): {first_line}; expected {_PT_EXPECTED}"
        ) from None
    source = os.path.basename(path)
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        obj = {"x": obj[0], "y": obj[1]}
    if not isinstance(obj, dict):
        raise DataError(
            f"{source} holds a {type(obj).__name__}; expected a dict with tensors 'x' and 'y' "
            "(or 'x_train', 'y_train', 'x_test', 'y_test') or a tuple (x, y)"
        )
    return _arrays_to_split({str(k): v for k, v in obj.items()}, split, source)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR python batches: numpy arrays, lists, dicts, bytes; nothing else."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _read_cifar_batch(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"could not read CIFAR batch {path!r}: {exc}") from None
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR batch {path!r} holds a {type(batch).__name__}; expected a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


_CIFAR_LAYOUT = {
    # kind: (folder name, train files, test files, label key, classes)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        10,
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def _find_cifar_dir(kind: str, directory: str) -> str | None:
    folder, train_files, test_files, _, _ = _CIFAR_LAYOUT[kind]
    for candidate in (directory, os.path.join(directory, folder)):
        if all(os.path.isfile(os.path.join(candidate, f)) for f in train_files + test_files):
            return candidate
    return None


def _load_cifar(kind: str, directory: str, split: str):
    folder, train_files, test_files, label_key, classes = _CIFAR_LAYOUT[kind]
    if not os.path.isdir(directory):
        raise DataError(
            f"CIFAR directory {directory!r} does not exist (expected the {folder!r} folder or "
            "its parent; landscape never downloads)"
        )
    found = _find_cifar_dir(kind, directory)
    if found is None:
        raise DataError(
            f"CIFAR directory {directory!r} lacks {train_files + test_files} (expected the "
            f"{folder!r} folder or its parent; landscape never downloads)"
        )
    files = {"train": train_files, "test": test_files, "all": train_files + test_files}[split]
    xs, ys = [], []
    for name in files:
        batch = _read_cifar_batch(os.path.join(found, name))
        if "data" not in batch or label_key not in batch:
            raise DataError(
                f"CIFAR batch {name!r} has keys {sorted(map(str, batch))}; expected 'data' and {label_key!r}"
            )
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        xs.append(torch.from_numpy(data.copy()))
        ys.append(torch.as_tensor(np.asarray(batch[label_key], dtype=np.int64)))
    x = torch.cat(xs).to(torch.float32) / 255.0
    y = torch.cat(ys)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"CIFAR directory {found!r}: {x.shape[0]} images but {y.shape[0]} labels")
    return x, y, classes, {"data_path": os.path.abspath(found)}


def _image_files(class_dir: str) -> list[str]:
    return sorted(
        os.path.join(class_dir, f)
        for f in os.listdir(class_dir)
        if f.lower().endswith(_IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(class_dir, f))
    )


def _read_image_folder(directory: str, classes: list[str] | None):
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"reading image folder {directory!r} needs Pillow (pip install pillow)") from None
    found = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"image folder {directory!r} has classes {unknown} that the train split lacks")
    arrays, labels, modes = [], [], set()
    for index, name in enumerate(classes):
        class_dir = os.path.join(directory, name)
        if not os.path.isdir(class_dir):
            continue
        for path in _image_files(class_dir):
            with Image.open(path) as image:
                modes.add(image.mode)
                arrays.append((path, image.convert("RGB")))
            labels.append(index)
    if not arrays:
        raise DataError(
            f"image folder {directory!r} has no images (expected <dir>/<class>/<image> with "
            f"extensions {list(_IMAGE_EXTENSIONS)})"
        )
    grayscale = modes <= {"L", "1", "I;16", "I"}
    pixels = []
    first_size = arrays[0][1].size
    for path, image in arrays:
        if image.size != first_size:
            raise DataError(
                f"image {path!r} is {image.size[0]}x{image.size[1]}; expected {first_size[0]}x{first_size[1]} like the first image"
            )
        data = np.asarray(image.convert("L") if grayscale else image, dtype=np.uint8)
        pixels.append(data[None] if grayscale else data.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(pixels)).to(torch.float32) / 255.0
    return x, torch.tensor(labels, dtype=torch.int64), classes


def _load_image_folder(directory: str, split: str):
    if not os.path.isdir(directory):
        raise DataError(f"image folder {directory!r} does not exist (expected <dir>/<class>/<image>)")
    sub = {
        "train": os.path.join(directory, "train"),
        "test": next(
            (os.path.join(directory, d) for d in ("test", "val") if os.path.isdir(os.path.join(directory, d))),
            os.path.join(directory, "test"),
        ),
    }
    if os.path.isdir(sub["train"]) and os.path.isdir(sub["test"]):
        x_train, y_train, classes = _read_image_folder(sub["train"], None)
        if split == "train":
            x, y = x_train, y_train
        else:
            x_test, y_test, _ = _read_image_folder(sub["test"], classes)
            x, y = (x_test, y_test) if split == "test" else (torch.cat([x_train, x_test]), torch.cat([y_train, y_test]))
    else:
        x, y, classes = _read_image_folder(directory, None)
    return (
        x,
        y,
        len(classes),
        {"data_path": os.path.abspath(directory), "class_names": list(classes)},
    )


# --------------------------------------------------------------------------------------------
# text corpora (byte-level tokens)


def _parse_text_spec(spec: str, rest: str, seq_len: int | None) -> tuple[str, int, list[str] | None]:
    """``<path>[:seq=T][:ext=a,b]`` -> (path, seq_len, extensions or None)."""
    tokens = rest.split(":")
    options: dict[str, str] = {}
    while len(tokens) > 1 and tokens[-1].partition("=")[0].strip() in _TEXT_OPTIONS and "=" in tokens[-1]:
        key, _, value = tokens.pop().partition("=")
        options["seq" if key.strip() == "seq_len" else key.strip()] = value.strip()
    path = ":".join(tokens)
    if not path:
        raise DataError(f"data spec {spec!r} names no path; expected text:<file or folder>[:seq=<T>][:ext=py,txt]")
    seq = _parse_int(spec, "seq", options["seq"]) if "seq" in options else None
    if seq_len is not None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise DataError(f"seq_len must be a positive int, got {seq_len!r}")
        if seq is not None and seq != seq_len:
            raise DataError(f"data spec {spec!r} says seq={seq} but seq_len={seq_len} was given; give one of them")
        seq = seq_len
    extensions = None
    if "ext" in options:
        extensions = sorted({"." + e.strip().lstrip(".").lower() for e in options["ext"].split(",") if e.strip()})
        if not extensions:
            raise DataError(f"ext= in data spec {spec!r} names no extension; expected e.g. ext=py,txt")
    return path, seq or TEXT_SEQ_LEN, extensions


def _text_files(path: str, extensions: list[str] | None) -> list[tuple[str, str]]:
    """(relative name, full path) of the corpus files, in sorted order of their relative paths."""
    if os.path.isfile(path):
        return [(os.path.basename(path), path)]
    found = []
    for directory, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            full = os.path.join(directory, name)
            if name.startswith(".") or not os.path.isfile(full):
                continue
            if extensions is not None and os.path.splitext(name)[1].lower() not in extensions:
                continue
            found.append((os.path.relpath(full, path).replace(os.sep, "/"), full))
    return sorted(found)


def _load_text(spec: str, rest: str, split: str, max_samples: int | None, root: str | None, seq_len: int | None):
    raw_path, seq, extensions = _parse_text_spec(spec, rest, seq_len)
    path = _resolve_path(raw_path, root)
    if not os.path.exists(path):
        raise DataError(f"text path {raw_path!r} does not exist (data spec {spec!r}; expected a file or a folder)")
    files = _text_files(path, extensions)
    digest = hashlib.sha256()
    chunks = []
    for _, full in files:
        try:
            with open(full, "rb") as handle:
                chunk = handle.read()
        except OSError as exc:
            raise DataError(f"could not read text file {full!r}: {exc.strerror or exc}") from None
        digest.update(chunk)
        chunks.append(chunk)
    corpus = b"".join(chunks)
    what = f"text {'folder' if os.path.isdir(path) else 'file'} {raw_path!r}"
    if not files:
        kept = f" with extensions {extensions}" if extensions else ""
        raise DataError(f"{what} holds no files{kept} (data spec {spec!r}; hidden files and __pycache__ are skipped)")
    if not corpus:
        raise DataError(f"{what} holds no bytes ({len(files)} empty file(s)); expected a text corpus")
    total = len(corpus) // seq
    if total == 0:
        raise DataError(f"{what} holds {len(corpus)} bytes, fewer than one sequence of seq={seq} bytes")
    ids = torch.frombuffer(bytearray(corpus[: total * seq]), dtype=torch.uint8).view(total, seq)
    index = torch.arange(total)
    test = index % TEXT_TEST_EVERY == TEXT_TEST_EVERY - 1
    keep = {"train": ~test, "test": test, "all": torch.ones_like(test)}[split]
    chosen = index[keep]
    if max_samples is not None:
        chosen = chosen[:max_samples]
    if chosen.numel() == 0:
        raise DataError(
            f"{what} gives {total} sequence(s) of {seq} bytes and none is in the {split} split (every "
            f"{TEXT_TEST_EVERY}th sequence is test); use a larger corpus or a smaller seq"
        )
    x = ids[chosen].to(torch.int64)
    info = {
        "data_path": os.path.abspath(path),
        "text_files": len(files),
        "text_bytes": len(corpus),
        "text_sha256": digest.hexdigest(),
        "text_extensions": extensions,
        "seq_len": seq,
        "text_sequences": total,
        "text_test_every": TEXT_TEST_EVERY,
        "tokenizer": "bytes",
    }
    return x, x.clone(), 256, info


def _resolve_path(path: str, root: str | None) -> str:
    path = os.path.expanduser(path)
    if root is not None and not os.path.isabs(path):
        path = os.path.join(os.path.expanduser(root), path)
    return path


def _load_raw(
    spec: str,
    split: str,
    max_samples: int | None,
    seed: int,
    root: str | None,
    seq_len=None,
    allow_large: bool = False,
):
    """Load one split of ``spec`` without normalisation: (x, y, num_classes, info)."""
    name, _, rest = spec.partition(":")
    tokens = rest.split(":") if rest else []
    if name == "text" and ":" in spec:
        return _load_text(spec, rest, split, max_samples, root, seq_len)
    if seq_len is not None:
        raise DataError(f"seq_len applies to text:<path> specs, not to {spec!r}")
    if name == "digits":
        return _load_digits(spec, tokens, split, max_samples)
    if name == "synthetic":
        return _load_synthetic(spec, tokens, split, max_samples, seed, allow_large)
    if name in _CIFAR_LAYOUT and (rest or root is not None):
        directory = _resolve_path(rest, root) if rest else os.path.expanduser(root)
        return _load_cifar(name, directory, split)
    if name in _CIFAR_LAYOUT:
        raise DataError(
            f"data spec {spec!r} names no directory; expected {name}:<dir> (the "
            f"{_CIFAR_LAYOUT[name][0]!r} folder or its parent) or root=<dir>"
        )
    if name == "imagefolder" and rest:
        return _load_image_folder(_resolve_path(rest, root), split)
    path = _resolve_path(spec, root)
    lower = path.lower()
    if lower.endswith((".npz", ".pt", ".pth")):
        if not os.path.isfile(path):
            raise DataError(f"data file {spec!r} does not exist (expected {_EXPECTED_SPECS})")
        x, y, num_classes = _load_npz(path, split) if lower.endswith(".npz") else _load_pt(path, split)
        return x, y, num_classes, {"data_path": os.path.abspath(path)}
    if os.path.isdir(path):
        for kind in _CIFAR_LAYOUT:
            if _find_cifar_dir(kind, path) is not None:
                return _load_cifar(kind, path, split)
        return _load_image_folder(path, split)
    if os.sep in spec or "/" in spec or os.path.splitext(spec)[1]:
        raise DataError(f"data path {spec!r} does not exist (expected {_EXPECTED_SPECS})")
    raise DataError(f"unknown data spec {spec!r} (expected {_EXPECTED_SPECS})")


# --------------------------------------------------------------------------------------------
# py:<module>:<function> specs: the user's own data sets

_PY_PREFIX = "py:"
_PY_RETURNS = "a Dataset, a DataLoader, an iterable of batches, a TensorData or a tuple (x, y) of tensors"


def _is_py_spec(spec: Any) -> bool:
    return isinstance(spec, str) and spec.strip().startswith(_PY_PREFIX)


def _parse_data_kwargs(kwargs: dict[str, Any] | str | None, spec: str) -> dict[str, Any]:
    kwargs = parse_kwargs(kwargs, "data kwargs", DataError, '\'{"root": "data"}\'')
    if kwargs and not _is_py_spec(spec):
        raise DataError(f"data kwargs {kwargs} apply to py:<module>:<function> specs, not to {spec!r}")
    return dict(kwargs)


class _FirstSamples:
    """The first ``n`` samples of a loader or iterable of batches (the last batch cut)."""

    def __init__(self, data: Any, n: int, spec: str):
        self.data, self.n, self.spec = data, n, spec

    def __iter__(self):
        from .batches import read_batch

        left = self.n
        for raw in self.data:
            count = read_batch(raw).count
            if count > left:
                raw = read_batch(raw).slice(0, left).raw
                count = left
            left -= count
            yield raw
            if left <= 0:
                return

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spec": self.spec, "kind": type(self.data).__name__, "max_samples": self.n}
        batch_size = getattr(self.data, "batch_size", None)
        if isinstance(batch_size, int):
            out["batch_size"] = batch_size
        return out


def _call_py(spec: str, split: str, kwargs: dict[str, Any]):
    from .models.registry import import_object

    body = spec[len(_PY_PREFIX) :]
    module_name, _, attribute = body.partition(":")
    if not module_name or not attribute or ":" in attribute:
        raise DataError(
            f"data spec {spec!r} is not py:<package.module>:<function> (one module path, one colon, one function)"
        )
    try:
        fn = import_object(module_name, attribute, f"data spec {spec!r}")
    except ImportError as exc:
        raise DataError(str(exc)) from exc
    if not callable(fn):
        raise DataError(f"{spec!r} is a {type(fn).__name__}, not a function(split, **kwargs) returning data")
    try:
        return fn(split, **kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(
            f"data spec {spec!r}: {attribute}({split!r}, **{kwargs}) raised {type(exc).__name__}: {first}"
        ) from exc


def _open_py(spec: str, split: str, kwargs: dict[str, Any], max_samples: int | None, normalize) -> Any:
    """The data ``py:<module>:<function>`` returns for ``split``, checked, cut to ``max_samples``."""
    from .batches import BatchError, as_source

    if normalize is not False:
        raise DataError(f"normalize (--normalize) does not apply to {spec!r}: normalise the inputs inside the function")
    data = _call_py(spec, split, kwargs)
    try:
        source = as_source(data)
    except (BatchError, DataError) as exc:
        raise DataError(f"data spec {spec!r} returned unusable data: {exc}") from exc
    info = {"data_kwargs": kwargs} if kwargs else {}
    if source.kind == "tensors":
        x, y = source.x, source.y
        if max_samples is not None:
            x, y = x[:max_samples], y[:max_samples]
        num_classes = getattr(data, "num_classes", None)
        if num_classes is None and not y.is_floating_point() and y.dim() == 1 and y.numel():
            num_classes = int(y.max()) + 1
        info = {**getattr(data, "info", {}), **info}
        normalization = getattr(data, "normalization", None)
        return TensorData(x, y, spec, num_classes, split=split, normalization=normalization, info=info)
    if max_samples is not None:
        if source.kind == "dataset":
            n = min(max_samples, len(data))
            data = torch.utils.data.Subset(data, range(n))
        else:
            return _FirstSamples(data, max_samples, spec)
    try:
        data.spec = spec  # recorded by DataSource.describe()
    except (AttributeError, TypeError):
        pass
    return data


def _read_into_memory(data: Any, spec: str, split: str) -> TensorData:
    """A :class:`TensorData` of the ``(input, target)`` batches of a loader or dataset."""
    from .batches import as_source

    if isinstance(data, TensorData):
        return data
    xs, ys = [], []
    for batch in as_source(data).batches(None, "cpu", split=False):
        if len(batch.args) != 1 or batch.kwargs or batch.target is None or not torch.is_tensor(batch.args[0]):
            kind = f"dict batches with keys {sorted(batch.kwargs)}" if batch.kwargs else "batches without targets"
            raise DataError(
                f"data spec {spec!r} gives {kind}; this analysis needs in-memory (input, target) data: return "
                "(x, y) tensors, a TensorData, or a Dataset/DataLoader of (input, target) pairs"
            )
        xs.append(batch.args[0])
        ys.append(batch.target)
    try:
        x, y = torch.cat(xs), torch.cat(ys)
    except RuntimeError as exc:
        raise DataError(f"data spec {spec!r}: its batches cannot be stacked into one tensor ({exc})") from None
    num_classes = int(y.max()) + 1 if not y.is_floating_point() and y.dim() == 1 and y.numel() else None
    info = {"data_kind": type(data).__name__}
    return TensorData(x, y, spec, num_classes, split=split, info=info)


def _channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    x64 = x.to(torch.float64)
    if x64.dim() == 1:
        x64 = x64[:, None]
    dims = [d for d in range(x64.dim()) if d != 1]
    mean = x64.mean(dim=dims)
    std = x64.std(dim=dims, correction=0)
    return mean.tolist(), std.tolist()


def _apply_normalization(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    channels = x.shape[1] if x.dim() > 1 else 1
    mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
    for label, values in (("mean", mean_t), ("std", std_t)):
        if values.numel() not in (1, channels):
            raise DataError(
                f"normalize {label} has {values.numel()} values; expected 1 or {channels} "
                f"(one per channel of inputs shaped {tuple(x.shape[1:])})"
            )
    std_t = torch.where(std_t == 0, torch.ones_like(std_t), std_t)
    view = [1, -1] + [1] * max(0, x.dim() - 2) if x.dim() > 1 else [-1]
    mean_b = mean_t.reshape(view) if mean_t.numel() > 1 else mean_t.reshape(())
    std_b = std_t.reshape(view) if std_t.numel() > 1 else std_t.reshape(())
    return ((x.to(torch.float64) - mean_b) / std_b).to(x.dtype)


def load_data(
    spec: str,
    split: str = "train",
    *,
    max_samples: int | None = None,
    normalize: bool | tuple[Any, Any] = False,
    seed: int = 0,
    root: str | None = None,
    seq_len: int | None = None,
    kwargs: dict[str, Any] | str | None = None,
    allow_large: bool = False,
) -> TensorData:
    """Load a data spec into memory.

    Parameters
    ----------
    spec : str
        A data spec (see the module docstring): ``digits``, ``digits:image``,
        ``synthetic:cifar10``, ``synthetic:3x32x32:10:n=512``, ``data.npz``, ``data.pt``,
        ``cifar10:<dir>``, ``cifar100:<dir>``, ``imagefolder:<dir>``, a directory,
        ``text:<path>[:seq=<T>]`` or ``py:<module>:<function>`` (its ``(input, target)``
        batches are read into memory; :func:`open_data` streams them instead).
    split : {"train", "test", "all"}
        Which split to return.
    max_samples : int, optional
        Keep only the first ``max_samples`` samples of the split.
    normalize : bool or (mean, std)
        ``True``: per-channel standardisation with the statistics of the whole train split.
        A ``(mean, std)`` pair (scalars or one value per channel, dim 1 of ``x``) is applied
        as given.  ``False`` (default): inputs as loaded.
    seed : int
        Seed of synthetic data (train and test use different streams).  The digits split is
        fixed by ``DIGITS_SPLIT_SEED`` and not affected.
    root : str, optional
        Directory against which relative paths in ``spec`` are resolved; the CIFAR directory
        when the spec is just ``cifar10``/``cifar100``.
    seq_len : int, optional
        Bytes per sequence of a ``text:`` spec (default 128, or the spec's ``seq=``).
    kwargs : dict or JSON object string, optional
        Keyword arguments of a ``py:`` spec's function.
    allow_large : bool
        Generate synthetic data larger than the memory available (else
        :class:`landscape.budget.TooLargeError` before any of it is made).

    Returns
    -------
    TensorData
        ``x : Tensor[N, ...]`` and ``y : Tensor[N]`` on the CPU.

    Raises
    ------
    DataError
        For an unknown spec, a missing file or directory, missing arrays, mismatched lengths
        or a bad option; the message names what arrived and what was expected.

    Examples
    --------
    >>> train = load_data("digits", "train")
    >>> test = load_data("digits:image", "test", normalize=True)
    >>> len(train), tuple(test.x.shape), test.num_classes
    (1257, (540, 1, 8, 8), 10)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data spec must be a non-empty string, got {spec!r} (expected {_EXPECTED_SPECS})")
    spec = spec.strip()
    if split not in _SPLITS:
        raise DataError(f"split {split!r} is not one of {list(_SPLITS)}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise DataError(f"max_samples must be a positive int or None, got {max_samples!r}")
    call_kwargs = _parse_data_kwargs(kwargs, spec)
    if _is_py_spec(spec):
        if seq_len is not None:
            raise DataError(f"seq_len applies to text:<path> specs, not to {spec!r}")
        return _read_into_memory(_open_py(spec, split, call_kwargs, max_samples, normalize), spec, split)
    if spec.startswith("text:") and normalize is not False:
        raise DataError(f"normalize (--normalize) does not apply to {spec!r}: its inputs are token ids")
    x, y, num_classes, info = _load_raw(spec, split, max_samples, seed, root, seq_len, allow_large)
    if max_samples is not None:
        x, y = x[:max_samples], y[:max_samples]

    normalization = None
    if isinstance(normalize, bool):
        if normalize:
            if split == "train" and max_samples is None:
                train_x = x
            else:
                train_x = _load_raw(spec, "train", None, seed, root, allow_large=allow_large)[0]
            mean, std = _channel_stats(train_x)
            normalization = {"source": "train-split", "mean": mean, "std": std}
    elif isinstance(normalize, (tuple, list)) and len(normalize) == 2:
        mean = torch.as_tensor(normalize[0], dtype=torch.float64).reshape(-1).tolist()
        std = torch.as_tensor(normalize[1], dtype=torch.float64).reshape(-1).tolist()
        if any(s <= 0 for s in std):
            raise DataError(f"normalize std {std} has values <= 0; expected positive deviations")
        normalization = {"source": "given", "mean": mean, "std": std}
    else:
        raise DataError(f"normalize must be True, False or a (mean, std) pair, got {normalize!r}")
    if normalization is not None:
        if not x.is_floating_point():
            raise DataError(f"cannot normalise inputs of dtype {x.dtype}; expected floating inputs")
        x = _apply_normalization(x, normalization["mean"], normalization["std"])
    return TensorData(x, y, spec, num_classes, split=split, normalization=normalization, info=info)


def open_data(
    spec: str,
    split: str = "train",
    *,
    max_samples: int | None = None,
    normalize: bool | tuple[Any, Any] = False,
    seed: int = 0,
    root: str | None = None,
    seq_len: int | None = None,
    kwargs: dict[str, Any] | str | None = None,
    allow_large: bool = False,
) -> Any:
    """The data of a spec for analyses that stream batches: what :func:`load_data` gives, except
    that a ``py:<module>:<function>`` spec's Dataset, DataLoader or iterable of batches is
    returned as it is (the first ``max_samples`` samples of it), not read into memory.

    Parameters are those of :func:`load_data`.

    Returns
    -------
    TensorData, Dataset, DataLoader or re-iterable of batches
        Anything :func:`landscape.batches.as_source` accepts.

    Raises
    ------
    DataError
        As :func:`load_data`; for ``py:`` specs also a module or function that cannot be found,
        bad ``kwargs``, a function that raises ``TypeError``/``ValueError``, or a return value
        that is not data (the message names its type).

    Examples
    --------
    >>> open_data("digits", "test", max_samples=5).x.shape
    torch.Size([5, 64])
    """
    if not _is_py_spec(spec):
        return load_data(
            spec,
            split,
            max_samples=max_samples,
            normalize=normalize,
            seed=seed,
            root=root,
            seq_len=seq_len,
            kwargs=kwargs,
            allow_large=allow_large,
        )
    spec = spec.strip()
    if split not in _SPLITS:
        raise DataError(f"split {split!r} is not one of {list(_SPLITS)}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise DataError(f"max_samples must be a positive int or None, got {max_samples!r}")
    if seq_len is not None:
        raise DataError(f"seq_len applies to text:<path> specs, not to {spec!r}")
    return _open_py(spec, split, _parse_data_kwargs(kwargs, spec), max_samples, normalize)
