"""What would break on a GPU cluster, checked on CPU (issue 25): gloo processes and a mocked torch.cuda.

- resume across nodes: rank 0 decides the step; ranks whose run.out_dir lacks latest.pt receive it;
- device choice: GPU LOCAL_RANK % device_count(); cuda:N refused under torchrun;
- a NaN on one rank: every rank raises the same TrainingDiverged;
- collective timeout from run.dist_timeout_s; one checkpoint write per save (keep steps link);
- every generator saved: a drop-path run resumes bit for bit on CPU;
- crawl fixes: auto DataLoader workers and pinned memory on CUDA, fused AdamW, TF32, FSDP2 bf16
  gathering, mmap loads.
"""

import os
import shutil
import threading
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import vjepa.distributed as dist_utils
from test_distributed import cfg_for, free_port, losses, port_taken
from vjepa.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vjepa.config import apply_overrides, validate
from vjepa.data.workers import resolve_workers
from vjepa.distributed import DistEnv, broadcast_state, rank_device, resume_state, setup
from vjepa.jepa import build_optimizer
from vjepa.precision import allow_tf32
from vjepa.train import build_train_loader, train

TIMEOUT_S = 150  # a hung collective fails the test instead of the suite


# ---------------------------------------------------------------------------------------------
# gloo processes with a deadline


def run_ranks(target, args, world_size=2, attempts=3):
    """Run `target(rank, world_size, port, *args)` on `world_size` processes; fail (and kill them)
    after TIMEOUT_S instead of hanging. A port another process took first is retried."""
    for attempt in range(attempts):
        context = mp.start_processes(target, args=(world_size, free_port(), *args), nprocs=world_size,
                                     join=False, start_method="spawn")
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while not context.join(timeout=1):
                if time.monotonic() > deadline:
                    for process in context.processes:
                        process.kill()
                    pytest.fail(f"the ranks did not finish within {TIMEOUT_S} s (a hang in a collective)")
            return
        except mp.ProcessRaisedException as err:
            if attempt == attempts - 1 or not port_taken(err):
                raise


def _join(rank, world_size, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))


def _train_rank(rank, world_size, port, cfgs, capture_dir, nan_rank, nan_step):
    """One rank of `train(cfgs[rank])`: records its start step and final weights, or its error."""
    _join(rank, world_size, port)
    import vjepa.train as train_module

    real_loop, real_step = train_module.run_loop, train_module.train_step

    def loop(cfg, wrapped, model, optimizer, loader, dataset, start, *rest):
        (capture_dir / f"start{rank}.txt").write_text(str(start))
        summary = real_loop(cfg, wrapped, model, optimizer, loader, dataset, start, *rest)
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, capture_dir / f"rank{rank}.pt")
        return summary

    def step(model, optimizer, video, masks, step, *rest):
        result = real_step(model, optimizer, video, masks, step, *rest)
        if rank == nan_rank and step == nan_step:  # a NaN only this rank sees (e.g. its own bad clip)
            result.loss = torch.full_like(result.loss, float("nan"))
        return result

    train_module.run_loop, train_module.train_step = loop, step
    try:
        train_module.train(cfgs[rank])
    except Exception as err:  # noqa: BLE001 - the test reads what each rank raised
        (capture_dir / f"error{rank}.txt").write_text(f"{type(err).__name__}: {err}")
        if dist.is_initialized():
            dist.destroy_process_group()


def _broadcast_rank(rank, world_size, port, capture_dir):
    _join(rank, world_size, port)
    env = setup("cpu", timeout_s=60)
    state = {"a": torch.arange(6.0).reshape(2, 3).to(torch.bfloat16), "b": [torch.tensor(7), torch.tensor([True, False])],
             "c": {"step": 5, "rng": torch.get_rng_state()[:9]}, "d": "text"}
    got = broadcast_state(state if rank == 0 else None, env)
    torch.save(got, capture_dir / f"got{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_broadcast_state_sends_every_dtype_and_structure(tmp_path):
    run_ranks(_broadcast_rank, (tmp_path,))
    sent, got = torch.load(tmp_path / "got0.pt"), torch.load(tmp_path / "got1.pt")
    assert got["d"] == "text" and got["c"]["step"] == 5 and isinstance(got["b"], list)
    for a, b in ((sent["a"], got["a"]), (sent["b"][0], got["b"][0]), (sent["b"][1], got["b"][1]),
                 (sent["c"]["rng"], got["c"]["rng"])):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.slow
def test_ranks_with_different_run_dirs_resume_from_rank_zeros_step(tmp_path):
    """Node-local run.out_dir: rank 0's holds latest.pt at step 3, rank 1's is empty. Both must start
    at step 3 with the same weights and optimiser state (before: rank 1 started at 0 and the ranks
    hung in mismatched collectives; with only DDP's weight broadcast, its Adam moments would differ)."""
    local0, local1 = tmp_path / "node0", tmp_path / "node1"
    train(cfg_for(local0, 4, 3, "run.checkpoint_every=3"))
    single = tmp_path / "single"
    shutil.copytree(local0, single)
    train(cfg_for(single, 4, 5))  # the uninterrupted reference of the resumed part
    common = ("run.checkpoint_every=5", "run.dist_timeout_s=60")
    cfgs = [cfg_for(local0, 2, 5, *common), cfg_for(local1, 2, 5, *common)]
    run_ranks(_train_rank, (cfgs, tmp_path, -1, -1))
    assert not list(tmp_path.glob("error*.txt")), [p.read_text() for p in tmp_path.glob("error*.txt")]
    assert [(tmp_path / f"start{r}.txt").read_text() for r in (0, 1)] == ["3", "3"]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # same moments: no drift
    assert [losses(local0)[s] for s in (4, 5)] == pytest.approx([losses(single)[s] for s in (4, 5)], rel=1e-4)


def test_rank_zero_failing_to_read_its_checkpoint_fails_every_rank(tmp_path):
    bad = tmp_path / "latest.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="latest.pt"):
        resume_state(bad, DistEnv(), load_checkpoint)
    assert resume_state(tmp_path / "missing.pt", DistEnv(), load_checkpoint) is None


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_with_the_divergence_message(tmp_path):
    cfgs = [cfg_for(tmp_path / "run", 2, 4, "run.dist_timeout_s=120", "run.checkpoint_every=4")] * 2
    run_ranks(_train_rank, (cfgs, tmp_path, 1, 1))  # rank 1's loss is NaN at step index 1 (step 2)
    errors = [(tmp_path / f"error{r}.txt").read_text() for r in (0, 1)]
    for error in errors:  # before: rank 0 died in the next all-reduce (a gloo error or timeout)
        assert error.startswith("TrainingDiverged: the loss became NaN or infinite at step 2"), error


# ---------------------------------------------------------------------------------------------
# device choice and the process group (mocked torch.cuda)


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda with `count` GPUs, recording set_device and init_process_group calls."""
    calls = {"set_device": [], "init": [], "count": 1}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: calls["count"])
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls["set_device"].append(device))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls["init"].append(kwargs))
    return calls


@pytest.mark.parametrize(("count", "local_rank", "expected"), [(1, 3, 0), (8, 3, 3), (8, 11, 3), (4, 0, 0)])
def test_each_rank_takes_gpu_local_rank_modulo_the_visible_count(fake_cuda, monkeypatch, count, local_rank, expected):
    fake_cuda["count"] = count
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    env = setup("auto", timeout_s=42)
    assert env.device == torch.device("cuda", expected) and fake_cuda["set_device"] == [env.device]
    (init,) = fake_cuda["init"]
    assert init["backend"] == "nccl" and init["device_id"] == env.device
    assert init["timeout"] == timedelta(seconds=42)


def test_cuda_n_under_torchrun_is_refused_and_allowed_alone(fake_cuda):
    fake_cuda["count"] = 8
    with pytest.raises(ValueError, match="every rank on GPU 2; use cuda"):
        rank_device("cuda:2", local_rank=1, world_size=8)
    assert rank_device("cuda:2", local_rank=0, world_size=1) == torch.device("cuda:2")
    assert rank_device("cpu", 3, 8) == torch.device("cpu")


def test_pretrain_on_cuda_n_under_torchrun_is_a_one_line_error(fake_cuda, monkeypatch, tmp_path, capsys):
    from vjepa.cli import main

    fake_cuda["count"] = 8
    for key, value in {"WORLD_SIZE": "8", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    code = main(["pretrain", "--preset", "debug", f"run.out_dir={tmp_path}", "run.device=cuda:1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "device cuda:1 under torchrun (8 processes) would put every rank on GPU 1; use cuda" in err
    assert fake_cuda["init"] == []  # refused before any rendezvous


def test_cuda_without_a_gpu_is_an_error_not_a_silent_cpu_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no usable CUDA device"):
        rank_device("cuda", 0, 1)
    assert rank_device("auto", 0, 1) == torch.device("cpu")


def test_train_passes_the_configured_timeout_and_bf16_gathering(tmp_path, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake_setup(device_name, timeout_s):
        seen["timeout_s"] = timeout_s
        return DistEnv()

    def fake_wrap(model, env, strategy, param_dtype=None):
        seen["param_dtype"] = param_dtype
        raise Stop

    monkeypatch.setattr(dist_utils, "setup", fake_setup)
    monkeypatch.setattr(dist_utils, "wrap", fake_wrap)
    with pytest.raises(Stop):
        train(cfg_for(tmp_path, 2, 1, "run.dist_timeout_s=77", "run.dtype=bf16"))
    assert seen == {"timeout_s": 77.0, "param_dtype": torch.bfloat16}
    with pytest.raises(Exception, match="run.dist_timeout_s"):
        validate(cfg_for(tmp_path, 2, 1, "run.dist_timeout_s=0"))


def test_fsdp_gathers_in_the_run_dtype_and_keeps_the_encoder_gathered(monkeypatch):
    from torch.distributed import device_mesh, fsdp

    from vjepa.config import preset
    from vjepa.jepa import JEPA
    from vjepa.masks import num_generators

    calls = []
    monkeypatch.setattr(device_mesh, "init_device_mesh", lambda *args, **kwargs: "mesh")
    monkeypatch.setattr(fsdp, "fully_shard", lambda module, mesh, **kwargs: calls.append((module, kwargs)))
    monkeypatch.setattr(fsdp, "register_fsdp_forward_method", lambda *args: None)
    cfg = preset("debug")
    model = JEPA(cfg, num_generators(cfg.mask))
    dist_utils.wrap(model, DistEnv(0, 2), "fsdp", torch.bfloat16)
    policies = [kwargs["mp_policy"] for _, kwargs in calls]
    assert policies and all(p.param_dtype == torch.bfloat16 and p.reduce_dtype == torch.float32 for p in policies)
    # the encoder (run once per mask generator, then backward) stays gathered; the others reshard
    kept = [module for module, kwargs in calls if kwargs.get("reshard_after_forward") is False]
    assert kept == [*model.encoder.blocks, model.encoder]


# ---------------------------------------------------------------------------------------------
# checkpoints: one write per save, every generator, mmap


def test_a_keep_step_writes_the_checkpoint_once(tmp_path, monkeypatch):
    saves = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (saves.append(str(f)), real_save(obj, f, *a, **k)))
    train(cfg_for(tmp_path, 2, 2, "run.checkpoint_every=2", "run.keep_every=2"))
    assert len(saves) == 1  # before: latest.pt and step_2.pt were each serialised
    assert os.path.samefile(tmp_path / "latest.pt", tmp_path / "step_2.pt")
    train(cfg_for(tmp_path, 2, 3, "run.checkpoint_every=2", "run.keep_every=2"))  # latest.pt moves on
    assert load_checkpoint(tmp_path / "step_2.pt")["step"] == 2 and load_checkpoint(tmp_path / "latest.pt")["step"] == 3


def test_keep_falls_back_to_a_copy_without_hard_links(tmp_path, monkeypatch):
    def no_links(*args):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    save_checkpoint(tmp_path / "latest.pt", {"step": 4}, keep=tmp_path / "step_4.pt")
    assert not os.path.samefile(tmp_path / "latest.pt", tmp_path / "step_4.pt")
    assert load_checkpoint(tmp_path / "latest.pt") == load_checkpoint(tmp_path / "step_4.pt") == {"step": 4}


def test_drop_path_run_resumes_bit_for_bit_on_cpu(tmp_path, monkeypatch, interrupt_at):
    """Drop path draws from the global generator; without its state in the checkpoint the resumed
    steps drew other numbers than the uninterrupted run."""
    extra = ("model.drop_path=0.5", "run.checkpoint_every=2")
    train(cfg_for(tmp_path / "whole", 2, 4, *extra))
    interrupt_at(2)  # after the step-2 checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tmp_path / "split", 2, 4, *extra))
    monkeypatch.undo()
    train(cfg_for(tmp_path / "split", 2, 4, *extra))
    whole, split = losses(tmp_path / "whole"), losses(tmp_path / "split")
    assert [split[s] for s in range(1, 5)] == [whole[s] for s in range(1, 5)]
    assert set(load_checkpoint(tmp_path / "split" / "latest.pt")["rng"]) == {"cpu"}


def test_the_cuda_generator_is_saved_and_restored_on_a_gpu(monkeypatch):
    saved, restored = torch.tensor([1, 2, 3], dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    gpu = torch.device("cuda", 3)
    state = dist_utils.rng_state(gpu)
    assert state["cuda"] is saved and torch.equal(state["cpu"], torch.get_rng_state())
    dist_utils.set_rng_state(state, gpu)
    assert restored == [(saved, gpu)]
    dist_utils.set_rng_state(state, torch.device("cpu"))  # a CPU resume of a GPU run ignores it
    assert len(restored) == 1


def test_resume_loads_checkpoints_memory_mapped(tmp_path, monkeypatch):
    train(cfg_for(tmp_path, 2, 1))
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (calls.append(k.get("mmap")), real_load(*a, **k))[1])
    train(cfg_for(tmp_path, 2, 2))
    assert calls[0] is True
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)  # cannot be mapped
    assert torch.equal(load_checkpoint(legacy, mmap=True)["w"], torch.ones(2))  # so it is read as usual


# ---------------------------------------------------------------------------------------------
# crawl items: data loader, optimiser, TF32


def test_auto_workers_come_from_the_cpus_per_gpu(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert resolve_workers(-1, "cuda") == 7 and resolve_workers(-1, "cpu") == 0 and resolve_workers(3, "cuda") == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_workers(-1, "cuda:0") == 8  # capped
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert resolve_workers(-1, "cuda") == 0


def test_the_cuda_loader_pins_memory_and_keeps_its_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = cfg_for(tmp_path, 2, 1)
    loader, _ = build_train_loader(cfg, 0, 0, 1, torch.device("cuda", 0))
    assert loader.num_workers == 8 and loader.pin_memory and loader.persistent_workers
    loader, _ = build_train_loader(cfg, 0, 0, 1, "cpu")
    assert loader.num_workers == 0 and not loader.pin_memory


def test_adamw_is_fused_on_cuda_only():
    encoder, predictor = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optim = cfg_for("x", 1, 1).optim
    assert build_optimizer(encoder, predictor, optim, torch.device("cuda", 0)).defaults["fused"] is True
    assert not build_optimizer(encoder, predictor, optim, torch.device("cpu")).defaults["fused"]


def test_tf32_is_allowed_on_cuda_only():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        assert not allow_tf32("cpu") and not torch.backends.cuda.matmul.allow_tf32
        assert allow_tf32("cuda:0") and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_config_keys_of_this_issue_validate(tmp_path):
    cfg = apply_overrides(cfg_for(tmp_path, 1, 1), ["data.num_workers=-1", "run.dist_timeout_s=5"])
    assert validate(cfg).data.num_workers == -1


# ---------------------------------------------------------------------------------------------
# HSDP: a 2-D mesh


def test_hsdp_mesh_is_nodes_by_ranks_per_node(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert dist_utils.mesh_shape(DistEnv(0, 32), "hsdp") == (4, 8)
    assert dist_utils.mesh_shape(DistEnv(0, 32), "fsdp") == (32,)
    with pytest.raises(ValueError, match="multiple of the ranks per node"):
        dist_utils.mesh_shape(DistEnv(0, 12), "hsdp")


@pytest.mark.slow
def test_hsdp_replicated_over_two_nodes_trains_like_one_process(tmp_path, monkeypatch):
    """Two "nodes" of one rank each (LOCAL_WORLD_SIZE=1): mesh (2, 1), gradients all-reduced across
    the replicate dimension; the losses and the full checkpoint match one process with batch 4."""
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # inherited by the spawned ranks
    single, run = tmp_path / "single", tmp_path / "run"
    train(cfg_for(single, 4, 3))
    cfgs = [cfg_for(run, 2, 3, "run.distributed=hsdp", "run.dist_timeout_s=60")] * 2
    run_ranks(_train_rank, (cfgs, tmp_path, -1, -1))
    assert not list(tmp_path.glob("error*.txt")), [p.read_text() for p in tmp_path.glob("error*.txt")]
    assert [losses(run)[s] for s in (1, 2, 3)] == pytest.approx([losses(single)[s] for s in (1, 2, 3)], rel=1e-4)
    a, b = load_checkpoint(single / "latest.pt"), load_checkpoint(run / "latest.pt")
    assert all(torch.allclose(a["encoder"][k], b["encoder"][k], atol=1e-4) for k in a["encoder"])


# ---------------------------------------------------------------------------------------------
# checkpoints written in the background (run.async_checkpoint)


def test_async_checkpoint_writes_the_saved_step_while_training_goes_on(tmp_path, monkeypatch):
    """The step-2 write is held until step 3 has updated the weights in place: the file must still
    hold step 2's state (a CPU copy was taken), equal to what an in-line save writes."""
    import vjepa.checkpoint as checkpoint_module
    import vjepa.train as train_module

    extra = ("run.checkpoint_every=2", "run.keep_every=2")
    train(cfg_for(tmp_path / "inline", 2, 4, *extra))
    stepped, waited = threading.Event(), []
    real_save, real_step = checkpoint_module.save_checkpoint, train_module.train_step

    def held_save(path, state, keep=None):
        if keep is not None and keep.name == "step_2.pt":
            waited.append(stepped.wait(timeout=60))  # False if the training thread were blocked here
        real_save(path, state, keep)

    def step(model, optimizer, video, masks, index, *rest):
        result = real_step(model, optimizer, video, masks, index, *rest)
        if index == 2:
            stepped.set()
        return result

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", held_save)
    monkeypatch.setattr(train_module, "train_step", step)
    train(cfg_for(tmp_path / "async", 2, 4, *extra, "run.async_checkpoint=true"))
    assert waited == [True]
    for name in ("step_2.pt", "step_4.pt"):
        a, b = load_checkpoint(tmp_path / "inline" / name), load_checkpoint(tmp_path / "async" / name)
        assert all(torch.equal(a["encoder"][k], b["encoder"][k]) for k in a["encoder"])
        assert all(torch.equal(a["opt"]["state"][i]["exp_avg"], b["opt"]["state"][i]["exp_avg"]) for i in a["opt"]["state"])


def test_a_failed_background_write_stops_the_run_with_its_storage_error(tmp_path, monkeypatch):
    import errno

    from vjepa.checkpoint import StorageError

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(StorageError, match="no space left on device writing .*latest.pt"):
        train(cfg_for(tmp_path, 2, 4, "run.checkpoint_every=2", "run.async_checkpoint=true"))
