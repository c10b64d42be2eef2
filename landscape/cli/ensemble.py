"""``landscape ensemble fge|sse|swa``: fast ensembles (Garipov et al. 2018; Huang et al.
2017; Izmailov et al. 2018) against independent networks at the same training budget.

The members are saved as checkpoints in ``--out``, each part with its record, a result file
of kind ``ensemble-run`` (:mod:`landscape.ensembles.record`): ``<method>-run.h5`` for the
method's run, ``ind-run.h5`` for the independent networks. ``--resume`` reloads what an
interrupted run finished, after checking that its settings are this run's.
"""

from __future__ import annotations

import argparse
import os

from . import options
from .common import UsageError, num_samples, open_data, recorded_config


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
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
    p.add_argument("--epochs", type=int, default=10, help="SSE/SWA epochs (SWA: --swa-start included; default 10)")
    p.add_argument("--lr", type=float, default=0.05, help="alpha1 (FGE), alpha0 (SSE), SWA's first rate")
    p.add_argument("--lr-min", type=float, default=None, help="alpha2 (FGE) or cyclical SWA's lowest rate")
    p.add_argument(
        "--swa-start",
        type=int,
        default=0,
        help="SWA: epochs of pre-SWA training from --ckpt with the SWA repository's schedule from --lr down to "
        "--swa-lr, the optimizer kept into the averaging phase (default 0: --ckpt is trained)",
    )
    p.add_argument("--swa-lr", type=float, default=None, help="SWA: the rate of the averaging phase (default --lr)")
    p.add_argument("--swa-c-epochs", type=int, default=1, help="SWA: average the weights every c epochs (default 1)")
    p.add_argument(
        "--restart",
        action="store_true",
        help="SWA: a fresh optimizer when averaging starts (the library's earlier procedure)",
    )
    p.add_argument(
        "--include-start",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="SWA: count the weights at --swa-start in the average (default: yes, as the SWA repository; "
        "no with --restart or the cyclical schedule)",
    )
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
    options.add_split(p, "test", "split the ensemble is evaluated on (default test)")
    options.add_model(p)
    options.add_data(p)
    options.add_trust(p)
    options.add_output(
        p,
        help="folder for the members' checkpoints and the schedule figure",
        resume="continue an interrupted run in --out: finished parts are reloaded",
        force="overwrite files of an earlier run in --out",
    )
    options.add_progress(p)
    p.set_defaults(run=main)


def main(args) -> int:
    from ..models import build_model
    from ..threads import small_model_threads
    from ..weights import load_checkpoint

    model = build_model(args.model, args.model_kwargs)
    if args.method in ("fge", "swa") and not args.ckpt:
        raise UsageError(f"ensemble {args.method} starts from a trained checkpoint: pass --ckpt")
    start = load_checkpoint(args.ckpt, model, trust=args.trust_checkpoint) if args.ckpt else None
    if args.method == "fge" and (args.cycle_length is None or args.lr_min is None):
        raise UsageError("ensemble fge needs --cycle-length (even) and --lr-min (alpha2 < --lr)")
    if args.method == "swa" and not 0 <= args.swa_start <= args.epochs:
        raise UsageError(f"--swa-start {args.swa_start}: expected epochs of pre-SWA training in [0, --epochs]")
    if args.method == "swa" and args.swa_c_epochs < 1:
        raise UsageError(f"--swa-c-epochs {args.swa_c_epochs}: expected a positive number of epochs")
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
    train, test = open_data(args, "train"), open_data(args, args.split)
    with small_model_threads(model):
        return _run_ensemble(args, model, start, train, test)


def _ensemble_settings(args, start) -> dict:
    """What a resumed ``landscape ensemble`` must share with the run it continues."""
    keys = ("method", "cycles", "cycle_length", "epochs", "lr", "lr_min", "include_start", "fit_batch_size", "seed")
    keys += ("swa_start", "swa_lr", "swa_c_epochs", "restart")
    keys += ("model", "model_kwargs", "data", "max_samples", "normalize", "start_epochs")
    out = {k: getattr(args, k) for k in keys}
    out["ckpt-sha256"] = start.sha256 if start is not None else None
    return out


def _reload_method_run(args, model, record: dict):
    """The FGE/SSE/SWA result of an earlier run from its record (:func:`read_ensemble_run`)
    and its saved members."""
    from .. import ensembles
    from ..weights import load_checkpoint

    members = [load_checkpoint(os.path.join(args.out, n), model) for n in record["members"]]
    arrays = record["arrays"]
    lr = arrays["lr"]
    if args.method == "fge":
        iterations, distance = [int(i) for i in arrays["iterations"]], [float(x) for x in arrays["distance"]]
        run = ensembles.FGEResult(members, iterations, distance, lr, arrays["loss"])
    elif args.method == "sse":
        run = ensembles.Snapshots(members, [int(i) for i in arrays["iterations"]], float(args.epochs), lr)
    else:
        sgd = load_checkpoint(os.path.join(args.out, "sgd.pt"), model)
        run = ensembles.SWAResult(members[0], sgd, [int(i) for i in arrays["collected"]], lr=lr)
    return run, members, lr


def _method_run(args, model, start, train, e0):
    """Run (or, with --resume, reload) the FGE/SSE/SWA part; returns the result, the members
    with their file names and budgets, the learning rates and the epochs spent.

    The members are saved as checkpoints, then the run's record ``<method>-run.h5`` (kind
    ``ensemble-run``): a record whose members are all done is what --resume reloads."""
    import math

    import numpy as np

    from .. import ensembles
    from ..ensembles import read_ensemble_run, save_ensemble_run
    from ..weights import save_weights

    settings = _ensemble_settings(args, start)
    record_path = os.path.join(args.out, f"{args.method}-run.h5")
    if args.resume and os.path.exists(record_path):
        record = read_ensemble_run(record_path, settings)  # "cannot resume ..." when the settings differ
        if record["done"].all():
            print(f"resuming: {args.method} members from {record_path}")
            run, members, lr = _reload_method_run(args, model, record)
            return run, members, record["members"], list(record["budgets"]), record["spent"], lr
    common = dict(batch_size=args.fit_batch_size, seed=args.seed, progress=not args.no_progress)
    n_train = num_samples(train)
    per_epoch = (n_train // args.fit_batch_size) if args.method == "fge" else math.ceil(n_train / args.fit_batch_size)
    if args.method == "fge":
        run = ensembles.fge(
            model,
            start,
            train,
            cycles=args.cycles,
            cycle_length=args.cycle_length,
            alpha1=args.lr,
            alpha2=args.lr_min,
            **common,
        )
        members, names = run.snapshots, [f"fge-iter{i}.pt" for i in run.iterations]
        budgets, spent = [e0 + i / per_epoch for i in run.iterations], e0 + len(run.lr) / per_epoch
        extra = {"iterations": run.iterations, "distance": run.distance, "loss": run.loss}
    elif args.method == "sse":
        run = ensembles.sse(model, train, epochs=args.epochs, cycles=args.cycles, lr=args.lr, start=start, **common)
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
            swa_lr=args.swa_lr,
            swa_start=args.swa_start,
            swa_c_epochs=args.swa_c_epochs,
            restart=args.restart,
            lr_min=args.lr_min,
            cycle_length=args.cycle_length,
            include_start=args.include_start,
            **common,
        )
        members, names = [run.weights], ["swa.pt"]
        budgets, spent = [e0 + args.epochs], e0 + args.epochs
        extra = {"collected": run.collected}
        save_weights(run.sgd.state_dict(), os.path.join(args.out, "sgd.pt"), force=True)
    for w, name in zip(members, names):
        save_weights(w.state_dict(), os.path.join(args.out, name), force=True)
    arrays = {"lr": np.asarray(run.lr, dtype=np.float64)}
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    save_ensemble_run(
        record_path,
        method=args.method,
        settings={**settings, **recorded_config(args)},
        members=names,
        budgets=budgets,
        spent=spent,
        arrays=arrays,
        force=True,
    )
    return run, members, names, budgets, spent, run.lr


def _independent_run(args, model, train, each: int, n: int):
    """The independent networks, trained one at a time and saved as ``ind-<j>.pt``, each
    marked done in the record ``ind-run.h5`` once saved (--resume trains those not done)."""
    from .. import ensembles
    from ..ensembles import open_ensemble_run
    from ..weights import load_checkpoint, save_weights

    settings = {"each": each, "lr": args.lr_independent, "batch": args.fit_batch_size, "seed": args.seed}
    settings.update(model=args.model, model_kwargs=args.model_kwargs, data=args.data, max_samples=args.max_samples)
    settings.update(normalize=args.normalize, **recorded_config(args))
    names = [f"ind-{j}.pt" for j in range(n)]
    trained = {}
    with open_ensemble_run(
        os.path.join(args.out, "ind-run.h5"),
        method="ind",
        settings=settings,
        members=names,
        resume=args.resume,
        force=not args.resume,
    ) as rf:
        # a member whose checkpoint has gone is trained again (its seed makes it the same)
        todo = sorted({int(j) for j in rf.pending()} | {j for j in range(n) if not os.path.exists(_path(args, j))})
        bar = None
        if not args.no_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, initial=n - len(todo), desc="independent networks", unit="net")
        for j in todo:
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
            save_weights(r.members[0].state_dict(), _path(args, j), force=True)
            rf.write_cells([j], {"budget": [float((j + 1) * each)]})
            trained[j] = r.members[0]
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    members = [trained[j] if j in trained else load_checkpoint(_path(args, j), model) for j in range(n)]
    return ensembles.Run(f"Ind ({n} x {each} epochs)", members, [(j + 1) * each for j in range(n)])


def _path(args, j: int) -> str:
    return os.path.join(args.out, f"ind-{j}.pt")


def _figures(args, model, run, comparison, lr, train, test) -> list[str]:
    """The schedule, the budget comparison, FGE's snapshots and SWA's width line."""
    import numpy as np
    from matplotlib.figure import Figure

    from .. import ensembles
    from ..plot import plot_ensembles, plot_fge, plot_file

    written = []
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(lr) + 1), lr)
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{args.method.upper()} schedule")
    written.append(os.path.join(args.out, f"{args.method}-schedule.png"))
    fig.savefig(written[-1], dpi=120)
    written.append(os.path.join(args.out, "ensembles-budget.png"))
    plot_ensembles(comparison).savefig(written[-1], dpi=120)
    if args.method == "fge":
        written.append(os.path.join(args.out, "fge-snapshots.png"))
        err = 100 * (1 - comparison.per_member["member_acc"][0])
        plot_fge(run, err).savefig(written[-1], dpi=120)
    if args.method == "swa":
        width = os.path.join(args.out, "swa-width.h5")
        ensembles.swa_width(
            model, run, {"train": train, args.split: test}, out=width, force=True, progress=not args.no_progress
        )
        written += [width] + plot_file(width, args.out, formats=("png",), force=True)
    return written


def _run_ensemble(args, model, start, train, test) -> int:
    import numpy as np

    from .. import ensembles
    from ..bn import auto_mode
    from ..models import describe_model

    e0 = float(args.start_epochs or 0) if start is not None else 0.0
    os.makedirs(args.out, exist_ok=True)
    run, members, names, budgets, spent, lr = _method_run(args, model, start, train, e0)
    runs = [ensembles.Run(args.method.upper(), members, budgets)]
    if args.compare_independent:
        each = args.independent_epochs or (round(e0) if start is not None else args.epochs)
        n = max(1, round(spent / each))
        print(f"training {n} independent network(s) of {each} epochs ({n * each} epochs against {spent:g})")
        runs.append(_independent_run(args, model, train, each, n))
    bn = auto_mode(model)
    comparison = ensembles.compare_ensembles(model, runs, test, bn=bn, bn_data=train if bn != "running" else None)
    comparison.attrs.update(
        model=describe_model(args.model, args.model_kwargs),
        data=args.data,
        split=args.split,
        checkpoints=[{"path": start.source, "sha256": start.sha256}] if start is not None else [],
        **{"start-epochs": e0},
        **recorded_config(args),
    )
    written = [comparison.save(os.path.join(args.out, "ensembles.h5"), force=True)]
    written += _figures(args, model, run, comparison, lr, train, test)
    print(f"{args.method}: {len(members)} member(s) -> {args.out}/")
    print(f"{args.split} split; budget in epochs (--start-epochs counts the training of --ckpt)")
    print(comparison.markdown())
    print(
        "members' accuracy (%): "
        + ", ".join(f"{100 * a:.2f}" for a in comparison.per_member["member_acc"][0] if np.isfinite(a))
    )
    print(f"written: {', '.join(os.path.basename(p) for p in written)}")
    return 0
