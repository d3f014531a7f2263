"""The EMA target of a real `train` run, replayed from its consecutive checkpoints.

Update k (after optimiser step k, k = 1..steps) must give
    target_k = m_k * target_{k-1} + (1 - m_k) * online_k,   m_k = ema_momentum(k)
with target_0 the initial encoder. Unit tests of `ema_update` cannot see which momentum the loop
passes it (m_k, m_{k-1}, 1 - m_k); only a replay of the run's own checkpoints can.
"""

import json

import pytest

from vjepa.checkpoint import load_checkpoint
from vjepa.config import apply_overrides, preset
from vjepa.jepa import ema_momentum
from vjepa.models.factory import initial_encoder
from vjepa.train import train

STEPS = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step fp32 run keeping every step's checkpoint, with a momentum schedule that moves fast
    (0.6 -> 0.9 over 5 steps) and a large constant LR, so that m_k and m_{k-1} give clearly
    different targets."""
    out = tmp_path_factory.mktemp("ema_run")
    cfg = apply_overrides(preset("debug"), [
        f"run.out_dir={out}", "run.progress=false", "run.dtype=fp32", "run.log_every=1",
        f"optim.steps={STEPS}", "run.keep_every=1", "run.checkpoint_every=1", "optim.ema=[0.6,0.9]",
        "optim.warmup_steps=0", "optim.start_lr=0.01", "optim.lr=0.01", "optim.final_lr=0.01",
    ])
    train(cfg)
    states = {k: load_checkpoint(out / f"step_{k}.pt") for k in range(1, STEPS + 1)}
    states[0] = {"target_encoder": initial_encoder(cfg).state_dict()}
    return cfg, out, states


def replay_error(states, k, momentum):
    """Largest |target_k - (m target_{k-1} + (1 - m) online_k)| over every parameter."""
    before, online, target = states[k - 1]["target_encoder"], states[k]["encoder"], states[k]["target_encoder"]
    return max((target[n] - (momentum * before[n] + (1 - momentum) * online[n])).abs().max().item()
               for n in target if n != "pos_embed")


@pytest.mark.parametrize("k", range(1, STEPS + 1))
def test_target_k_is_the_ema_of_target_k_minus_1_and_online_k(run, k):
    cfg, _, states = run
    m_k = ema_momentum(k, cfg.optim)
    assert replay_error(states, k, m_k) < 1e-6
    # the replay can tell the right momentum from its neighbours and from its complement
    for wrong in (ema_momentum(k - 1, cfg.optim), 1.0 - m_k):
        assert replay_error(states, k, wrong) > 1e-4, wrong


def test_logged_momentum_is_the_one_applied(run):
    cfg, out, _ = run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["momentum"] for r in records if "momentum" in r}
    assert logged == {k: pytest.approx(ema_momentum(k, cfg.optim)) for k in range(1, STEPS + 1)}
    assert states_differ(run[2])


def states_differ(states):
    """The online encoder moved away from the target (else the replay would prove nothing)."""
    a, b = states[STEPS]["encoder"], states[STEPS]["target_encoder"]
    return max((a[n] - b[n]).abs().max().item() for n in a) > 1e-3
