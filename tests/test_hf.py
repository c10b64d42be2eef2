"""Hugging Face model folders: GPT-2 built from config, single-file and sharded safetensors,
tied heads omitted from the files, native bf16, transformer layouts, Hessians through eager
attention. Oracles: a per-token float64 loop over the model's logits, one sequence at a time,
and central differences of float64 gradients."""

import math
import os
import sys

import numpy as np
import pytest
import torch

import landscape as ls

transformers = pytest.importorskip("transformers")


def _gpt2(seed, dtype=torch.float32):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=256, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg).to(dtype).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    a, b = _gpt2(0), _gpt2(1)
    a.save_pretrained(root / "a")
    b.save_pretrained(root / "b", max_shard_size="40KB")
    return root, a, b


def _batches(seed, n=5, T=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 256, (n, T), generator=g)
    lengths = torch.tensor([T, 7, T, 3, 10])[:n]
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    labels = torch.where(mask == 1, ids, torch.full_like(ids, -100))
    ids = ids * mask
    return [
        {"input_ids": ids[i : i + 2], "attention_mask": mask[i : i + 2], "labels": labels[i : i + 2]}
        for i in range(0, n, 2)
    ]


def test_folders_single_and_sharded(folders):
    root, a, b = folders
    assert os.path.exists(root / "b" / "model.safetensors.index.json")
    model = ls.build_model(f"hf:{root / 'a'}")
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.lm_head.weight is model.transformer.wte.weight
    wa = ls.load_checkpoint(root / "a", model)
    wb = ls.load_checkpoint(root / "b", model)
    for name, t in a.state_dict().items():
        assert torch.equal(wa[name], t)
    for name, t in b.state_dict().items():
        assert torch.equal(wb[name], t)
    assert wa["lm_head.weight"] is wa["transformer.wte.weight"]  # omitted from the file, tied
    assert wa.sha256 != wb.sha256 and len(wa.sha256) == 64


def test_token_metrics_equal_hugging_face_loss_in_fp64(folders):
    root, _, _ = folders
    model = ls.build_model(f"hf:{root / 'a'}", {"dtype": "float64"})
    assert next(model.parameters()).dtype == torch.float64
    wa, wb = ls.load_checkpoint(root / "a", model), ls.load_checkpoint(root / "b", model)
    ts = (0.0, 0.4, 1.0)
    line = ls.PointSet.from_weights([wa, wb], [[1 - t, t] for t in ts])
    batches = _batches(0)
    res = ls.evaluate(model, line, batches, ("token_loss", "perplexity"), precision="fp64", progress=False)
    oracle = ls.build_model(f"hf:{root / 'a'}", {"dtype": "float64"})
    for k in range(len(ts)):
        oracle.load_state_dict(line.point(k))
        total = count = 0.0
        with torch.no_grad():
            for b in batches:
                for r in range(b["input_ids"].shape[0]):
                    # one sequence at a time; the loss by hand in float64 (Hugging Face's own
                    # loss upcasts to float32 only)
                    logits = oracle(input_ids=b["input_ids"][r : r + 1], attention_mask=b["attention_mask"][r : r + 1])
                    logp = torch.log_softmax(logits.logits[0].double(), -1)
                    for i in range(logp.shape[0] - 1):
                        target = int(b["labels"][r, i + 1])
                        if target != -100:
                            total -= float(logp[i, target])
                            count += 1
        assert math.isclose(res["token_loss"][k], total / count, rel_tol=1e-9)
        assert math.isclose(res["perplexity"][k], math.exp(total / count), rel_tol=1e-9)


def test_bad_folders_one_clear_error(folders, tmp_path, monkeypatch):
    root, _, _ = folders
    model = ls.build_model(f"hf:{root / 'a'}")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in os.listdir(root / "b"):
        if not f.endswith("00002-of-00002.safetensors") and not f.startswith("model-00002"):
            (broken / f).write_bytes((root / "b" / f).read_bytes())
    with pytest.raises(ls.CheckpointError, match=r"lacks shard 'model-00002-of-\d+\.safetensors'"):
        ls.load_checkpoint(broken, model)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ls.CheckpointError, match="not a model folder"):
        ls.load_checkpoint(empty, model)
    with pytest.raises(ls.ModelSpecError, match="not a Hugging Face model folder: it has no config.json"):
        ls.build_model(f"hf:{empty}")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ls.ModelSpecError, match=r"needs the 'transformers' package: pip install \"landscape\[hf\]\""):
        ls.build_model(f"hf:{root / 'a'}")


def test_native_bf16_is_kept_and_not_copied(tmp_path):
    m = _gpt2(2, torch.bfloat16)
    m.save_pretrained(tmp_path / "bf")
    model = ls.build_model(f"hf:{tmp_path / 'bf'}")
    assert next(model.parameters()).dtype == torch.bfloat16
    w = ls.load_checkpoint(tmp_path / "bf", model)
    assert all(t.dtype == torch.bfloat16 for t in w.values() if t.is_floating_point())
    pts = ls.PointSet.from_weights([w], [[1.0]])
    name = "transformer.h.0.mlp.c_fc.weight"
    assert pts._entry_vectors(pts.layout[name])[0].data_ptr() == w[name].data_ptr()  # referenced, not copied
    batches = _batches(1)
    got = ls.evaluate(model, pts, batches, ("token_loss",), precision="fp32", progress=False)
    f32 = _gpt2(2, torch.bfloat16).float()
    f32.load_state_dict({k: v.float() for k, v in w.items()})
    ref = ls.evaluate(f32, ls.Weights.from_module(f32), batches, ("token_loss",), precision="fp32", progress=False)
    np.testing.assert_allclose(got["token_loss"], ref["token_loss"], rtol=1e-6)


def test_transformer_layout_and_filter_normalized_directions(folders):
    root, _, _ = folders
    model = ls.build_model(f"hf:{root / 'a'}")
    w = ls.load_checkpoint(root / "a", model)
    lay = w.layout
    assert (lay["transformer.h.0.attn.c_attn.weight"].kind, lay["transformer.h.0.attn.c_attn.weight"].filter_dim) == (
        "weight",
        1,
    )  # Conv1D stores [in, out]
    assert (lay["transformer.wte.weight"].kind, lay["transformer.wte.weight"].filter_dim) == ("weight", 0)
    assert lay["transformer.h.0.ln_1.weight"].kind == "norm_weight"
    assert lay["transformer.h.0.ln_1.bias"].kind == "norm_bias"
    assert lay.aliases() == {"lm_head.weight": "transformer.wte.weight"}
    d = ls.directions.random_direction(w, seed=0)
    assert float(d["transformer.h.0.ln_1.weight"].abs().sum()) == 0.0
    assert float(d["transformer.h.1.attn.c_attn.bias"].abs().sum()) == 0.0
    name = "transformer.h.0.attn.c_attn.weight"
    torch.testing.assert_close(d[name].norm(dim=0), w[name].norm(dim=0))  # one filter per output column
    assert not torch.allclose(d[name].norm(dim=1), w[name].norm(dim=1))
    torch.testing.assert_close(d["transformer.wte.weight"].norm(dim=1), w["transformer.wte.weight"].norm(dim=1))
    assert d["lm_head.weight"] is d["transformer.wte.weight"]
    # nn.MultiheadAttention's packed projection: one filter per output row
    mha = ls.Layout.from_module(torch.nn.MultiheadAttention(8, 2))
    assert (mha["in_proj_weight"].kind, mha["in_proj_weight"].filter_dim) == ("weight", 0)
    assert mha["in_proj_bias"].kind == "bias"


def test_hessian_vector_products_pick_eager_attention(folders):
    from landscape.hessian import HVP

    root, _, _ = folders
    model = ls.build_model(f"hf:{root / 'a'}", {"dtype": "float64"})
    assert model.config._attn_implementation == "sdpa"
    w = ls.load_checkpoint(root / "a", model)
    batches = _batches(2, n=3)
    v = torch.randn(
        sum(p.numel() for p in model.parameters()), dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    out = {}
    for method in ("double-backward", "forward-over-reverse"):
        op = HVP(model, w, batches, loss="token_loss", method=method, dtype=torch.float64)
        assert op.n == v.numel()
        out[method] = op(v)
    assert model.config._attn_implementation == "sdpa"  # the user's model is untouched
    torch.testing.assert_close(out["double-backward"], out["forward-over-reverse"], rtol=1e-10, atol=1e-10)
    # oracle: central differences of the float64 gradient of the token loss (eager attention)
    ref = ls.build_model(f"hf:{root / 'a'}", {"dtype": "float64", "attn_implementation": "eager"})
    names = [n for n, _ in ref.named_parameters()]
    base = torch.cat([w[n].reshape(-1) for n in names]).double()

    def grad_at(flat):
        pos = 0
        with torch.no_grad():
            for p in ref.parameters():
                p.copy_(flat[pos : pos + p.numel()].view_as(p))
                pos += p.numel()
        ref.zero_grad()
        count = 0
        for b in batches:
            logits = ref(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
            target = b["labels"][:, 1:]
            keep = target != -100
            loss = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
            loss.backward()
            count += int(keep.sum())
        return torch.cat([p.grad.reshape(-1) for p in ref.parameters()]) / count

    eps = 1e-4 / float(v.norm())  # a step of 1e-4 in weight space
    fd = (grad_at(base + eps * v) - grad_at(base - eps * v)) / (2 * eps)
    err = float((out["double-backward"] - fd).norm() / fd.norm())
    assert err < 1e-6, err
