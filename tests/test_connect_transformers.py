"""Planted permutations on residual nets and transformers: every group of the traced structure
(heads and the dimensions inside a head included) permuted at random leaves the function
unchanged, and OT stage 1 on groups (``match_groups``) finds the planted permutation again.

:func:`build` and :func:`plant` are shared helpers: they build each model small, in float64
and eval mode, with an input, and plant random permutations of its groups."""

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape.connect import registry
from landscape.connect.graph import permute_groups
from landscape.connect.matching import match_groups
from landscape.connect.paths import linear_path
from landscape.connect.rebasin import activation_matching, weight_matching
from landscape.connect.structure import Part, structure

transformers = pytest.importorskip("transformers")

MODELS = ("resnet20", "preresnet20", "vgg16_bn", "gpt2", "tiny_transformer")


class TinyTransformer(nn.Module):
    """A causal language model of torch.nn parts, traced by torch.fx: token and position
    embeddings, pre-norm blocks of ``nn.MultiheadAttention`` and an MLP, a final RMSNorm and
    an output head tied to the token embedding."""

    def __init__(self, vocab=64, d=32, heads=4, layers=2, seq=16):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.ln1 = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.attn = nn.ModuleList(nn.MultiheadAttention(d, heads, batch_first=True) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.fc = nn.ModuleList(nn.Linear(d, 4 * d) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(4 * d, d) for _ in range(layers))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight
        self.register_buffer("mask", torch.triu(torch.full((seq, seq), float("-inf")), 1))
        self.layers = layers

    def forward(self, ids):
        h = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))
        for i in range(self.layers):
            a = self.ln1[i](h)
            h = h + self.attn[i](a, a, a, attn_mask=self.mask, need_weights=False)[0]
            h = h + self.proj[i](torch.nn.functional.gelu(self.fc[i](self.ln2[i](h))))
        return self.head(self.norm(h))


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """``(model, input)``: ``name`` (one of :data:`MODELS`) built small with random weights,
    in float64 and eval mode; BatchNorm running statistics are made non-trivial."""
    torch.manual_seed(seed)
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16)
        cfg.bos_token_id = cfg.eos_token_id = 0
        model = transformers.GPT2LMHeadModel(cfg)
        x = torch.randint(0, 64, (2, 16))
    elif name == "tiny_transformer":
        model, x = TinyTransformer(), torch.randint(0, 64, (2, 16))
    elif name == "vgg16_bn":
        model, x = ls.build_model("vgg16_bn", {"width": 0.125}), torch.randn(2, 3, 32, 32)
    else:
        model, x = ls.build_model(name, {"width": 4}), torch.randn(2, 3, 8, 8)
    for m in model.modules():
        if isinstance(getattr(m, "bias", None), nn.Parameter):
            nn.init.uniform_(m.bias, -0.1, 0.1)
        if isinstance(m, nn.MultiheadAttention):
            nn.init.uniform_(m.in_proj_bias, -0.1, 0.1)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
        if isinstance(m, (nn.LayerNorm, nn.RMSNorm)) or type(m).__name__ == "LayerNorm":
            nn.init.uniform_(m.weight, 0.5, 1.5)
            if getattr(m, "bias", None) is not None:
                nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.double().eval(), (x.double() if x.is_floating_point() else x)


def plant(model: nn.Module, seed: int = 1, skip: tuple[str, ...] = ()):
    """``(A, permuted A, groups, perms)``: a random permutation of every group of ``model``
    (but those whose names end with one of ``skip``), applied by ``permute_groups``."""
    groups = structure(model).groups
    g = torch.Generator().manual_seed(seed)
    perms = {gr.name: torch.randperm(gr.size, generator=g) for gr in groups if not gr.name.endswith(skip)}
    A = ls.Weights.from_module(model)
    return A, permute_groups(A, groups, perms), groups, perms


def outputs(model: nn.Module, weights, x: torch.Tensor) -> torch.Tensor:
    out = torch.func.functional_call(model, dict(weights), (x,))
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("name", MODELS)
def test_every_group_permuted_computes_the_same_function(name):
    model, x = build(name)
    A, P, groups, perms = plant(model)
    assert len(perms) == len(groups) >= 3
    moved = [k for k in A.layout.names() if not torch.equal(A[k], P[k])]
    owned = {p.name for gr in groups for p in gr.parts}
    owned |= {alias for alias, first in A.layout.aliases().items() if first in owned}  # a tied head
    assert set(moved) == owned  # every tensor of a group moved, nothing else did
    with torch.no_grad():
        ya, yp = outputs(model, A, x), outputs(model, P, x)
    assert ya.abs().max() > 1e-3
    assert (ya - yp).abs().max() <= 1e-6


@pytest.mark.parametrize("name", ["gpt2", "tiny_transformer"])
def test_transformer_groups_are_the_stream_heads_inner_dimensions_and_mlps(name):
    model, _ = build(name)
    s = structure(model)
    names = [g.name for g in s.groups]
    heads = [g for g in s.groups if g.name.endswith(".heads")]
    assert len(heads) == 2 and all(g.size == 4 for g in heads)
    assert sum(n.endswith(".qk") for n in names) == sum(n.endswith(".vo") for n in names) == 2
    stream = s.groups[0]
    assert stream.size == 32 and any("ln" in p.name for p in stream.parts)
    tied = "transformer.wte.weight" if name == "gpt2" else "tok.weight"
    alias = "lm_head.weight" if name == "gpt2" else "head.weight"
    assert [p for p in stream.parts if p.name == tied] == [Part(tied, 1)]  # the tied head: one tensor, once
    assert all(p.name != alias for g in s.groups for p in g.parts)
    qk = s.group(heads[0].name[: -len(".heads")] + ".qk")
    assert qk.size == 8 and {(p.offset, p.repeat, p.period) for p in qk.parts} == {(0, 4, 8), (32, 4, 8)}


def test_a_permuted_head_moves_its_queries_keys_values_and_output_columns_as_blocks():
    model, _ = build("gpt2")
    s = structure(model)
    heads = s.group("transformer.h.0.attn.heads")
    A = ls.Weights.from_module(model)
    perm = torch.tensor([2, 0, 3, 1])
    P = permute_groups(A, s.groups, {heads.name: perm})
    W, Wp = A["transformer.h.0.attn.c_attn.weight"], P["transformer.h.0.attn.c_attn.weight"]
    Wo, Wop = A["transformer.h.0.attn.c_proj.weight"], P["transformer.h.0.attn.c_proj.weight"]
    for slot, old in enumerate(perm.tolist()):  # dense oracle: head slot <- old head, in q, k and v
        for j in range(3):
            new_cols = slice(32 * j + 8 * slot, 32 * j + 8 * slot + 8)
            old_cols = slice(32 * j + 8 * old, 32 * j + 8 * old + 8)
            assert torch.equal(Wp[:, new_cols], W[:, old_cols])
        assert torch.equal(Wop[8 * slot : 8 * slot + 8], Wo[8 * old : 8 * old + 8])


def test_head_order_and_inner_orders_commute():
    model, _ = build("tiny_transformer")
    s = structure(model)
    A = ls.Weights.from_module(model)
    g = torch.Generator().manual_seed(3)
    pr = {n: torch.randperm(s.group(n).size, generator=g) for n in ("attn.0.heads", "attn.0.qk", "attn.0.vo")}
    one = A
    for n in pr:
        one = permute_groups(one, s.groups, {n: pr[n]})
    other = A
    for n in reversed(list(pr)):
        other = permute_groups(other, s.groups, {n: pr[n]})
    assert all(torch.equal(one[k], other[k]) for k in A.layout.names())
    assert not torch.equal(one["attn.0.in_proj_weight"], A["attn.0.in_proj_weight"])


@pytest.mark.parametrize("name", ["resnet20", "preresnet20", "vgg16_bn"])
def test_match_groups_recovers_a_planted_permutation_of_a_convnet(name):
    model, _ = build(name)
    A, P, groups, planted = plant(model)
    found = match_groups(A, P, groups, solver="lsa")
    for k, p in planted.items():  # P[slot i] = A[p[i]]: matched back by the inverse
        assert torch.equal(found[k], torch.argsort(p)), k
    back = permute_groups(P, groups, found)
    assert all(torch.equal(back[k], A[k]) for k in A.layout.names())


@pytest.mark.parametrize("name", ["gpt2", "tiny_transformer"])
def test_match_groups_recovers_planted_heads_stream_and_mlps_of_a_transformer(name):
    """Heads with the dimensions inside them also permuted cannot be told apart by a
    distance between heads that ignores the inner order, so the inner orders stay planted
    as the identity here; with them permuted too, the heads stay in place and each inner
    order is found."""
    model, _ = build(name)
    A, P, groups, planted = plant(model, skip=(".qk", ".vo"))
    found = match_groups(A, P, groups, solver="lsa")
    for k, p in planted.items():
        assert torch.equal(found[k], torch.argsort(p)), k
    back = permute_groups(P, groups, found)
    assert all(torch.equal(back[k], A[k]) for k in A.layout.names())
    A, P, groups, planted = plant(model, seed=2, skip=(".heads",))
    found = match_groups(A, P, groups, solver="lsa")
    assert all(torch.equal(found[k], torch.argsort(p)) for k, p in planted.items())


# ---------------------------------------------------------------------------- Git Re-Basin
def _recovered(found, planted, groups, A, P):
    for k, p in planted.items():  # P[slot i] = A[p[i]]: matched back by the inverse
        assert torch.equal(found[k], torch.argsort(p)), k
    back = permute_groups(P, groups, found)
    assert all(torch.equal(back[k], A[k]) for k in A.layout.names())


@pytest.mark.parametrize("name", MODELS)
def test_weight_matching_recovers_a_planted_permutation(name):
    """Every group, the heads and the dimensions inside them included: weight matching applies
    every other group's permutation before it scores a group, so the heads are compared with
    their inner orders already undone (unlike match_groups, above)."""
    model, _ = build(name)
    A, P, groups, planted = plant(model, seed=3)
    _recovered(weight_matching(A, P, model), planted, groups, A, P)


@pytest.mark.parametrize("name", ["resnet20", "gpt2"])
def test_activation_matching_recovers_a_planted_permutation(name):
    """On the groups whose channels are module outputs (all of a convnet's; a transformer's
    stream and MLP groups: attention internals have no activation of their own)."""
    model, x = build(name)
    A, P, groups, planted = plant(model, seed=4, skip=(".heads", ".qk", ".vo"))
    active = {grp for grp, _ in structure(model).activation_modules.values()}
    chosen = [g for g in groups if g.name in active]
    assert {g.name for g in chosen} == set(planted)
    data = x if name == "resnet20" else torch.randint(0, 64, (8, 16))
    found = activation_matching(A, P, model, data.repeat(4, *([1] * (data.dim() - 1))), groups=chosen)
    _recovered(found, planted, groups, A, P)


def test_the_line_to_a_matched_gpt2_has_constant_loss():
    model, _ = build("gpt2")
    A, P, _, _ = plant(model, seed=5)
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": ids, "labels": ids}]
    path = registry.get("weight-matching")(A, P, model, None, t=np.linspace(0, 1, 5))
    res = ls.evaluate(model, path, data, ("token_loss",), precision="fp64", path="loop", progress=False)
    assert np.allclose(res["token_loss"], res["token_loss"][0], rtol=1e-9, atol=0)
    plain = ls.evaluate(
        model, linear_path(A, P, np.linspace(0, 1, 5)), data, ("token_loss",), precision="fp64", progress=False
    )
    assert np.ptp(plain["token_loss"]) > 1e-3  # the unmatched line is not flat
