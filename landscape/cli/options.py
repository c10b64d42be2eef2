"""The options several subcommands share, each declared once.

Groups: the model (:func:`add_model`), the data (:func:`add_data`, :func:`add_split`), the
metrics (:func:`add_metrics`), the evaluation engine (:func:`add_bn`, :func:`add_precision`,
:func:`add_device`, :func:`add_batching`, all four in :func:`add_engine`), the output
(:func:`add_output`: ``--out``, ``--resume``, ``--force``, ``--allow-large``; :func:`add_force`:
the last two alone),
``--trust-checkpoint`` (:func:`add_trust`), ``--no-progress`` (:func:`add_progress`) and
``--plot`` (:func:`add_plot`). :func:`add_evaluation` is the set the engine commands
(``eval``, ``surface``, ``curve fit|eval|plane``) take.
"""

from __future__ import annotations

import argparse

__all__ = [
    "DATA_HELP",
    "MODEL_HELP",
    "add_allow_large",
    "add_batching",
    "add_bn",
    "add_data",
    "add_device",
    "add_engine",
    "add_evaluation",
    "add_force",
    "add_metrics",
    "add_model",
    "add_output",
    "add_plot",
    "add_precision",
    "add_progress",
    "add_split",
    "add_trust",
]

DATA_HELP = (
    "digits | synthetic:cifar10 | file.npz | file.pt | cifar10:DIR | image folder | text:PATH[:seq=N] "
    "(byte-level corpus for causal LMs) | py:module:function (function(split, **DATA_KWARGS) returns a Dataset, "
    "DataLoader, TensorData or (x, y); the current directory is importable)"
)
DATA_SHORT_HELP = "digits | file.npz | text:PATH | py:module:function | ... (see `landscape eval --help`)"
MODEL_HELP = (
    "built-in name (see `landscape models`; the peers' networks as dmc.vgg16bn, swa.preresnet110, "
    "dbc.linear3nobias load those repositories' checkpoints) or module:factory (the current directory is importable)"
)
BN_MODES = ("running", "recompute", "recompute-batches", "recompute-exact")


def add_model(p: argparse.ArgumentParser) -> None:
    """``--model`` (required) and ``--model-kwargs``."""
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--model-kwargs", default=None, help="JSON object of keyword arguments for the factory")


def add_data(
    p: argparse.ArgumentParser,
    *,
    help: str = DATA_SHORT_HELP,
    max_samples_help: str = "use at most this many samples per split",
    normalize_help: str = "standardise inputs per channel with the train split's mean/std",
) -> None:
    """``--data`` (required) with the kwargs of py: specs and the sequence length of text:
    specs, ``--max-samples`` and ``--normalize``."""
    p.add_argument("--data", required=True, help=help)
    p.add_argument("--data-kwargs", default=None, help="JSON object of keyword arguments for a py: data function")
    p.add_argument(
        "--seq-len", type=int, default=None, help="bytes per sequence of a text: corpus (default 128, or its :seq=N)"
    )
    p.add_argument("--max-samples", type=int, default=None, help=max_samples_help)
    p.add_argument("--normalize", action="store_true", help=normalize_help)


def add_split(p: argparse.ArgumentParser, default: str = "test", help: str | None = None) -> None:
    """``--split``: the one split a command reads."""
    p.add_argument(
        "--split", default=default, help=help or f"data split to evaluate on (train/test/all), default {default}"
    )


def add_metrics(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics",
        default="loss,acc",
        help="comma-separated: loss, acc, err, mse, nll; causal LMs: token_loss, perplexity, token_acc "
        "(default loss,acc)",
    )


def add_bn(
    p: argparse.ArgumentParser,
    *,
    choices: tuple[str, ...] = BN_MODES,
    default: str = "running",
    help: str = "BatchNorm statistics (default running)",
    split: bool = True,
) -> None:
    """``--bn`` and (with ``split``) ``--bn-split``."""
    p.add_argument("--bn", default=default, choices=list(choices), help=help)
    if split:
        p.add_argument(
            "--bn-split", default="train", help="split used to recompute BatchNorm statistics (default train)"
        )


def add_precision(p: argparse.ArgumentParser, choices: tuple[str, ...] = ("fp64", "fp32", "tf32", "bf16")) -> None:
    p.add_argument("--precision", default="fp32", choices=list(choices))


def device_arg(text: str) -> str:
    """``--device``: a device string this machine has (checked before any work)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a device; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"'{text}' is not available: this PyTorch ({torch.__version__}) sees no CUDA GPU; expected cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"'{text}' is not available: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    elif device.type not in ("cpu", "mps", "xpu"):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device landscape runs on; expected cpu, cuda or cuda:N")
    return text


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device_arg, default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def add_batching(p: argparse.ArgumentParser) -> None:
    """How the engine cuts the work: samples and points per pass, memory budget, execution path."""
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--points-per-pass", type=int, default=None)
    p.add_argument(
        "--max-memory", default=None, help="memory budget, e.g. 4G (default: a safe fraction of free memory)"
    )
    p.add_argument(
        "--path", default="auto", choices=["auto", "fused", "compiled", "vmap", "loop"], help="execution path"
    )


def add_engine(p: argparse.ArgumentParser) -> None:
    """Every option of the evaluation engine."""
    add_bn(p)
    add_precision(p)
    add_device(p)
    add_batching(p)


def add_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow pickled Python objects in checkpoints (runs code from the file); "
        "a checkpoint given as FILE.pt:KEY is the state dict under KEY of a file that holds several",
    )


def add_force(p: argparse.ArgumentParser, help: str | None = "overwrite an existing --out file") -> None:
    """``--force`` and ``--allow-large``: every command that writes a file takes both."""
    p.add_argument("--force", action="store_true", help=help)
    add_allow_large(p)


def add_allow_large(p: argparse.ArgumentParser) -> None:
    """``--allow-large``: run even when the estimate says the output file exceeds 2 GB or the
    run needs more memory than the machine has available (:mod:`landscape.budget`); the CLI
    enters :func:`landscape.budget.allowing_large` with it around every command."""
    p.add_argument(
        "--allow-large",
        action="store_true",
        help="run even when the output would exceed 2 GB or the memory estimate exceeds what is available",
    )


def add_output(
    p: argparse.ArgumentParser,
    *,
    help: str = "write results to this HDF5 file",
    required: bool = True,
    default: str | None = None,
    resume: str | None = None,
    force: str | None = "overwrite an existing --out file",
) -> None:
    """``--out``, ``--resume`` (when ``resume`` gives its help) and ``--force``."""
    p.add_argument("--out", required=required, default=default, help=help)
    if resume is not None:
        p.add_argument("--resume", action="store_true", help=resume)
    add_force(p, force)


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_plot(p: argparse.ArgumentParser, help: str = "also write the figures next to the file") -> None:
    p.add_argument("--plot", action="store_true", help=help)


def add_evaluation(p: argparse.ArgumentParser, *, split: bool = True, out_required: bool = False) -> None:
    """The options of the commands that run the evaluation engine: model, data, metrics,
    engine, ``--trust-checkpoint``, output and ``--no-progress``."""
    add_model(p)
    add_data(p, help=DATA_HELP, max_samples_help="use at most this many samples")
    if split:
        add_split(p)
    add_metrics(p)
    add_engine(p)
    add_trust(p)
    add_output(p, required=out_required, resume="continue an interrupted --out file")
    add_progress(p)
