"""The ``landscape`` command. Argument parsing lives here and only here.

Subcommands: ``info`` (summary of a result file), ``eval`` (metrics of checkpoints),
``demo`` (the main job on bundled data). Errors print one line and exit with code 2;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


class UsageError(ValueError):
    """Bad command-line input."""


def parse_bytes(text: str) -> int:
    """``"2G"``, ``"512M"``, ``"1e9"`` -> bytes."""
    t = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if t and t[-1] in scale:
            return int(float(t[:-1]) * scale[t[-1]])
        return int(float(t))
    except ValueError:
        raise UsageError(f"--max-memory {text!r} is not a size; expected e.g. 2G, 512M or 1000000") from None


_DATA_HELP = (
    "digits | synthetic:cifar10 | file.npz | file.pt | cifar10:DIR | image folder | text:PATH[:seq=N] "
    "(byte-level corpus for causal LMs) | py:module:function (function(split, **DATA_KWARGS) returns a Dataset, "
    "DataLoader, TensorData or (x, y); the current directory is importable)"
)
_MODEL_HELP = "built-in name (see `landscape models`) or module:factory (the current directory is importable)"


def _add_data_options(p: argparse.ArgumentParser) -> None:
    """Options of every ``--data``: the kwargs of py: specs and the sequence length of text: specs."""
    p.add_argument("--data-kwargs", default=None, help="JSON object of keyword arguments for a py: data function")
    p.add_argument(
        "--seq-len", type=int, default=None, help="bytes per sequence of a text: corpus (default 128, or its :seq=N)"
    )


def _add_common_eval(p: argparse.ArgumentParser, *, split: bool = True, out_required: bool = False) -> None:
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--model-kwargs", default=None, help="JSON object of keyword arguments for the factory")
    p.add_argument("--data", required=True, help=_DATA_HELP)
    _add_data_options(p)
    if split:
        p.add_argument("--split", default="test", help="data split to evaluate on (train/test/all), default test")
    p.add_argument("--max-samples", type=int, default=None, help="use at most this many samples")
    p.add_argument(
        "--normalize", action="store_true", help="standardise inputs per channel with the train split's mean/std"
    )
    p.add_argument(
        "--metrics",
        default="loss,acc",
        help="comma-separated: loss, acc, err, mse, nll; causal LMs: token_loss, perplexity, token_acc "
        "(default loss,acc)",
    )
    p.add_argument(
        "--bn",
        default="running",
        choices=["running", "recompute", "recompute-exact"],
        help="BatchNorm statistics (default running)",
    )
    p.add_argument("--bn-split", default="train", help="split used to recompute BatchNorm statistics (default train)")
    p.add_argument("--precision", default="fp32", choices=["fp64", "fp32", "tf32", "bf16"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--points-per-pass", type=int, default=None)
    p.add_argument(
        "--max-memory", default=None, help="memory budget, e.g. 4G (default: a safe fraction of free memory)"
    )
    p.add_argument("--path", default="auto", choices=["auto", "fused", "vmap", "loop"], help="execution path")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow pickled Python objects in checkpoints (runs code from the file)",
    )
    p.add_argument("--out", required=out_required, default=None, help="write results to this HDF5 file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --out file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_model_data(p: argparse.ArgumentParser) -> None:
    """Model and data options of the commands that load their own splits."""
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--model-kwargs", default=None, help="JSON object of keyword arguments for the factory")
    p.add_argument(
        "--data",
        required=True,
        help="digits | file.npz | text:PATH | py:module:function | ... (see `landscape eval --help`)",
    )
    _add_data_options(p)
    p.add_argument("--max-samples", type=int, default=None, help="use at most this many samples per split")
    p.add_argument(
        "--normalize", action="store_true", help="standardise inputs per channel with the train split's mean/std"
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Loss surfaces, mode connectivity and ensembles of saved checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"landscape {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="summary of a result file")
    p.add_argument("file")

    p = sub.add_parser("eval", help="metrics of checkpoints")
    p.add_argument("--ckpt", action="append", required=True, help="checkpoint file (repeat for several)")
    _add_common_eval(p)

    p = sub.add_parser(
        "surface",
        help="1D/2D loss surfaces: interpolation, random line/plane, three-checkpoint plane, PCA plane",
        description="Evaluate a line or plane of weight points. Works under torchrun: "
        "torchrun --nproc_per_node=N -m landscape surface ... shards the grid over the ranks.",
    )
    p.add_argument(
        "--ckpt", action="append", default=[], help="checkpoint file (repeat: 1 = centre, 2 = ends, 3 = plane)"
    )
    p.add_argument(
        "--trajectory",
        nargs="+",
        default=None,
        help="checkpoints along a training run (files or one folder) for a PCA plane",
    )
    p.add_argument(
        "--type",
        dest="surface_type",
        default=None,
        choices=["interpolate", "line", "plane", "three-point", "pca"],
        help="default: plane for 1 checkpoint, interpolate for 2, three-point for 3, pca with --trajectory",
    )
    p.add_argument(
        "--x",
        default=None,
        help="MIN:MAX:COUNT (default -1:1:51; -0.5:1.5:41 to interpolate; auto for three-point/pca)",
    )
    p.add_argument("--y", default=None, help="MIN:MAX:COUNT for planes (default like --x)")
    p.add_argument("--splits", default="train,test", help="comma-separated data splits (default train,test)")
    p.add_argument(
        "--norm", default="filter", choices=["filter", "layer", "weight", "none"], help="direction normalization"
    )
    p.add_argument(
        "--ignore", default="biasbn", choices=["biasbn", "none"], help="zero biases and BatchNorm in directions"
    )
    p.add_argument("--states", action="store_true", help="random directions also move BatchNorm running statistics")
    p.add_argument("--seed", type=int, default=0, help="seed of random directions")
    p.add_argument("--plot", action="store_true", help="also write the figures next to the file")
    _add_common_eval(p, split=False, out_required=True)

    p = sub.add_parser("plot", help="figures from a result file (PNG and PDF)")
    p.add_argument("file")
    p.add_argument("--out", default=None, help="output folder (default: next to the file)")
    p.add_argument("--format", default="png,pdf", help="comma-separated formats (default png,pdf)")
    p.add_argument("--metrics", default=None, help="comma-separated metrics to plot (default: all losses/accuracies)")
    p.add_argument("--force", action="store_true", help="overwrite existing figures")

    p = sub.add_parser("export", help="export a surface for other tools (ParaView .vtp)")
    p.add_argument("file")
    p.add_argument("--vtp", required=True, metavar="OUT.vtp", help="write VTK XML PolyData here")
    p.add_argument("--metric", default="train_loss")
    p.add_argument("--log", action="store_true", help="log10 of the metric as height")
    p.add_argument("--zmax", type=float, default=None, help="clip heights above this value")
    p.add_argument("--force", action="store_true")

    p = sub.add_parser("curve", help="mode connectivity: fit | eval | plane | export a curve between two checkpoints")
    csub = p.add_subparsers(dest="curve_command", metavar="ACTION")
    c = csub.add_parser("fit", help="train a Bezier curve or polygonal chain between two checkpoints")
    c.add_argument("--ckpt", action="append", default=[], help="the two endpoint checkpoints (repeat)")
    c.add_argument("--curve", dest="curve_kind", default="bezier", choices=["bezier", "polychain"])
    c.add_argument("--bends", type=int, default=1, help="number of bends (default 1)")
    c.add_argument("--init", default=None, help="checkpoint to start the (single) bend from (default: the line)")
    c.add_argument("--epochs", type=int, default=20)
    c.add_argument("--lr", type=float, default=0.05)
    c.add_argument("--momentum", type=float, default=0.9)
    c.add_argument("--wd", type=float, default=5e-4, help="weight decay on the bends")
    c.add_argument("--schedule", default="garipov", choices=["garipov", "cosine", "constant"])
    c.add_argument("--t-per-batch", type=int, default=1, help="positions t sampled per minibatch")
    c.add_argument("--fair", action="store_true", help="arc-length weighted ('fair') loss")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--fit-batch-size", type=int, default=128)
    _add_common_eval(c, split=False, out_required=True)
    for action, text in (
        ("eval", "loss and error along t, against the straight line"),
        ("plane", "surface on the plane through the endpoints and the middle bend"),
    ):
        c = csub.add_parser(action, help=text)
        c.add_argument("--curve", dest="curve_file", required=True, help="curve file written by `landscape curve fit`")
        c.add_argument("--points", type=int, default=61, help="values of t (eval; default 61)")
        c.add_argument("--splits", default="train,test", help="comma-separated data splits (default train,test)")
        c.add_argument("--x", default=None, help="MIN:MAX:COUNT (plane; default: around the control points)")
        c.add_argument("--y", default=None, help="MIN:MAX:COUNT (plane)")
        c.add_argument("--plot", action="store_true", help="also write the figures next to the file")
        _add_common_eval(c, split=False, out_required=True)
        c.set_defaults(bn="recompute")  # statistics recomputed at every point, as in the paper
    c = csub.add_parser("export", help="weights at one t as a normal checkpoint")
    c.add_argument("--curve", dest="curve_file", required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--model-kwargs", default=None)
    c.add_argument("--t", type=float, required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--force", action="store_true")

    p = sub.add_parser(
        "connect",
        help="connect two checkpoints by Linear, Arc, OT and Weight Adjustment; worst accuracy along each",
        description="Build every connection of Anokhin & Yarotsky (2020) between two checkpoints of an MLP or a "
        "convolutional / residual network (WA: MLPs), evaluate each path at --points values of t and print the table of worst train/test accuracy "
        "along it, next to the endpoints and any trained curves (--curve). The report goes to --out (HDF5).",
    )
    p.add_argument("--ckpt", action="append", default=[], help="the two checkpoints A and B (repeat)")
    p.add_argument(
        "--methods",
        default="all",
        help="comma-separated: linear, arc, linear+wa, arc+wa, ot, ot+wa, or all (default all)",
    )
    p.add_argument("--points", type=int, default=21, help="values of t per path (OT: stage 1; WA: per step)")
    p.add_argument("--splits", default="train,test", help="comma-separated data splits (default train,test)")
    p.add_argument("--wa-split", default="train", help="data split the weight adjustment fits on (default train)")
    p.add_argument("--ridge", type=float, default=0.0, help="ridge term of the weight adjustment (default 0)")
    p.add_argument(
        "--bn",
        default="auto",
        choices=["auto", "running", "recompute", "recompute-exact"],
        help="BatchNorm statistics along the paths (default auto: recompute when the model has BatchNorm)",
    )
    p.add_argument("--bn-split", default="train", help="split used to recompute BatchNorm statistics (default train)")
    p.add_argument(
        "--curve",
        action="append",
        default=[],
        metavar="[LABEL=]FILE",
        help="a curve file from `landscape curve fit` between the same checkpoints, added as a row (repeat)",
    )
    p.add_argument(
        "--connection-model",
        action="append",
        default=[],
        metavar="[LABEL=]FILE",
        help="a Flow/Bijection model from `landscape connection-model`, added as a row (repeat)",
    )
    p.add_argument("--plot", action="store_true", help="also write the figures next to the file")
    _add_model_data(p)
    p.add_argument("--precision", default="fp32", choices=["fp64", "fp32", "tf32", "bf16"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled Python objects in checkpoints")
    p.add_argument("--out", required=True, help="write the report to this HDF5 file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --out file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser(
        "connection-model",
        help="learn a Flow (or Bijection) connection model from several trained checkpoints",
        description="Fit one normalizing flow (RealNVP or IAF) per layer to the neurons pooled over the "
        "checkpoints (Flow connection of Anokhin & Yarotsky 2020); with --bijection, then train it so that the "
        "paths between pairs of the checkpoints have low loss (Bijection). Use it with `landscape connect "
        "--connection-model FILE`.",
    )
    p.add_argument("--ckpt", action="append", default=[], help="trained checkpoints of one architecture (repeat)")
    p.add_argument("--kind", default="realnvp", choices=["realnvp", "iaf"])
    p.add_argument("--hidden", type=int, default=64, help="width of the flows' conditioner networks")
    p.add_argument("--epochs", type=int, default=200, help="maximum-likelihood epochs")
    p.add_argument("--bijection", action="store_true", help="then train the flows on the path loss (Bijection)")
    p.add_argument("--bijection-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--base",
        default="diagonal",
        choices=["diagonal", "gaussian"],
        help="the flows' base map: per-dimension standardisation (default) or a Gaussian fit with shrinkage "
        "(recommended for convnets and deep networks)",
    )
    p.add_argument("--holdout", type=int, default=0, help="last checkpoints held out for early stopping (default 0)")
    p.add_argument(
        "--align",
        action="store_true",
        help="align the checkpoints' neurons to a template first (saved with the model; `landscape connect` then "
        "matches B to A and ends with OT's swaps); recommended for convnets and deep networks",
    )
    _add_model_data(p)
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled Python objects in checkpoints")
    p.add_argument("--out", required=True, help="write the connection model here (.pt)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "wa-ensemble",
        help="ensembles of networks sharing one backbone by weight adjustment, against the ordinary ensemble",
        description="Move every checkpoint onto the backbone of the first one by weight adjustment (Anokhin & "
        "Yarotsky 2020) and report ensemble accuracy against the number of networks for every head size, with "
        "the parameters and compute saved.",
    )
    p.add_argument("--ckpt", action="append", default=[], help="checkpoints of independently trained networks (repeat)")
    p.add_argument("--head-layers", default="all", help="comma-separated head sizes, or all (default)")
    p.add_argument("--fit-split", default="train", help="split the adjusted layers are fitted on (default train)")
    p.add_argument("--split", default="test", help="split the ensembles are evaluated on (default test)")
    p.add_argument("--ridge", type=float, default=0.0, help="ridge term of the weight adjustment (default 0)")
    p.add_argument("--plot", action="store_true", help="also write the figure next to the file")
    _add_model_data(p)
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled Python objects in checkpoints")
    p.add_argument("--out", required=True, help="write the curve to this HDF5 file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "ensemble",
        help="fast ensembles from a checkpoint (fge, swa) or from scratch (sse), evaluated on a split",
        description="Run FGE or SWA from --ckpt, or snapshot ensembles (SSE) from --ckpt or the model's "
        "initialisation, save the members as checkpoints in --out, and print the ensemble's accuracy, NLL and "
        "ECE on --split (members evaluated through the engine), with the learning-rate schedule as a figure.",
    )
    p.add_argument("method", choices=["fge", "sse", "swa"])
    p.add_argument("--ckpt", default=None, help="starting checkpoint (required for fge and swa)")
    p.add_argument("--cycles", type=int, default=4, help="FGE/SSE cycles = members (default 4)")
    p.add_argument("--cycle-length", type=int, default=None, help="FGE/cyclical SWA: iterations per cycle")
    p.add_argument("--epochs", type=int, default=10, help="SSE/SWA epochs (default 10)")
    p.add_argument("--lr", type=float, default=0.05, help="alpha1 (FGE), alpha0 (SSE), SWA's rate")
    p.add_argument("--lr-min", type=float, default=None, help="alpha2 (FGE) or cyclical SWA's lowest rate")
    p.add_argument("--include-start", action="store_true", help="SWA: count the starting weights (the seed's variant)")
    p.add_argument(
        "--start-epochs", type=int, default=None, help="epochs that trained --ckpt (counted in the training budget)"
    )
    p.add_argument(
        "--compare-independent",
        action="store_true",
        help="also train an ensemble of independent networks at the same budget and compare (Table 1 of the seeds)",
    )
    p.add_argument(
        "--independent-epochs",
        type=int,
        default=None,
        help="epochs of each independent network (default --start-epochs)",
    )
    p.add_argument("--lr-independent", type=float, default=0.05, help="peak rate of the independent networks (cosine)")
    p.add_argument("--fit-batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", help="split the ensemble is evaluated on (default test)")
    _add_model_data(p)
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled Python objects in checkpoints")
    p.add_argument("--out", required=True, help="folder for the members' checkpoints and the schedule figure")
    p.add_argument("--force", action="store_true", help="overwrite files of an earlier run in --out")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --out: finished parts are reloaded"
    )
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser(
        "variational",
        help="train a variational network (variational dropout, variance layers) by the ELBO and save it",
        description="Make the model's Linear/Conv2d layers variational (--parameterization), initialise the means "
        "from --ckpt or the model's initialisation, maximise the ELBO on the train split and save a file that "
        "`landscape predict` reads.",
    )
    _add_model_data(p)
    p.add_argument("--ckpt", default=None, help="checkpoint whose weights initialise the means (default: fresh)")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled Python objects in checkpoints")
    p.add_argument(
        "--parameterization",
        default="weight",
        choices=["layer", "neuron", "weight", "additive", "variance"],
        help="q(w): layer/neuron/weight-wise alpha, additive sigma, or variance layers with zero mean",
    )
    p.add_argument("--alpha", type=float, default=0.01, help="initial alpha (fixed with --fixed-alpha)")
    p.add_argument("--fixed-alpha", action="store_true", help="keep alpha fixed (layer-wise: Gaussian dropout)")
    p.add_argument(
        "--plain-layers",
        default="",
        help="comma-separated module names kept deterministic, e.g. the output layer of a variance network",
    )
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    p.add_argument("--fit-batch-size", type=int, default=128)
    p.add_argument("--kl-weight", type=float, default=1.0, help="weight of the KL term (default 1, the ELBO)")
    p.add_argument("--warmup-epochs", type=int, default=0, help="epochs of linear KL warm-up")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the variational network (.pt)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--plot", action="store_true", help="also draw the SNR histograms next to --out")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser(
        "predict",
        help="evaluate a variational network three ways: deterministic, stochastic, ensemble",
        description="Accuracy, NLL and ECE of a file written by `landscape variational` under the prediction "
        "schemes of the seeds: the means (deterministic), one weight sample (stochastic), and the average of "
        "--samples weight samples evaluated as that many points at once (ensemble).",
    )
    p.add_argument("--ckpt", required=True, help="variational network written by `landscape variational`")
    p.add_argument("--data", required=True, help="digits | file.npz | ... (see `landscape eval --help`)")
    _add_data_options(p)
    p.add_argument("--split", default="test")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--normalize", action="store_true", help="standardise inputs as the network was trained")
    p.add_argument("--schemes", default="deterministic,stochastic,ensemble")
    p.add_argument("--samples", type=int, default=20, help="weight samples of the ensemble scheme (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bn", default="running", choices=["running", "recompute"])
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="write the table to this HDF5 file")
    p.add_argument("--plot", default=None, metavar="DIR", help="draw the SNR histograms into DIR")
    p.add_argument("--force", action="store_true", help="overwrite existing --out / figures")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser(
        "hessian",
        help="Hessian of the loss: extreme eigenvalues, eigenvalue maps of a surface, trace, spectral density",
        description="Curvature of the mean training loss at checkpoints (eig, trace, density) or at every cell of "
        "a line/plane file (map: lambda_max, lambda_min and |lambda_min/lambda_max| written into the same file, "
        "resumable and sharded over torchrun ranks). Hessian-vector products are exact; BatchNorm is in eval mode "
        "with each point's running statistics.",
    )
    hsub = p.add_subparsers(dest="hessian_action", metavar="ACTION", required=True)
    for action, text in (
        ("eig", "lambda_max and lambda_min (Lanczos), or the top-k eigenvalues (power iteration), per checkpoint"),
        ("map", "eigenvalue maps over every cell of a line or plane file"),
        ("trace", "Hutchinson's estimate of the trace, with its standard error"),
        ("density", "spectral density by stochastic Lanczos quadrature, with a figure"),
    ):
        c = hsub.add_parser(action, help=text, description=text)
        _add_model_data(c)
        c.add_argument("--split", default="train", help="the samples of the loss (default train)")
        c.add_argument(
            "--params",
            default=None,
            help="parameter or module names (comma-separated); default: every parameter with requires_grad",
        )
        c.add_argument(
            "--loss",
            default="loss",
            help="the loss whose Hessian is taken: a metric name (loss = cross-entropy, token_loss for causal LMs, mse)",
        )
        c.add_argument("--method", default="auto", choices=["auto", "forward-over-reverse", "double-backward"])
        c.add_argument("--precision", default="fp32", choices=["fp32", "fp64"])
        c.add_argument("--device", default=None)
        c.add_argument("--batch-size", type=int, default=None, help="samples per HVP pass")
        c.add_argument("--seed", type=int, default=0)
        c.add_argument("--trust-checkpoint", action="store_true", help="allow pickled Python objects in checkpoints")
        c.add_argument("--no-progress", action="store_true")
        if action == "map":
            c.add_argument("surface", help="a line or plane file (landscape surface --out)")
            c.add_argument("--points-per-pass", type=int, default=8, help="cells per batched Lanczos run")
            c.add_argument("--force", action="store_true", help="recompute maps made with other settings")
            c.add_argument("--plot", action="store_true", help="heatmaps of the maps next to the file")
        else:
            c.add_argument("--ckpt", action="append", required=True, help="checkpoint (repeat for several)")
        if action in ("eig", "map"):
            c.add_argument("--tol", type=float, default=1e-3, help="relative residual tolerance (default 1e-3)")
            c.add_argument("--max-iter", type=int, default=50, help="Lanczos steps at most (default 50)")
            c.add_argument(
                "--relative-to",
                default="spectrum",
                choices=["spectrum", "eigenvalue"],
                help="--tol relative to the spectral radius (default) or to each eigenvalue",
            )
        if action == "eig":
            c.add_argument("--top", type=int, default=None, help="the top-k eigenvalues by power iteration instead")
        if action == "trace":
            c.add_argument("--samples", type=int, default=100, help="Rademacher vectors (default 100)")
        if action == "density":
            c.add_argument("--probes", type=int, default=10)
            c.add_argument("--steps", type=int, default=30, help="Lanczos steps per probe")
            c.add_argument("--out", required=True, help="the figure (.png/.pdf); the nodes and weights go beside it")
            c.add_argument("--force", action="store_true")

    p = sub.add_parser("demo", help="the main job on bundled data (digits, CPU, under 2 minutes)")
    p.add_argument("--out", default="landscape-demo", help="output folder (default ./landscape-demo)")
    p.add_argument("--force", action="store_true", help="overwrite files of an earlier demo in that folder")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("models", help="list the built-in models")
    return parser


def _cmd_info(args) -> int:
    from . import io

    print(io.describe(args.file))
    return 0


def _data(args, split: str, *, max_samples: int | None | bool = True):
    """``--data`` of ``split`` with the data options of ``args``: a py: spec's loader or
    dataset as it is (every command streams it), the built-in specs in memory.
    ``max_samples=True`` takes ``--max-samples``."""
    from . import data as datalib

    return datalib.open_data(
        args.data,
        split,
        max_samples=args.max_samples if max_samples is True else max_samples,
        normalize=args.normalize,
        seq_len=getattr(args, "seq_len", None),
        kwargs=getattr(args, "data_kwargs", None),
    )


def _num_samples(data) -> int:
    from .batches import as_source

    return as_source(data).num_samples()


def _data_attrs(args) -> dict:
    """Data options beyond the spec, for result-file attributes."""
    out = {}
    if getattr(args, "data_kwargs", None):
        out["data-kwargs"] = args.data_kwargs
    if getattr(args, "seq_len", None) is not None:
        out["seq-len"] = args.seq_len
    return out


def _load_model_and_data(args):
    from .models import build_model

    model = build_model(args.model, args.model_kwargs)
    data = _data(args, args.split)
    bn_data = None
    if args.bn != "running":
        bn_data = _data(args, args.bn_split)
    return model, data, bn_data


def _check_out(args) -> None:
    if args.out and os.path.exists(args.out) and not (args.resume or args.force):
        raise UsageError(f"'{args.out}' already exists; pass --resume to continue it or --force to overwrite it")
    if args.resume and args.force:
        raise UsageError("--resume and --force contradict each other; pass one")


def _cmd_eval(args) -> int:
    from .evaluate import evaluate
    from .models import describe_model
    from .pointset import PointSet
    from .weights import load_checkpoint

    _check_out(args)
    model, data, bn_data = _load_model_and_data(args)
    weights = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
    points = PointSet.explicit(weights, names=[os.path.basename(p) for p in args.ckpt])
    attrs = {
        "model": describe_model(args.model, args.model_kwargs),
        "checkpoints": [{"path": w.source, "sha256": w.sha256} for w in weights],
        "split": args.split,
        "bn-split": args.bn_split if args.bn != "running" else None,
        **_data_attrs(args),
    }
    res = evaluate(
        model,
        points,
        data,
        [m.strip() for m in args.metrics.split(",") if m.strip()],
        bn=args.bn,
        bn_data=bn_data,
        precision=args.precision,
        device=args.device,
        batch_size=args.batch_size,
        points_per_pass=args.points_per_pass,
        max_memory=parse_bytes(args.max_memory) if args.max_memory else None,
        path=args.path,
        progress=not args.no_progress,
        out=args.out,
        resume=args.resume,
        force=args.force,
        attrs=attrs,
    )
    names = list(res.metrics)
    width = max(len("checkpoint"), *(len(p) for p in args.ckpt))
    print(f"{'checkpoint':<{width}}  " + "  ".join(f"{n:>10}" for n in names))
    for k, p in enumerate(args.ckpt):
        print(f"{p:<{width}}  " + "  ".join(f"{res.metrics[n][k]:>10.5g}" for n in names))
    print(
        f"path: {res.path}, {res.evaluated} point(s) in {res.seconds:.2f} s"
        + (f", written to {args.out}" if args.out else "")
    )
    return 0


def _trajectory_files(items: list[str]) -> list[str]:
    """Files given, or the checkpoint files of one folder in natural order (epoch_2 < epoch_10)."""
    import re

    if len(items) == 1 and os.path.isdir(items[0]):
        folder = items[0]
        names = [n for n in os.listdir(folder) if n.endswith((".pt", ".pth", ".safetensors"))]
        if not names:
            raise UsageError(f"--trajectory folder '{folder}' holds no .pt/.pth/.safetensors files")
        key = lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]  # noqa: E731
        return [os.path.join(folder, n) for n in sorted(names, key=key)]
    return items


def _cmd_surface(args) -> int:
    from . import directions, distributed
    from .models import build_model, describe_model
    from .surface import auto_range, compute_surface, parse_range
    from .weights import load_checkpoint

    _check_out(args)
    kind = args.surface_type
    n = len(args.ckpt)
    if kind is None:
        kind = "pca" if args.trajectory else {1: "plane", 2: "interpolate", 3: "three-point"}.get(n)
        if kind is None:
            raise UsageError(
                f"got {n} --ckpt; expected 1 (random plane), 2 (interpolation), 3 (three-point plane) or --trajectory"
            )
    need = {"interpolate": 2, "line": 1, "plane": 1, "three-point": 3}
    if kind in need and n != need[kind]:
        raise UsageError(f"--type {kind} needs {need[kind]} --ckpt, got {n}")
    if kind == "pca" and not args.trajectory:
        raise UsageError("--type pca needs --trajectory (checkpoint files or a folder)")
    device = distributed.init_from_env(args.device)
    try:
        model = build_model(args.model, args.model_kwargs)
        ckpts = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
        ignore = None if args.ignore == "none" else "biasbn"
        traj: list = []
        if kind == "interpolate":
            plane = directions.line_through(*ckpts)
        elif kind in ("line", "plane"):
            plane = directions.random_plane(
                ckpts[0],
                dims=1 if kind == "line" else 2,
                norm=args.norm,
                ignore=ignore,
                states=args.states,
                seed=args.seed,
            )
        elif kind == "three-point":
            plane = directions.three_point_plane(*ckpts)
        else:
            traj = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in _trajectory_files(args.trajectory)]
            plane = directions.pca_plane(traj, final=ckpts[0] if ckpts else None, ignore=ignore)
        default_x = {"interpolate": "-0.5:1.5:41"}.get(kind, "-1:1:51")
        if args.x is None and kind in ("three-point", "pca"):
            pts = plane.arrays.get("trajectory", plane.anchors)
            xs, ys = auto_range(pts[:, 0]), auto_range(pts[:, 1])
        else:
            xs = parse_range(args.x or default_x)
            ys = None if plane.dim == 1 else parse_range(args.y or args.x or default_x)
        if args.y is not None and plane.dim == 2:
            ys = parse_range(args.y)

        def load(split):
            return _data(args, split)

        splits = {s.strip(): load(s.strip()) for s in args.splits.split(",") if s.strip()}
        bn_data = None
        if args.bn != "running":
            bn_data = splits.get(args.bn_split) or load(args.bn_split)
        attrs = {
            "model": describe_model(args.model, args.model_kwargs),
            "checkpoints": [{"path": w.source, "sha256": w.sha256} for w in ckpts],
            "trajectory": [{"path": w.source, "sha256": w.sha256} for w in traj] or None,
            "bn-split": args.bn_split if args.bn != "running" else None,
            **_data_attrs(args),
        }
        res = compute_surface(
            model,
            plane,
            xs,
            ys,
            splits=splits,
            metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
            bn=args.bn,
            bn_data=bn_data,
            precision=args.precision,
            device=device,
            batch_size=args.batch_size,
            points_per_pass=args.points_per_pass,
            max_memory=parse_bytes(args.max_memory) if args.max_memory else None,
            path=args.path,
            out=args.out,
            resume=args.resume,
            force=args.force,
            attrs=attrs,
            progress=not args.no_progress,
        )
        rank, _ = distributed.rank_and_world()
        if rank == 0:
            _print_surface_summary(res)
            if args.plot:
                from .plot import plot_file

                written = plot_file(args.out, os.path.dirname(os.path.abspath(args.out)), force=args.force)
                print(f"figures: {', '.join(written)}")
    finally:
        distributed.shutdown()
    return 0


def _print_surface_summary(res) -> None:
    import numpy as np

    grid = " x ".join(str(d) for d in next(iter(res.metrics.values())).shape)
    print(
        f"{res.plane.kind} surface, grid {grid}, {res.evaluated} cell(s) computed in {res.seconds:.1f} s "
        f"(engine path {res.path}) -> {res.file}"
    )
    for name, v in res.metrics.items():
        if np.isfinite(v).any():
            print(f"  {name:12s} min {np.nanmin(v):.4g}  max {np.nanmax(v):.4g}")


def _cmd_plot(args) -> int:
    from .plot import plot_file

    out = args.out or os.path.dirname(os.path.abspath(args.file))
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    for path in plot_file(args.file, out, formats=formats, metrics=metrics, force=args.force):
        print(path)
    return 0


def _cmd_export(args) -> int:
    from .plot import export_vtp

    print(export_vtp(args.file, args.vtp, metric=args.metric, log=args.log, zmax=args.zmax, force=args.force))
    return 0


def _cmd_curve(args) -> int:
    import numpy as np

    from . import curves
    from .models import build_model, describe_model
    from .weights import load_checkpoint, save_weights

    action = args.curve_command
    if action is None:
        raise UsageError("landscape curve needs an action: fit, eval, plane or export")
    model = build_model(args.model, args.model_kwargs)
    if action == "export":
        curve, _ = curves.load_curve(args.curve_file, model)
        if not 0.0 <= args.t <= 1.0:
            raise UsageError(f"--t {args.t} is outside [0, 1]")
        save_weights(curve.weights_at(args.t).state_dict(), args.out, force=args.force)
        print(f"weights at t={args.t} -> {args.out}")
        return 0

    def load(split):
        return _data(args, split)

    if action == "fit":
        if len(args.ckpt) != 2:
            raise UsageError(f"curve fit needs two --ckpt (the endpoints), got {len(args.ckpt)}")
        _check_out(args)
        a, b = (load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt)
        init = "line"
        if args.init:
            if args.bends != 1:
                raise UsageError("--init gives one bend; use it with --bends 1")
            init = [load_checkpoint(args.init, model, trust=args.trust_checkpoint)]
        curve = curves.Curve(a, b, n_bends=args.bends, kind=args.curve_kind, init=init)
        res = curves.fit_curve(
            model,
            curve,
            load("train"),
            epochs=args.epochs,
            batch_size=args.fit_batch_size,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.wd,
            schedule=args.schedule,
            t_per_batch=args.t_per_batch,
            fair=args.fair,
            seed=args.seed,
            device=args.device,
            checkpoint=args.out,
            resume=args.resume,
            force=args.force,
            progress=not args.no_progress,
        )
        last = res.history[-1] if res.history else {}
        print(
            f"{args.curve_kind} curve, {args.bends} bend(s): {len(res.history)} epochs "
            f"(resumed from {res.resumed_from}) in {res.seconds:.1f} s, last epoch loss {last.get('loss', float('nan')):.4f} -> {args.out}"
        )
        return 0

    _check_out(args)
    curve, _ = curves.load_curve(args.curve_file, model)
    splits = {s.strip(): load(s.strip()) for s in args.splits.split(",") if s.strip()}
    bn_data = splits.get(args.bn_split) or load(args.bn_split) if args.bn != "running" else None
    common = dict(
        bn=args.bn,
        bn_data=bn_data,
        precision=args.precision,
        device=args.device,
        batch_size=args.batch_size,
        max_memory=parse_bytes(args.max_memory) if args.max_memory else None,
        out=args.out,
        resume=args.resume,
        force=args.force,
        progress=not args.no_progress,
        attrs={"model": describe_model(args.model, args.model_kwargs), "curve-file": os.path.abspath(args.curve_file)},
    )
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if action == "eval":
        prof = curves.evaluate_curve(model, curve, splits, points=args.points, metrics=metrics, **common)
        for row in ("curve", "line"):
            for split, h in prof.barriers.get(row, {}).items():
                print(f"{row:5s} {split:5s} loss barrier {h:.4f} nats at t={prof.barriers[row + '-t'][split]:.3f}")
        if "test_acc" in prof.metrics:
            err = 100 * (1 - prof.metrics["test_acc"])
            print(
                f"test error: curve max {np.nanmax(err[0]):.2f}%, line max {np.nanmax(err[1]):.2f}%, "
                f"endpoints {err[0, 0]:.2f}% / {err[0, -1]:.2f}%"
            )
        print(f"-> {args.out}")
    else:
        from .surface import auto_range, compute_surface, parse_range

        plane = curves.curve_plane(curve)
        pts = np.concatenate([plane.anchors, plane.arrays["trajectory"]])
        xs = parse_range(args.x) if args.x else auto_range(pts[:, 0])
        ys = parse_range(args.y) if args.y else auto_range(pts[:, 1])
        res = compute_surface(model, plane, xs, ys, splits=splits, metrics=metrics, **common)
        _print_surface_summary(res)
    return _plot_if_asked(args)


def _curve_args(items: list[str]) -> list[tuple[str | None, str]]:
    """``[LABEL=]FILE`` values of ``--curve``."""
    out = []
    for item in items:
        label, sep, path = item.rpartition("=")
        if not sep or os.path.exists(item):
            label, path = "", item
        out.append((label or None, path))
    return out


def _cmd_connect(args) -> int:
    import torch

    from . import curves as curvelib
    from .connect import METHODS, compare_connections
    from .models import build_model, describe_model
    from .weights import load_checkpoint

    if len(args.ckpt) != 2:
        raise UsageError(f"connect needs two --ckpt (A and B), got {len(args.ckpt)}")
    _check_out(args)
    names = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    methods = list(METHODS) if names == ["all"] else names
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"--methods {args.methods!r}: unknown {unknown}; expected some of {', '.join(METHODS)} or all")
    if args.points < 2:
        raise UsageError(f"--points should be at least 2, got {args.points}")
    model = build_model(args.model, args.model_kwargs)
    A, B = (load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt)

    def load(split):
        return _data(args, split)

    splits = {s.strip(): load(s.strip()) for s in args.splits.split(",") if s.strip()}
    if not splits:
        raise UsageError("--splits names no split")
    wa = splits.get(args.wa_split) or load(args.wa_split)
    bn = args.bn
    if bn == "auto":
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        bn = "recompute" if has_bn else "running"
    bn_data = (splits.get(args.bn_split) or load(args.bn_split)) if bn != "running" else None
    curves = {}
    for label, path in _curve_args(args.curve):
        curve, _ = curvelib.load_curve(path, model)
        label = label or f"{'Bezier' if curve.kind == 'bezier' else 'Polychain'} ({curve.n_bends + 2})"
        if label in curves:
            raise UsageError(f"two --curve rows are labelled {label!r}; name them LABEL=FILE")
        curves[label] = curve
    from .connect.flows import load_connection_model

    flows = {}
    for label, path in _curve_args(args.connection_model):
        nu, groups, meta = load_connection_model(path)
        label = label or f"{'Bijection' if meta.get('bijection') else 'Flow'} ({meta.get('kind', 'flow')})"
        if label in flows:
            raise UsageError(f"two --connection-model rows are labelled {label!r}; name them LABEL=FILE")
        flows[label] = (nu, groups, meta.get("template"))  # a template: flows of an aligned pool
    rep = compare_connections(
        model,
        A,
        B,
        splits,
        methods=methods,
        connection_models=flows,
        points=args.points,
        wa_data=wa,
        curves=curves,
        ridge=args.ridge,
        bn=bn,
        bn_data=bn_data,
        device=args.device,
        precision=args.precision,
        out=args.out,
        force=args.force,
        resume=args.resume,
        progress=not args.no_progress,
        attrs={
            "model": describe_model(args.model, args.model_kwargs),
            "checkpoints": [{"path": w.source, "sha256": w.sha256} for w in (A, B)],
            "data": args.data,
            "curve-files": [os.path.abspath(p) for _, p in _curve_args(args.curve)],
        },
    )
    print(rep.markdown())
    print(f"{args.points} points per path -> {args.out}")
    return _plot_if_asked(args)


def _several_ckpts_new_out(args, command: str, need: str) -> None:
    """At least two ``--ckpt`` and an ``--out`` that is new unless ``--force``."""
    if len(args.ckpt) < 2:
        raise UsageError(f"{command} needs at least {need}, got {len(args.ckpt)}")
    if os.path.exists(args.out) and not args.force:
        raise UsageError(f"'{args.out}' already exists; pass --force to overwrite it")


def _cmd_connection_model(args) -> int:
    from .connect.flows import align_pool, fit_bijection, fit_flows_for, flow_groups, save_connection_model
    from .models import build_model, describe_model
    from .weights import load_checkpoint

    _several_ckpts_new_out(args, "connection-model", "two --ckpt (more is better)")
    if not 0 <= args.holdout <= len(args.ckpt) - 2:
        raise UsageError(
            f"--holdout {args.holdout}: expected 0..{max(0, len(args.ckpt) - 2)} (at least two checkpoints stay for fitting)"
        )
    model = build_model(args.model, args.model_kwargs)
    weights = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
    loaded, template = weights, None
    if args.align:
        weights, template = align_pool(model, weights)
    groups = flow_groups(model)
    flows = fit_flows_for(
        model,
        weights,
        groups,
        kind=args.kind,
        hidden=args.hidden,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        base=args.base,
        holdout=args.holdout,
        progress=not args.no_progress,
    )
    history = []
    if args.bijection:
        data = _data(args, "train")
        history = fit_bijection(
            model,
            weights,
            groups,
            flows,
            data,
            epochs=args.bijection_epochs,
            lr=args.lr,
            seed=args.seed,
            progress=not args.no_progress,
        )
    meta = {
        "kind": args.kind,
        "bijection": bool(args.bijection),
        "model": describe_model(args.model, args.model_kwargs),
        "checkpoints": [{"path": w.source, "sha256": w.sha256} for w in loaded],
        "bijection_history": [float(v) for v in history],
        "base": args.base,
        "aligned": bool(args.align),
    }
    save_connection_model(args.out, flows, groups, kind=args.kind, meta=meta, template=template, force=args.force)
    what = "Bijection" if args.bijection else "Flow"
    dims = ", ".join(f"{g.name}: {g.dim(weights[0])}" for g in groups)
    print(
        f"{what} connection model ({args.kind}, {len(groups)} flows; neuron dims {dims}) from {len(weights)} networks"
    )
    if history:
        print(f"path loss per bijection epoch: {', '.join(f'{v:.4f}' for v in history)}")
    print(f"-> {args.out}")
    return 0


def _cmd_ensemble(args) -> int:
    from .demo import small_model_threads
    from .models import build_model
    from .weights import load_checkpoint

    model = build_model(args.model, args.model_kwargs)
    if args.method in ("fge", "swa") and not args.ckpt:
        raise UsageError(f"ensemble {args.method} starts from a trained checkpoint: pass --ckpt")
    start = load_checkpoint(args.ckpt, model, trust=args.trust_checkpoint) if args.ckpt else None
    if args.method == "fge" and (args.cycle_length is None or args.lr_min is None):
        raise UsageError("ensemble fge needs --cycle-length (even) and --lr-min (alpha2 < --lr)")
    if args.start_epochs is not None and args.start_epochs < 0:
        raise UsageError(f"--start-epochs {args.start_epochs}: expected the epochs that trained --ckpt (>= 0)")
    if args.compare_independent and start is not None and not args.start_epochs:
        raise UsageError(
            "--compare-independent needs --start-epochs: the epochs that trained --ckpt count in the budget"
        )
    if args.resume and args.force:
        raise UsageError("--resume and --force contradict each other; pass one")
    if os.path.isdir(args.out) and os.listdir(args.out) and not (args.force or args.resume):
        raise UsageError(f"'{args.out}' is not empty; pass --resume to continue its run or --force to overwrite it")

    def load(split):
        return _data(args, split)

    train, test = load("train"), load(args.split)
    with small_model_threads(model):
        return _run_ensemble(args, model, start, train, test)


def _ensemble_settings(args, start) -> dict:
    """What a resumed ``landscape ensemble`` must share with the run it continues."""
    keys = ("method", "cycles", "cycle_length", "epochs", "lr", "lr_min", "include_start", "fit_batch_size", "seed")
    keys += ("model", "model_kwargs", "data", "max_samples", "normalize", "start_epochs")
    out = {k: getattr(args, k) for k in keys}
    out["ckpt-sha256"] = start.sha256 if start is not None else None
    return out


def _resume_record(path: str, settings: dict, resume: bool):
    """The record of a finished part of an earlier run in ``--out``, or None to compute it."""
    import torch

    if not (resume and os.path.exists(path)):
        return None
    record = torch.load(path, map_location="cpu", weights_only=True)
    old = record.get("settings", {})
    diff = sorted(k for k in settings.keys() | old.keys() if settings.get(k) != old.get(k))
    if diff:
        k = diff[0]
        raise UsageError(f"cannot resume '{path}': its {k} is {old.get(k)!r} but this run has {settings.get(k)!r}")
    return record


def _method_run(args, model, start, train, e0):
    """Run (or, with --resume, reload) the FGE/SSE/SWA part; returns the result, the members
    with their file names and budgets, the learning rates and the epochs spent."""
    import math

    import torch

    from . import ensembles
    from .weights import load_checkpoint, save_weights

    settings = _ensemble_settings(args, start)
    record_path = os.path.join(args.out, f"{args.method}.resume")
    record = _resume_record(record_path, settings, args.resume)
    common = dict(batch_size=args.fit_batch_size, seed=args.seed)
    n_train = _num_samples(train)
    per_epoch = (n_train // args.fit_batch_size) if args.method == "fge" else math.ceil(n_train / args.fit_batch_size)
    if record is not None:  # every member was saved before the record
        print(f"resuming: {args.method} members from {record_path}")
        members = [load_checkpoint(os.path.join(args.out, n), model) for n in record["names"]]
        lr, extra = record["lr"].numpy(), record["extra"]
        if args.method == "fge":
            run = ensembles.FGEResult(members, extra["iterations"], extra["distance"], lr, extra["loss"].numpy())
        elif args.method == "sse":
            run = ensembles.Snapshots(members, extra["iterations"], float(args.epochs), lr)
        else:
            sgd = load_checkpoint(os.path.join(args.out, "sgd.pt"), model)
            run = ensembles.SWAResult(members[0], sgd, extra["collected"], lr=lr)
        return run, members, record["names"], record["budgets"], record["spent"], lr
    if args.method == "fge":
        run = ensembles.fge(
            model,
            start,
            train,
            cycles=args.cycles,
            cycle_length=args.cycle_length,
            alpha1=args.lr,
            alpha2=args.lr_min,
            progress=not args.no_progress,
            **common,
        )
        members, names = run.snapshots, [f"fge-iter{i}.pt" for i in run.iterations]
        budgets, spent = [e0 + i / per_epoch for i in run.iterations], e0 + len(run.lr) / per_epoch
        extra = {"iterations": run.iterations, "distance": run.distance, "loss": torch.as_tensor(run.loss)}
    elif args.method == "sse":
        run = ensembles.sse(
            model,
            train,
            epochs=args.epochs,
            cycles=args.cycles,
            lr=args.lr,
            start=start,
            progress=not args.no_progress,
            **common,
        )
        members, names = run.members, [f"sse-iter{i}.pt" for i in run.iterations]
        budgets, spent = [e0 + i / per_epoch for i in run.iterations], e0 + args.epochs
        extra = {"iterations": run.iterations}
    else:
        run = ensembles.swa(
            model,
            start,
            train,
            epochs=args.epochs,
            lr=args.lr,
            lr_min=args.lr_min,
            cycle_length=args.cycle_length,
            include_start=args.include_start,
            progress=not args.no_progress,
            **common,
        )
        members, names = [run.weights], ["swa.pt"]
        budgets, spent = [e0 + args.epochs], e0 + args.epochs
        extra = {"collected": run.collected}
        save_weights(run.sgd.state_dict(), os.path.join(args.out, "sgd.pt"), force=True)
    for w, name in zip(members, names):
        save_weights(w.state_dict(), os.path.join(args.out, name), force=True)
    record = {"settings": settings, "names": names, "budgets": budgets, "spent": spent, "extra": extra}
    torch.save({**record, "lr": torch.as_tensor(run.lr)}, record_path)
    return run, members, names, budgets, spent, run.lr


def _independent_run(args, model, train, each: int, n: int):
    """The independent networks, trained one at a time and saved as ``ind-<j>.pt`` (reloaded
    with --resume)."""
    import torch

    from . import ensembles
    from .weights import load_checkpoint, save_weights

    settings = {"each": each, "lr": args.lr_independent, "batch": args.fit_batch_size, "seed": args.seed}
    settings.update(model=args.model, model_kwargs=args.model_kwargs, data=args.data, max_samples=args.max_samples)
    record_path = os.path.join(args.out, "ind.resume")
    if _resume_record(record_path, settings, args.resume) is None:
        torch.save({"settings": settings}, record_path)
    members, budgets = [], []
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="independent networks", unit="net")
    for j in range(n):
        if bar is not None:
            bar.update(0 if j == 0 else 1)
        path = os.path.join(args.out, f"ind-{j}.pt")
        if args.resume and os.path.exists(path):
            members.append(load_checkpoint(path, model))
        else:
            r = ensembles.run_at_budget(
                model,
                train,
                "ind",
                budget_epochs=each,
                n=1,
                first=j,
                seed=args.seed,
                lr=args.lr_independent,
                batch_size=args.fit_batch_size,
            )
            save_weights(r.members[0].state_dict(), path, force=True)
            members.append(r.members[0])
        budgets.append((j + 1) * each)
    if bar is not None:
        bar.update(1)
        bar.close()
    return ensembles.Run(f"Ind ({n} x {each} epochs)", members, budgets)


def _run_ensemble(args, model, start, train, test) -> int:
    import numpy as np
    import torch

    from . import ensembles
    from .models import describe_model

    e0 = float(args.start_epochs or 0) if start is not None else 0.0
    os.makedirs(args.out, exist_ok=True)
    run, members, names, budgets, spent, lr = _method_run(args, model, start, train, e0)
    runs = [ensembles.Run(args.method.upper(), members, budgets)]
    if args.compare_independent:
        each = args.independent_epochs or (round(e0) if start is not None else args.epochs)
        n = max(1, round(spent / each))
        print(f"training {n} independent network(s) of {each} epochs ({n * each} epochs against {spent:g})")
        runs.append(_independent_run(args, model, train, each, n))
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    bn = "recompute" if has_bn else "running"
    comparison = ensembles.compare_ensembles(model, runs, test, bn=bn, bn_data=train if has_bn else None)
    comparison.attrs.update(
        model=describe_model(args.model, args.model_kwargs),
        data=args.data,
        split=args.split,
        checkpoints=[{"path": start.source, "sha256": start.sha256}] if start is not None else [],
        **{"start-epochs": e0},
    )
    written = [comparison.save(os.path.join(args.out, "ensembles.h5"), force=True)]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(lr) + 1), lr)
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{args.method.upper()} schedule")
    written.append(os.path.join(args.out, f"{args.method}-schedule.png"))
    fig.savefig(written[-1], dpi=120)
    written.append(os.path.join(args.out, "ensembles-budget.png"))
    ensembles.plot_ensembles(comparison).savefig(written[-1], dpi=120)
    if args.method == "fge":
        written.append(os.path.join(args.out, "fge-snapshots.png"))
        err = 100 * (1 - comparison.per_member["member_acc"][0])
        ensembles.plot_fge(run, err).savefig(written[-1], dpi=120)
    if args.method == "swa":
        from .plot import plot_file

        width = os.path.join(args.out, "swa-width.h5")
        ensembles.swa_width(
            model, run, {"train": train, args.split: test}, out=width, force=True, progress=not args.no_progress
        )
        written += [width] + plot_file(width, args.out, formats=("png",), force=True)
    print(f"{args.method}: {len(members)} member(s) -> {args.out}/")
    print(f"{args.split} split; budget in epochs (--start-epochs counts the training of --ckpt)")
    print(comparison.markdown())
    print(
        "members' accuracy (%): "
        + ", ".join(f"{100 * a:.2f}" for a in comparison.per_member["member_acc"][0] if np.isfinite(a))
    )
    print(f"written: {', '.join(os.path.basename(p) for p in written)}")
    return 0


def _cmd_variational(args) -> int:
    from torch import nn

    from . import variational as vi
    from .demo import small_model_threads
    from .models import build_model
    from .weights import load_checkpoint

    if os.path.exists(args.out) and not args.force:
        raise UsageError(f"'{args.out}' already exists; pass --force to overwrite it")
    for name, v in (("--epochs", args.epochs), ("--fit-batch-size", args.fit_batch_size)):
        if v < 1:
            raise UsageError(f"{name} {v}: expected a positive integer")
    model = build_model(args.model, args.model_kwargs)
    if args.ckpt:
        model.load_state_dict(load_checkpoint(args.ckpt, model, trust=args.trust_checkpoint).state_dict())
    plain = [n.strip() for n in args.plain_layers.split(",") if n.strip()]
    layers = dict(model.named_modules())
    bad = [n for n in plain if not isinstance(layers.get(n), (nn.Linear, nn.Conv2d))]
    if bad:
        choices = [n for n, m in layers.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
        raise UsageError(f"--plain-layers {','.join(bad)}: not Linear/Conv2d modules; this model has {choices}")
    vnet = vi.convert(
        model, args.parameterization, alpha=args.alpha, train_alpha=not args.fixed_alpha, layers=dict.fromkeys(plain)
    )
    train = _data(args, "train")
    with small_model_threads(vnet):
        hist = vi.fit_elbo(
            vnet,
            train,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.fit_batch_size,
            kl_weight=args.kl_weight,
            warmup_epochs=args.warmup_epochs,
            seed=args.seed,
            progress=not args.no_progress,
        )
    spec = {
        "model": args.model,
        "model_kwargs": args.model_kwargs,
        "data": args.data,
        "normalize": bool(args.normalize),
        "alpha": args.alpha,
        "epochs": args.epochs,
        "lr": args.lr,
        "kl_weight": args.kl_weight,
        "seed": args.seed,
        "init": os.path.abspath(args.ckpt) if args.ckpt else None,
    }
    vi.save_variational(vnet, args.out, spec=spec, force=args.force)
    print(
        f"{args.parameterization} network, {args.epochs} epochs in {hist['seconds']:.1f} s: train NLL "
        f"{hist['nll'][-1]:.4f}, KL/N {hist['kl'][-1] / _num_samples(train):.4f}, train acc (one sample per batch) "
        f"{100 * hist['acc'][-1]:.2f}% -> {args.out}"
    )
    if args.plot:
        fig_path = os.path.splitext(args.out)[0] + "-snr.png"
        vi.plot_snr(vnet).savefig(fig_path, dpi=120)
        print(f"figure: {fig_path}")
    return 0


def _cmd_predict(args) -> int:
    import numpy as np

    from . import variational as vi
    from .io import create_result
    from .models import build_model

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    bad = [s for s in schemes if s not in vi.SCHEMES]
    if bad or not schemes:
        raise UsageError(f"--schemes {args.schemes!r}: expected a comma-separated subset of {', '.join(vi.SCHEMES)}")
    if args.samples < 1:
        raise UsageError(f"--samples {args.samples}: expected a positive integer")
    if args.out and os.path.exists(args.out) and not args.force:
        raise UsageError(f"'{args.out}' already exists; pass --force to overwrite it")
    vnet = vi.load_variational(args.ckpt, lambda spec: build_model(spec["model"], spec.get("model_kwargs")))
    data = _data(args, args.split)
    bn_data = _data(args, "train", max_samples=None) if args.bn == "recompute" else None
    res = vi.predict(
        vnet,
        data,
        schemes=schemes,
        samples=args.samples,
        seed=args.seed,
        bn=args.bn,
        bn_data=bn_data,
        device=args.device,
        progress=not args.no_progress,
    )
    print(f"{args.split} split, {_num_samples(data)} samples; ensemble of {args.samples} weight samples")
    print("| Scheme | acc (%) | NLL | ECE |\n|---|---:|---:|---:|")
    for s in schemes:
        print(f"| {s} | {100 * res[s].acc:.2f} | {res[s].nll:.4f} | {res[s].ece:.4f} |")
    if args.out:
        attrs = {"checkpoint": os.path.abspath(args.ckpt), "data": args.data, "split": args.split}
        attrs.update(schemes=schemes, samples=args.samples, seed=args.seed, bn=args.bn)
        with create_result(
            args.out,
            kind="predict",
            shape=(len(schemes),),
            metrics=["acc", "nll", "ece"],
            attrs=attrs,
            force=args.force,
        ) as rf:
            rf.write_cells(
                list(range(len(schemes))),
                {k: np.array([getattr(res[s], k) for s in schemes]) for k in ("acc", "nll", "ece")},
            )
        print(f"-> {args.out}")
    if args.plot:
        os.makedirs(args.plot, exist_ok=True)
        fig_path = os.path.join(args.plot, os.path.splitext(os.path.basename(args.ckpt))[0] + "-snr.png")
        if os.path.exists(fig_path) and not args.force:
            raise UsageError(f"'{fig_path}' already exists; pass --force to overwrite it")
        vi.plot_snr(vnet).savefig(fig_path, dpi=120)
        print(f"figure: {fig_path}")
    return 0


def _hessian_params(args, model):
    """``--params``: parameter names, or module names standing for their parameters."""
    if args.params is None:
        return None
    from .hessian import layer_selections

    groups = layer_selections(model)
    names = [n for n, _ in model.named_parameters()]
    out = []
    for item in (t.strip() for t in args.params.split(",")):
        if not item:
            continue
        if item in names:
            out.append(item)
        elif item in groups:
            out += groups[item]
        else:
            raise UsageError(
                f"--params {item!r} is neither a parameter nor a module with parameters; modules: {list(groups)}"
            )
    if not out:
        raise UsageError("--params selects nothing")
    return list(dict.fromkeys(out))


class _CountedOperator:
    """An operator that advances a progress bar by the Hessian-vector products it computes."""

    def __init__(self, op, bar):
        self.op, self.bar = op, bar
        self.n, self.device, self.dtype, self.selection = op.n, op.device, op.dtype, op.selection

    def __call__(self, v):
        out = self.op(v)
        self.bar.update(1 if v.dim() == 1 else v.shape[0])
        return out


def _cmd_hessian(args) -> int:
    import numpy as np

    from . import distributed
    from . import hessian as H
    from .demo import small_model_threads
    from .models import build_model
    from .weights import load_checkpoint

    for name in ("max_iter", "top", "samples", "probes", "steps", "points_per_pass"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} {v}: expected a positive integer")
    model = build_model(args.model, args.model_kwargs)
    params = _hessian_params(args, model)
    data = _data(args, args.split)
    spec = {"data": args.data, "split": args.split, "max-samples": args.max_samples, "normalize": args.normalize}
    opts = dict(params=params, batch_size=args.batch_size, dtype=args.precision, method=args.method, loss=args.loss)
    if args.hessian_action == "map":
        device = distributed.init_from_env(args.device)
        try:
            res = H.eigen_map(
                model,
                args.surface,
                data,
                tol=args.tol,
                max_iter=args.max_iter,
                relative_to=args.relative_to,
                seed=args.seed,
                points_per_pass=args.points_per_pass,
                device=device,
                data_spec=spec,
                force=args.force,
                progress=not args.no_progress,
                **opts,
            )
            rank, _ = distributed.rank_and_world()
            if rank == 0:
                lmax, lmin, ratio = res["lambda_max"], res["lambda_min"], res["eig_ratio"]
                print(
                    f"{args.surface}: {res.computed} cell(s) computed in {res.seconds:.1f} s; lambda_max "
                    f"{np.nanmin(lmax):.4g}..{np.nanmax(lmax):.4g}, lambda_min {np.nanmin(lmin):.4g}.."
                    f"{np.nanmax(lmin):.4g}, |lambda_min/lambda_max| {np.nanmin(ratio):.3g}..{np.nanmax(ratio):.3g}"
                )
                if args.plot:
                    from .plot import plot_hessian_maps

                    fig_path = os.path.splitext(args.surface)[0] + "-hessian.png"
                    plot_hessian_maps(args.surface).savefig(fig_path, dpi=120)
                    print(f"figure: {fig_path}")
        finally:
            distributed.shutdown()
        return 0
    weights = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]
    if args.hessian_action == "density" and len(weights) != 1:
        raise UsageError(f"hessian density takes one --ckpt, got {len(weights)}")
    if args.hessian_action == "density" and os.path.exists(args.out) and not args.force:
        raise UsageError(f"'{args.out}' already exists; pass --force to overwrite it")
    with small_model_threads(model):
        for path, w in zip(args.ckpt, weights):
            op = H.HVP(model, w, data, device=args.device, **opts)
            bar = None
            if not args.no_progress:
                from tqdm.auto import tqdm

                bar = tqdm(desc=f"HVPs {os.path.basename(path)}", unit="HVP", leave=False)
                op = _CountedOperator(op, bar)
            if args.hessian_action == "eig" and args.top:
                r = H.power_iteration(op, k=args.top, tol=args.tol, max_iter=max(args.max_iter, 100), seed=args.seed)
                vals = ", ".join(f"{v:.6g}" for v in r.eigenvalues)
                line = f"{path}: top-{args.top} eigenvalues {vals} (residuals {np.max(r.residuals):.2g}, {r.hvps} HVPs)"
            elif args.hessian_action == "eig":
                r = H.lanczos(op, tol=args.tol, max_iter=args.max_iter, relative_to=args.relative_to, seed=args.seed)
                line = (
                    f"{path}: lambda_max {r.lambda_max:.6g}, lambda_min {r.lambda_min:.6g}, |lambda_min/lambda_max| "
                    f"{r.ratio:.4g} (residuals {r.residuals[0]:.2g}, {r.residuals[1]:.2g}; {r.hvps} HVPs"
                    f"{'' if r.converged else '; NOT converged: raise --max-iter'})"
                )
            elif args.hessian_action == "trace":
                t = H.hutchinson(op, samples=args.samples, seed=args.seed)
                line = f"{path}: trace {t.estimate:.6g} ± {t.stderr:.2g} (standard error, {len(t.samples)} Rademacher vectors)"
            else:
                d = H.slq(op, probes=args.probes, steps=args.steps, seed=args.seed)
                fig = H.plot_density(d)
                fig.savefig(args.out, dpi=120)
                npz = os.path.splitext(args.out)[0] + ".npz"
                np.savez(npz, nodes=d.nodes, weights=d.weights, n=d.n, selection=json.dumps(op.selection))
                line = (
                    f"{path}: density from {d.probes} probes x {args.steps} steps ({d.hvps} HVPs); trace estimate "
                    f"{d.moment(1) * d.n:.6g}; -> {args.out}, {npz}"
                )
            if bar is not None:
                bar.close()
            sel = op.selection
            print(f"{line} [{args.loss}; {sel['count']} parameter tensors, {sel['numel']} values, by {sel['rule']}]")
    return 0


def _cmd_wa_ensemble(args) -> int:
    from .connect.adjust import _Stack
    from .connect.ensemble import wa_ensemble_curve
    from .models import build_model, describe_model
    from .weights import load_checkpoint

    _several_ckpts_new_out(args, "wa-ensemble", "two --ckpt")
    model = build_model(args.model, args.model_kwargs)
    try:
        n_layers = _Stack(model).n
    except ValueError as e:
        raise UsageError(f"wa-ensemble works on MLPs and sequential convnets: {str(e).splitlines()[0]}") from None
    if args.head_layers.strip().lower() == "all":
        heads = list(range(1, n_layers + 1))
    else:
        try:
            heads = [int(v) for v in args.head_layers.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--head-layers {args.head_layers!r}: expected integers or all") from None
        bad = [n for n in heads if not 1 <= n <= n_layers]
        if bad or not heads:
            raise UsageError(f"--head-layers {bad or heads}: expected values in 1..{n_layers} for this model")
    members = [load_checkpoint(p, model, trust=args.trust_checkpoint) for p in args.ckpt]

    def load(split):
        return _data(args, split)

    curve = wa_ensemble_curve(
        model,
        members,
        load(args.fit_split),
        load(args.split),
        head_layers=heads,
        ridge=args.ridge,
        progress=not args.no_progress,
    )
    curve.attrs.update(
        model=describe_model(args.model, args.model_kwargs),
        checkpoints=[{"path": w.source, "sha256": w.sha256} for w in members],
        data=args.data,
        split=args.split,
        fit_split=args.fit_split,
    )
    curve.save(args.out, force=args.force)
    print(f"{args.split} accuracy (%) of ensembles of the first m networks; WA(n): n layers in each head")
    print(curve.markdown())
    print(f"-> {args.out}")
    return _plot_if_asked(args)


def _plot_if_asked(args) -> int:
    """``--plot``: the figures of ``args.out`` next to it."""
    if args.plot:
        from .plot import plot_file

        written = plot_file(args.out, os.path.dirname(os.path.abspath(args.out)), force=args.force)
        print(f"figures: {', '.join(written)}")
    return 0


def _cmd_models(args) -> int:
    from .models import list_models

    print("\n".join(list_models()))
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, force=args.force, progress=not args.no_progress)
    return 0


_COMMANDS = {
    "info": _cmd_info,
    "eval": _cmd_eval,
    "surface": _cmd_surface,
    "plot": _cmd_plot,
    "export": _cmd_export,
    "curve": _cmd_curve,
    "connect": _cmd_connect,
    "wa-ensemble": _cmd_wa_ensemble,
    "ensemble": _cmd_ensemble,
    "variational": _cmd_variational,
    "predict": _cmd_predict,
    "hessian": _cmd_hessian,
    "connection-model": _cmd_connection_model,
    "demo": _cmd_demo,
    "models": _cmd_models,
}


def _user_errors() -> tuple[type[BaseException], ...]:
    from .batches import BatchError
    from .data import DataError
    from .evaluate import MemoryBudgetError
    from .io import ResultExistsError, ResultFileError
    from .metrics import MetricError
    from .models import ModelSpecError
    from .weights import CheckpointError

    return (
        UsageError,
        DataError,
        BatchError,
        MetricError,
        MemoryBudgetError,
        ResultExistsError,
        ResultFileError,
        ModelSpecError,
        CheckpointError,
        FileNotFoundError,
        FileExistsError,
        ValueError,
    )


def _new_out_file(args) -> str | None:
    """``--out`` when this run would create it (it does not exist yet)."""
    out = getattr(args, "out", None)
    return out if isinstance(out, str) and out and not os.path.exists(out) else None


def _remove_unfinished(path: str | None) -> None:
    """Remove a result file this run created when an error stopped it before any cell was
    done (bad data, metrics or models fail on the first batch), so that bad input leaves
    nothing behind; a file with finished cells stays for ``--resume``."""
    if path is None or not os.path.isfile(path):
        return
    from .io import open_result

    try:
        with open_result(path) as f:
            started = bool(f.done.any())
    except Exception:  # noqa: BLE001 - not a result file: not ours to judge
        return
    if not started:
        try:
            os.remove(path)
        except OSError:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``landscape`` command; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # "--x -1:1:51": a value that starts with "-" would read as an option to argparse
    for i in range(len(argv) - 1):
        if argv[i] in ("--x", "--y") and argv[i + 1].startswith("-"):
            argv[i : i + 2] = [f"{argv[i]}={argv[i + 1]}", ""]
    args = parser.parse_args([a for a in argv if a != ""])
    if args.command is None:
        parser.print_help()
        return 2
    new_out = _new_out_file(args)
    try:
        return _COMMANDS[args.command](args)
    except BrokenPipeError:  # e.g. `landscape info f.h5 | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print("landscape: interrupted; finished chunks are saved, rerun with --resume to continue", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI turns every error into one line
        _remove_unfinished(new_out)
        if args.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not isinstance(e, _user_errors()):
            msg = f"{type(e).__name__}: {msg} (run with --debug for the traceback)"
        print(f"landscape: error: {msg}", file=sys.stderr)
        return 2


def console_main() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
