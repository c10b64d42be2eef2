"""Connections of causal language models: ``compare_connections`` evaluates the paths of a
Hugging Face GPT-2 with the next-token metrics, checked against a float64 loop per point."""

import copy

import numpy as np
import pytest
import torch

import landscape as ls
from landscape.connect import compare_connections, linear_path
from landscape.connect.report import ConnectionReport, path_metrics

transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 11, 6


def tiny_gpt2(seed: int, n_layer: int = 1) -> torch.nn.Module:
    """A GPT-2 of about a thousand parameters built from its config, in float64, eval mode."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=8, n_layer=n_layer, n_head=2, n_inner=12, bos_token_id=0
    )
    cfg.eos_token_id = 0
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    for name, p in model.named_parameters():  # away from the initial zeros and ones
        if name.endswith("bias") or ".ln_" in name or "ln_f" in name:
            with torch.no_grad():
                p.add_(0.3 * torch.randn_like(p))
    return model


def tokens(n: int, seed: int) -> ls.TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, SEQ), generator=g)
    return ls.TensorData(x, x.clone(), num_classes=VOCAB)


def next_token_loop(model, weights, x: torch.Tensor) -> tuple[float, float]:
    """The oracle: mean next-token cross-entropy and accuracy of ``model`` at ``weights`` on
    the sequences ``x``, position by position in float64."""
    net = copy.deepcopy(model).double().eval()
    net.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in weights.items()})
    total, right, count = 0.0, 0, 0
    with torch.no_grad():
        for seq in x:
            logits = net(seq[None]).logits[0]
            for i in range(seq.shape[0] - 1):
                row = logits[i]
                target = int(seq[i + 1])
                total += float(torch.logsumexp(row, 0) - row[target])
                right += int(int(row.argmax()) == target)
                count += 1
    return total / count, right / count


def test_path_metrics_choose_by_the_model_and_refuse_class_metrics_on_a_language_model():
    lm = tiny_gpt2(0)
    assert path_metrics(lm) == ("token_loss", "token_acc")
    assert path_metrics(ls.build_model("mlp", {"widths": [4]})) == ("loss", "acc")
    assert path_metrics(lm, ["token_loss", "token_acc"]) == ("token_loss", "token_acc")
    with pytest.raises(ValueError, match="GPT2LMHeadModel is a causal language model: metrics"):
        path_metrics(lm, ("loss", "acc"))
    with pytest.raises(ValueError, match=r"a \(loss, accuracy\) pair of metric names.*got 'token_loss'"):
        path_metrics(lm, "token_loss")
    with pytest.raises(ValueError, match="got \\('token_loss', 'accuracy'\\)"):
        path_metrics(lm, ("token_loss", "accuracy"))


def test_compare_connections_on_gpt2_uses_next_token_metrics(tmp_path):
    model = tiny_gpt2(0)
    A, B = ls.Weights.from_module(model), ls.Weights.from_module(tiny_gpt2(1))
    splits = {"train": tokens(7, 1), "test": tokens(5, 2)}
    out = tmp_path / "lm.h5"
    rep = compare_connections(model, A, B, splits, methods=["linear"], points=5, precision="fp64", out=out)
    assert rep.attrs["metrics"] == ["token_loss", "token_acc"]
    line = linear_path(A, B, np.linspace(0, 1, 5))
    for s, data in splits.items():
        want = np.array([next_token_loop(model, line.weights(k), data.x) for k in range(5)])
        assert np.allclose(rep.loss["linear"][s], want[:, 0], rtol=0, atol=1e-10)
        assert np.allclose(rep.acc["linear"][s], want[:, 1], rtol=0, atol=1e-12)
        assert rep.max_loss("linear", s) == pytest.approx(want[:, 0].max(), abs=1e-10)
        assert rep.worst_acc("linear", s) == pytest.approx(want[:, 1].min(), abs=1e-12)
        assert rep.endpoints[s]["B_loss"] == pytest.approx(want[-1, 0], abs=1e-10)
    back = ConnectionReport.load(out)
    assert back.metrics == ("token_loss", "token_acc") and "Worst test token acc (%)" in back.markdown()
    assert np.array_equal(back.loss["linear"]["test"], rep.loss["linear"]["test"])
    # a rerun asking for other metrics does not resume this file
    with pytest.raises(ls.io.ResultFileError, match="metrics"):
        compare_connections(
            model, A, B, splits, methods=["linear"], points=5, out=out, resume=True, metrics=("perplexity", "token_acc")
        )


# ---------------------------------------------------------------------------- REPAIR on GPT-2
def _site_stats(model, weights, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The oracle of REPAIR's targets: mean and std over sequences and positions of every
    block's value channels (the last third of ``c_attn``'s output) and MLP hidden channels
    (``c_fc``'s output), by forward hooks on a float64 copy at ``weights``."""
    net = copy.deepcopy(model).double().eval()
    net.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in weights.items()})
    d, outs, hooks = net.config.n_embd, {}, []
    for i, block in enumerate(net.transformer.h):
        hooks.append(
            block.attn.c_attn.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(f"v{i}", o[..., 2 * d :]))
        )
        hooks.append(block.mlp.c_fc.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(f"fc{i}", o)))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return {
        k: (o.reshape(-1, o.shape[-1]).mean(0), o.reshape(-1, o.shape[-1]).std(0, unbiased=False))
        for k, o in outs.items()
    }


def test_repair_sites_of_gpt2_are_its_values_and_mlp_hidden_channels():
    from landscape.connect.repair import repair_sites, unrepaired_layers

    model = tiny_gpt2(0, n_layer=2)
    sites = repair_sites(model)
    assert [(s.module, s.span, s.level) for s in sites] == [
        ("transformer.h.0.attn.c_attn", (16, 24), 1),
        ("transformer.h.0.mlp.c_fc", None, 2),
        ("transformer.h.1.attn.c_attn", (16, 24), 3),
        ("transformer.h.1.mlp.c_fc", None, 4),
    ]
    left = unrepaired_layers(model)
    assert "softmax" in left["transformer.h.1.attn.c_attn (queries, keys)"]
    assert "residual stream" in left["transformer.h.0.mlp.c_proj"] and "transformer.wte" in left


@pytest.mark.parametrize("t", [0.3, 0.5])
def test_repair_of_gpt2_meets_the_interpolated_statistics(t):
    from landscape.connect.repair import repair_path

    model = tiny_gpt2(0, n_layer=2)
    A, B = ls.Weights.from_module(model), ls.Weights.from_module(tiny_gpt2(1, n_layer=2))
    x = tokens(24, 3).x
    with pytest.warns(UserWarning, match="REPAIR leaves the outputs of"):
        path = repair_path(linear_path(A, B, [0.0, t, 1.0]), A, B, model, x, batch_size=10)
    for k, w in ((0, A), (2, B)):
        assert all(torch.equal(path.point(k)[n], w[n]) for n in w.keys())
    sa, sb, got = (_site_stats(model, w, x) for w in (A, B, path.weights(1)))
    plain = _site_stats(model, linear_path(A, B, [t]).weights(0), x)
    for site in got:
        for j in (0, 1):  # mean, std
            want = (1 - t) * sa[site][j] + t * sb[site][j]
            assert torch.allclose(got[site][j], want, rtol=0, atol=1e-5), site
        assert not torch.allclose(plain[site][1], got[site][1], atol=1e-3)  # the plain line differs
    # only the corrected layers changed, and of c_attn only its value columns
    line = linear_path(A, B, [t]).weights(0)
    changed = {n for n in A.keys() if not torch.allclose(path.point(1)[n].double(), line[n].double(), atol=1e-12)}
    assert changed <= {
        f"transformer.h.{i}.{m}.{p}" for i in (0, 1) for m in ("attn.c_attn", "mlp.c_fc") for p in ("weight", "bias")
    }
    w = "transformer.h.1.attn.c_attn.weight"
    assert torch.equal(path.point(1)[w][:, :16], line[w][:, :16])


def test_activation_matching_rows_of_gpt2_are_skipped_with_the_reason():
    """GPT-2's attention groups have no activation of their own: the rows are skipped, not a crash."""
    model = tiny_gpt2(0)
    A, B = ls.Weights.from_module(model), ls.Weights.from_module(tiny_gpt2(1))
    methods = ["activation-matching", "activation-matching+repair", "weight-matching+repair"]
    rep = compare_connections(model, A, B, {"train": tokens(4, 1)}, methods=methods, points=3)
    assert sorted(rep.skipped) == methods[:2]
    assert "group(s) have none (e.g. transformer.h.0.attn.heads" in rep.skipped["activation-matching"]
    assert rep.computed == ["weight-matching+repair"]


def test_landscape_connect_on_a_gpt2_folder_reports_token_metrics(tmp_path, capsys):
    """``landscape connect`` on a Hugging Face GPT-2 folder and a text corpus: next-token rows."""
    from landscape.cli import main

    folder, text = tmp_path / "gpt2", tmp_path / "text"
    text.mkdir()
    (text / "a.py").write_text("def f(x):\n    return x + 1\n" * 20)
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=8, n_embd=8, n_layer=1, n_head=2, bos_token_id=0)
    cfg.eos_token_id, cfg.architectures = 0, ["GPT2LMHeadModel"]
    cfg.save_pretrained(folder)
    ckpts = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        ckpts += ["--ckpt", str(tmp_path / f"s{seed}.pt")]
        ls.save_weights(ls.build_model(f"hf:{folder}").state_dict(), ckpts[-1])
    out = tmp_path / "c.h5"
    argv = ["connect", "--model", f"hf:{folder}", *ckpts, "--data", f"text:{text}:seq=8:ext=py", "--points", "3"]
    assert main([*argv, "--methods", "linear", "--out", str(out), "--no-progress"]) == 0
    assert "Worst test token acc (%)" in capsys.readouterr().out
    rep = ConnectionReport.load(out)
    assert rep.metrics == ("token_loss", "token_acc")
    assert rep.endpoints["test"]["A_loss"] == pytest.approx(np.log(256), abs=0.5)  # an untrained byte model
