"""Probe modules: shapes, official key names, factorised attention = textbook attention, gradients."""

import pytest
import torch

from vjepa.models.probe import AttentiveClassifier, AttentivePooler, LinearProbe, build_probe


def perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter off its init (zero biases, unit norms) so equalities are not trivial."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return module


@pytest.mark.parametrize("depth", [1, 2])
def test_attentive_classifier_shapes(depth):
    probe = AttentiveClassifier(embed_dim=48, num_heads=3, num_classes=5, depth=depth)
    assert probe(torch.randn(4, 20, 48)).shape == (4, 5)
    assert len(probe.pooler.blocks) == depth - 1


def test_pooler_queries_and_linear_probe_shapes():
    pooler = AttentivePooler(embed_dim=32, num_heads=4, num_queries=3)
    assert pooler(torch.randn(2, 10, 32)).shape == (2, 3, 32)
    linear = LinearProbe(32, 7)
    assert linear(torch.randn(5, 10, 32)).shape == (5, 7)
    assert isinstance(build_probe("linear", 32, 4, 7), LinearProbe)
    with pytest.raises(ValueError):
        build_probe("mlp", 32, 4, 7)


def test_official_key_names():
    keys = set(AttentiveClassifier(48, 3, 5, depth=2).state_dict())
    expected = {
        "pooler.query_tokens",
        "pooler.cross_attention_block.norm1.weight",
        "pooler.cross_attention_block.xattn.q.weight",
        "pooler.cross_attention_block.xattn.kv.weight",
        "pooler.cross_attention_block.xattn.proj.weight",
        "pooler.cross_attention_block.norm2.weight",
        "pooler.cross_attention_block.mlp.fc1.weight",
        "pooler.cross_attention_block.mlp.fc2.weight",
        "pooler.blocks.0.attn.qkv.weight",
        "linear.weight",
        "linear.bias",
    }
    assert expected <= keys
    assert not any(k.startswith("pooler.blocks") for k in AttentiveClassifier(48, 3, 5, depth=1).state_dict())


@pytest.mark.parametrize("masked", [False, True])
def test_factorised_cross_attention_matches_textbook(masked):
    block = perturbed(AttentiveClassifier(48, 3, 5)).pooler.cross_attention_block
    x = torch.randn(3, 17, 48, requires_grad=True)
    query = torch.randn(3, 2, 48, requires_grad=True)
    valid = torch.rand(3, 17) > 0.4 if masked else None
    if valid is not None:
        valid[:, 0] = True
    fast = block.xattn(query, x, valid, norm=block.norm1)
    slow = block.xattn.forward_reference(query, block.norm1(x), valid)
    assert torch.allclose(fast, slow, atol=1e-5)
    grads_fast = torch.autograd.grad(fast.sum(), [query, x, block.norm1.weight, block.xattn.kv.weight])
    grads_slow = torch.autograd.grad(slow.sum(), [query, x, block.norm1.weight, block.xattn.kv.weight])
    for a, b in zip(grads_fast, grads_slow):
        assert torch.allclose(a, b, atol=1e-4)


def test_padded_tokens_are_ignored():
    probe = perturbed(AttentiveClassifier(48, 3, 5)).eval()
    x = torch.randn(2, 12, 48)
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[:, 8:] = False
    noisy = x.clone()
    noisy[:, 8:] = 100 * torch.randn(2, 4, 48)
    assert torch.allclose(probe(x, valid), probe(noisy, valid), atol=1e-5)
    assert torch.allclose(probe(x, valid), probe(x[:, :8]), atol=1e-5)


@pytest.mark.parametrize("kind,variant", [("attentive", "vjepa1"), ("attentive", "vjepa2"), ("linear", "vjepa1")])
def test_every_trainable_parameter_gets_a_gradient(kind, variant):
    probe = build_probe(kind, 48, 3, 5, depth=2, variant=variant)
    probe(torch.randn(4, 9, 48)).logsumexp(-1).sum().backward()
    trainable = [(n, p) for n, p in probe.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    frozen = {n for n, p in probe.named_parameters() if not p.requires_grad}
    # only V-JEPA 1's output projection, which the official forward never applies, is frozen
    assert frozen == ({"pooler.cross_attention_block.xattn.proj.weight", "pooler.cross_attention_block.xattn.proj.bias"}
                      if kind == "attentive" and variant == "vjepa1" else set())


def test_probe_optimizer_decays_only_weight_matrices_and_schedules_group_0():
    """The official probe's split (through `jepa.param_groups`): no decay for biases, norms and the
    query tokens; group 0 is the decayed one `probe_step` reschedules."""
    from vjepa.eval.probe_train import make_probe_config, probe_optimizer

    probe = AttentiveClassifier(32, 4, 5, depth=2)
    optimizer = probe_optimizer(probe, make_probe_config(weight_decay=0.05))
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    assert optimizer.param_groups[0]["weight_decay"] == 0.05
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups[1:])
    trained = [(name, p) for name, p in probe.named_parameters() if p.requires_grad]  # xattn.proj is frozen
    for name, p in trained:
        assert (id(p) in decayed) == (p.ndim > 1 and not name.endswith("query_tokens")), name
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trained)
