"""The worked language-model example (tools/example_lm.py) and the token-level ensemble metric
it uses. Oracle for the metric: a per-token float64 loop over each member's logits, one
sequence at a time."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import landscape as ls
from landscape.ensembles.metrics import ensemble_token_metrics

transformers = pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gpt2(seed):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=256, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


def _batches(seed, n=5, T=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 256, (n, T), generator=g)
    lengths = torch.tensor([T, 7, T, 3, 10])[:n]
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    labels = torch.where(mask == 1, ids, torch.full_like(ids, -100))
    labels[0, 5] = -100  # an ignored target inside a sequence
    return [
        {"input_ids": ids[i : i + 2] * mask[i : i + 2], "attention_mask": mask[i : i + 2], "labels": labels[i : i + 2]}
        for i in range(0, n, 2)
    ]


def _oracle(models, batches):
    """Per-token float64 loop: (ensemble nll, hits, member nll[K], member hits[K], tokens) for
    the ensembles of the first m members, m = 1..K."""
    K = len(models)
    cum_nll, cum_hits = np.zeros(K), np.zeros(K)
    mem_nll, mem_hits = np.zeros(K), np.zeros(K)
    tokens = 0
    with torch.no_grad():
        for b in batches:
            for r in range(b["input_ids"].shape[0]):
                ids, mask, labels = b["input_ids"][r : r + 1], b["attention_mask"][r : r + 1], b["labels"][r]
                probs = [torch.softmax(m(input_ids=ids, attention_mask=mask).logits[0].double(), -1) for m in models]
                for i in range(len(labels) - 1):
                    y = int(labels[i + 1])
                    if y == -100 or int(mask[0, i + 1]) == 0:
                        continue
                    tokens += 1
                    for k in range(K):
                        p = probs[k][i]
                        mem_nll[k] -= math.log(float(p[y]))
                        mem_hits[k] += int(int(p.argmax()) == y)
                        mix = sum(probs[j][i] for j in range(k + 1)) / (k + 1)
                        cum_nll[k] -= math.log(float(mix[y]))
                        cum_hits[k] += int(int(mix.argmax()) == y)
    return cum_nll / tokens, cum_hits / tokens, mem_nll / tokens, mem_hits / tokens, tokens


def test_ensemble_token_metrics_match_a_per_token_float64_loop():
    models = [_gpt2(s).double() for s in (0, 1, 2)]
    members = [ls.Weights.from_module(m) for m in models]
    batches = _batches(0)
    cum_loss, cum_acc, mem_loss, mem_acc, tokens = _oracle(models, batches)
    res = ensemble_token_metrics(models[0], members, batches, precision="fp64")
    assert res.tokens == tokens
    np.testing.assert_allclose(res.cumulative_token_loss, cum_loss, rtol=1e-10)
    np.testing.assert_allclose(res.cumulative_token_acc, cum_acc)
    np.testing.assert_allclose(res.member_token_loss, mem_loss, rtol=1e-10)
    np.testing.assert_allclose(res.member_token_acc, mem_acc)
    assert res.token_loss == pytest.approx(cum_loss[-1], rel=1e-10)
    assert res.perplexity == pytest.approx(math.exp(cum_loss[-1]), rel=1e-10)
    np.testing.assert_allclose(res.member_perplexity, np.exp(mem_loss), rtol=1e-10)
    # one member is that member; the members agree with the engine's token_loss metric
    assert res.cumulative_token_loss[0] == pytest.approx(res.member_token_loss[0], rel=1e-12)
    ev = ls.evaluate(models[0], members, batches, ("token_loss",), precision="fp64", progress=False)
    np.testing.assert_allclose(ev["token_loss"], mem_loss, rtol=1e-10)
    # the averaged probabilities are never worse than the members' mean NLL (Jensen)
    assert res.token_loss <= mem_loss.mean() + 1e-12


def test_ensemble_token_metrics_fp32_and_other_batching():
    models = [_gpt2(s) for s in (3, 4)]
    members = [ls.Weights.from_module(m) for m in models]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (7, 16), generator=g)
    a = ensemble_token_metrics(models[0], members, (ids, ids))
    b = ensemble_token_metrics(models[0], members, ls.TensorData(ids, ids.clone(), num_classes=256), batch_size=3)
    assert a.tokens == b.tokens == 7 * 15
    assert a.token_loss == pytest.approx(b.token_loss, rel=1e-6)
    assert np.isfinite(a.perplexity) and a.perplexity == pytest.approx(math.exp(a.token_loss), rel=1e-12)


def _run_quick(out_dir):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "example_lm.py"), "--quick", "--out-dir", str(out_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_example_lm_quick(tmp_path):
    out = tmp_path / "example"
    proc = _run_quick(out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for name in ("corpus.json", "summary.json", "line.h5", "plane.h5", "curve.h5", "hessian.h5", "ensemble.h5"):
        assert (out / name).exists(), name
    for name in ("base", "ft-json-email", "ft-asyncio"):
        assert (out / "models" / name / "config.json").exists()
        assert (out / "models" / name / "model.safetensors").exists()
    pngs = [f for f in os.listdir(out / "figures") if f.endswith(".png")]
    assert any(f.startswith("line-") for f in pngs) and any(f.startswith("plane-contour") for f in pngs)
    assert any(f.startswith("curve-profile") for f in pngs)
    with open(out / "summary.json") as f:
        s = json.load(f)
    for model in s["models"].values():
        for part in model["eval"].values():
            assert part["perplexity"] == pytest.approx(math.exp(part["token_loss"]), rel=1e-6)
    for part in s["ensemble"].values():
        assert np.isfinite(part["perplexity"])
        assert part["perplexity"] == pytest.approx(math.exp(part["token_loss"]), rel=1e-9)
        assert len(part["member_perplexity"]) == 3
    assert np.isfinite(s["hessian"]["lambda_max"]) and np.isfinite(s["hessian"]["lambda_min"])
    assert set(s["stages"]) >= {"pretrain", "finetune", "line", "plane", "curve", "hessian", "ensemble"}
    with open(out / "corpus.json") as f:
        corpus = json.load(f)
    assert all(len(p["files"]) > 0 and len(p["files"][0]["sha256"]) == 64 for p in corpus["parts"].values())
    # a second run reuses every finished file
    proc = _run_quick(out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out / "summary.json") as f:
        again = json.load(f)
    assert all(v["reused"] for k, v in again["stages"].items() if k != "corpus")  # the corpus is always read
    assert again["ensemble"] == s["ensemble"]
