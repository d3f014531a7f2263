"""Foreign weight layouts: official V-JEPA 1 / V-JEPA 2 checkpoints and Hugging Face `transformers` V-JEPA 2 models.

Our state-dict names are the official facebookresearch/jepa and vjepa2 names (below their `module.` /
`module.backbone.` prefixes), so official files need only prefix stripping (`strip_prefixes`,
`split_networks`), the architecture read off the tensor shapes (`infer_model_config`), plus the checks here: which position scheme a file uses, and that its networks agree with each other.
Hugging Face files (`VJEPA2Model`, `VJEPA2ForVideoClassification`: config.json + model.safetensors)
use other names and split q/k/v; `hf_to_networks` / `networks_to_hf` map both ways. `read_weights`
reads any supported file (a run directory, our checkpoints and exports, official and Hugging Face
files, a preset name) into (config, networks) without building a model: the one reader behind
`vjepa.load`, `model.init_from` and fine-tuning.

Shapes: D encoder width, P predictor width, M mask tokens.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from vjepa.checkpoint import CheckpointError, load_checkpoint, load_safetensors, read_safetensors_metadata
from vjepa.config import ENCODER_SIZES, PRESETS, Config, ModelConfig, config_from_stored, preset
from vjepa.models.pos_embed import sincos_3d

ENCODER_NETWORK_NAMES = ("encoder", "target_encoder")
V2_IMG_SIZES = (256, 384)  # V-JEPA 2 releases; no V-JEPA 1 release used 256 px


# ---------------------------------------------------------------------------------------------
# structure checks (official and our checkpoints)


def numbered(state: dict[str, torch.Tensor], prefix: str, where: str) -> int:
    """Count `prefix{i}` entries (blocks, mask tokens) and require them numbered 0..n-1.

    Raises:
        CheckpointError: naming `where` (file and network) and the missing numbers.
    """
    numbers = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    missing = sorted(set(range(max(numbers) + 1)) - numbers) if numbers else []
    if missing:
        raise CheckpointError(f"{where}: {prefix}N are numbered {sorted(numbers)}; missing "
                              + ", ".join(f"{prefix}{i}" for i in missing))
    return len(numbers)


def block_width(state: dict[str, torch.Tensor], prefix: str, where: str) -> int:
    """The MLP hidden width shared by every block's `{prefix}N.mlp.fc1.weight`.

    Raises:
        CheckpointError: when blocks disagree, naming the odd keys (not the majority's) and `where`.
    """
    shapes = {k: tuple(v.shape) for k, v in state.items() if k.startswith(prefix) and k.endswith(".mlp.fc1.weight")}
    if not shapes:
        raise CheckpointError(f"{where}: no {prefix}N.mlp.fc1.weight")
    counts = Counter(shapes.values()).most_common()
    if len(counts) > 1:
        common, n = counts[0]
        if n == counts[1][1]:  # no majority: name every block's shape
            listed = ", ".join(f"{k} {s}" for k, s in sorted(shapes.items()))
            raise CheckpointError(f"{where}: the blocks' MLP shapes disagree: {listed}")
        odd = [f"{k} {s}" for k, s in sorted(shapes.items()) if s != common]
        raise CheckpointError(f"{where}: {', '.join(odd)} differ from the other blocks' {common}")
    return int(counts[0][0][0])


def check_encoders_agree(networks: dict[str, dict[str, torch.Tensor]], source: str) -> None:
    """The online and target encoders of one file must have the same keys and shapes.

    The architecture is read from one of them; this catches a target encoder missing a block (which
    would otherwise build a shallower model) or any other one-sided damage, naming the keys.
    """
    present = [n for n in ENCODER_NETWORK_NAMES if networks.get(n)]
    if len(present) < 2:
        return
    (a, sa), (b, sb) = ((n, networks[n]) for n in present)
    problems = []
    for one, other, s1, s2 in ((a, b, sa, sb), (b, a, sb, sa)):
        only = sorted(set(s1) - set(s2))
        if only:
            problems.append(f"{one} has keys {other} lacks: {', '.join(only[:8])}" + (" ..." if len(only) > 8 else ""))
    shapes = [f"{k} {tuple(sa[k].shape)} vs {tuple(sb[k].shape)}" for k in sorted(set(sa) & set(sb))
              if sa[k].shape != sb[k].shape]
    if shapes:
        problems.append(f"shapes differ ({a} vs {b}): {', '.join(shapes[:8])}")
    if problems:
        raise CheckpointError(f"{source}: [{a}] and [{b}] disagree: " + "; ".join(problems))


def mask_token_count(state: dict[str, torch.Tensor], where: str, expected: int | None = None) -> int:
    """Number of predictor mask tokens, numbered without gaps and as many as the run used.

    Args:
        expected: tokens the run trained (`vjepa.masks.num_mask_tokens` of a stored config); None for
            official files, where fewer than 2 is refused (V-JEPA 1 stores 2, V-JEPA 2 stores 10).
    """
    count = numbered(state, "mask_tokens.", where)
    wrong = count != expected if expected is not None else count < 2
    if wrong:
        wanted = f"exactly {expected} (as the run's config says)" if expected is not None else "at least 2"
        raise CheckpointError(f"{where}: {count} mask token(s) (mask_tokens.0..{count - 1}), expected {wanted}"
                              + (f": missing mask_tokens.{count}?" if expected is None or count < expected else ""))
    return count


def detect_pos_embed(networks: dict[str, dict[str, torch.Tensor]], img_size: int | None, hint: str | None) -> str:
    """Which position scheme a file without a config uses: "rope" (V-JEPA 2) or "sincos" (V-JEPA 1).

    Shapes cannot tell: released V-JEPA 2 files still carry a (unused) `pos_embed`. The signs read:
    an encoder without `pos_embed` (saved by the current official code), a predictor with more than 2
    mask tokens (V-JEPA 2 stores 10), or a 256 px clip (`img_size`, only V-JEPA 2 released it).
    """
    if hint is not None:
        return hint
    encoder = next((networks[n] for n in ("target_encoder", "encoder") if networks.get(n)), {})
    predictor = networks.get("predictor") or {}
    tokens = sum(1 for k in predictor if k.startswith("mask_tokens."))
    if "pos_embed" not in encoder or tokens > 2 or img_size == 256:
        return "rope"
    return "sincos"


def drop_unused_tables(networks: dict[str, dict[str, torch.Tensor]]) -> list[str]:
    """Remove the sin-cos tables RoPE files carry but never use; returns the removed 'network.key' names."""
    dropped = []
    for name, state in networks.items():
        for key in ("pos_embed", "predictor_pos_embed"):
            if key in state:
                del state[key]
                dropped.append(f"{name}.{key}")
    return dropped


# ---------------------------------------------------------------------------------------------
# official facebookresearch/jepa checkpoints
#
# `app/vjepa/train.py` saves {encoder, predictor, target_encoder, opt, scaler, epoch, loss, ...}, each
# network's keys prefixed by the DDP and multi-mask wrappers: `module.backbone.blocks.0.attn.qkv.weight`.
# Below the prefixes the names are ours (`vit.py` and `predictor.py` keep the official names), so
# importing is: strip the prefixes, read the architecture off the tensor shapes, load strictly.

NETWORKS = ("encoder", "target_encoder", "predictor")
WRAPPER_PREFIXES = ("module.", "backbone.", "_orig_mod.")  # DDP, MultiMaskWrapper, torch.compile


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (`module.`, `backbone.`, `_orig_mod.`, in any order) from every key."""
    stripped = {}
    for key, value in state.items():
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if name in stripped:
            raise CheckpointError(f"keys {key!r} and another both become {name!r} without wrapper prefixes")
        stripped[name] = value
    return stripped


def split_networks(state: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The network state dicts in a loaded checkpoint, prefixes stripped.

    A dict with `encoder` / `target_encoder` / `predictor` entries (ours or the official layout)
    gives those entries (empty or None ones are left out); a bare state dict (tensor values only,
    e.g. `torch.save(model.state_dict())`) is taken as an `encoder`.

    Raises:
        CheckpointError: when the dict holds neither.
    """
    networks = {name: state[name] for name in NETWORKS if isinstance(state.get(name), dict) and state[name]}
    if networks:
        return {name: strip_prefixes(sub) for name, sub in networks.items()}
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return {"encoder": strip_prefixes(state)}
    raise CheckpointError(
        f"no network weights found: expected entries {', '.join(NETWORKS)} or a bare state dict, "
        f"got keys {sorted(state)[:12]}"
    )


def _grid_candidates(num_tokens: int, tubelet: int, patch: int) -> list[tuple[int, int]]:
    """Every (num_frames, img_size) whose square token grid has `num_tokens` tokens."""
    found = []
    for steps in range(1, num_tokens + 1):
        if num_tokens % steps == 0:
            side = math.isqrt(num_tokens // steps)
            if side * side == num_tokens // steps:
                found.append((steps * tubelet, side * patch))
    return found


def infer_clip_size(
    pos_embed: torch.Tensor,
    tubelet: int,
    patch: int,
    num_frames: int | None = None,
    img_size: int | None = None,
) -> tuple[int, int, bool | None]:
    """Find the clip size a position table was built for.

    A fixed sin-cos table fixes its grid: the candidate grids with the right number of tokens are
    rebuilt and compared with the stored one, so the answer is exact for official checkpoints. A
    table that matches none (learned positions) falls back to 16 frames, the official clip length.

    Args:
        pos_embed: the stored table [1, N, D].
        tubelet, patch: frames and pixels per token side.
        num_frames, img_size: known values (restrict the candidates); None to infer.

    Returns:
        (num_frames, img_size, uniform_power), uniform_power None when no sin-cos table matched.

    Raises:
        CheckpointError: when no square grid with the given sizes has N tokens.
    """
    num_tokens, dim = pos_embed.shape[-2:]
    candidates = [
        (frames, size)
        for frames, size in _grid_candidates(num_tokens, tubelet, patch)
        if num_frames in (None, frames) and img_size in (None, size)
    ]
    if not candidates:
        options = ", ".join(f"{f}x{s}x{s}" for f, s in _grid_candidates(num_tokens, tubelet, patch))
        raise CheckpointError(
            f"pos_embed has {num_tokens} tokens, which no clip of num_frames={num_frames}, "
            f"img_size={img_size} gives (tubelet {tubelet}, patch {patch}); possible clips: {options}"
        )
    stored = pos_embed.reshape(num_tokens, dim).float()
    for frames, size in candidates:
        for uniform_power in (True, False):
            table = sincos_3d(dim, size // patch, frames // tubelet, uniform_power)
            if torch.allclose(table, stored, atol=1e-4):
                return frames, size, uniform_power
    frames, size = min(candidates, key=lambda c: (c[0] != 16, abs(c[0] - 16)))
    return frames, size, None


def infer_model_config(
    networks: dict[str, dict[str, torch.Tensor]],
    num_frames: int | None = None,
    img_size: int | None = None,
    num_heads: int | None = None,
    source: str = "checkpoint",
    pos_embed: str | None = None,
) -> Config:
    """Build a `Config` whose model matches checkpoint tensors (official or ours), from shapes alone.

    Reads: embed_dim, in_chans, tubelet and patch from `patch_embed.proj.weight` [D, C, t, p, p];
    depth from the number of `blocks.N`; MLP ratio from `blocks.0.mlp.fc1.weight`; num_heads from
    the official size table by width (tiny 192/3, small 384/6, base 768/12, large 1024/16, huge
    1280/16, giant 1408/16, or 22 heads for a V-JEPA 2 ViT-g); RoPE or sin-cos (`detect_pos_embed`); num_frames and img_size from `pos_embed` (see `infer_clip_size`); the
    predictor's width and depth from `predictor_embed.weight` and `predictor_blocks.N`.

    Args:
        networks: from `split_networks`.
        num_frames, img_size, num_heads: overrides for what the shapes cannot tell.
        source: the file, named in errors.
        pos_embed: "sincos" or "rope" if known; else detected (`detect_pos_embed`).

    Returns:
        A `vjepa.config.Config` (data.num_frames / crop_size set to the clip size, the rest default).

    Raises:
        CheckpointError: naming what is missing or ambiguous (e.g. an unknown width without num_heads).
    """
    check_encoders_agree(networks, source)  # the architecture is read from one: the other must agree
    name = "target_encoder" if networks.get("target_encoder") else "encoder"
    encoder = networks.get(name) or {}
    cfg = Config()
    m = cfg.model
    m.embed_dim, m.in_chans, m.tubelet_size, m.patch_size = (int(s) for s in _patch_weight(encoder).shape[:4])
    where = f"{source} [{name}]"
    m.depth = numbered(encoder, "blocks.", where)
    m.mlp_ratio = block_width(encoder, "blocks.", where) / m.embed_dim
    seen_size = img_size
    if "pos_embed" in encoder and img_size is None:  # a table built for 256 px marks V-JEPA 2
        seen_size = infer_clip_size(encoder["pos_embed"], m.tubelet_size, m.patch_size, num_frames, None)[1]
    m.pos_embed = detect_pos_embed(networks, seen_size, pos_embed)
    m.num_heads = _official_num_heads(m.embed_dim, m.pos_embed == "rope", num_heads)
    _set_clip_size(cfg, encoder, num_frames, img_size)
    if m.pos_embed == "rope":  # no table to lay out: V-JEPA 2's setting (as `hf_model_config`), so
        m.uniform_power = False  # a file and its Hugging Face export read as the same architecture
    _set_predictor_shape(m, networks.get("predictor"), source)
    return cfg


def _patch_weight(encoder: dict[str, torch.Tensor]) -> torch.Tensor:
    """The tubelet embedding's weight [D, C, tubelet, patch, patch], or a CheckpointError saying why not."""
    if "patch_embed.proj.weight" not in encoder:
        raise CheckpointError("cannot infer the architecture: no encoder with a patch_embed.proj.weight")
    weight = encoder["patch_embed.proj.weight"]
    if weight.ndim != 5:
        raise CheckpointError(
            f"patch_embed.proj.weight has shape {tuple(weight.shape)}; a video encoder's is 5-D "
            "[D, C, tubelet, patch, patch] (image checkpoints such as I-JEPA are not supported)"
        )
    return weight


def _official_num_heads(embed_dim: int, rope: bool, num_heads: int | None) -> int:
    """`num_heads` if given, else the official size table's heads for this width (CheckpointError if none)."""
    heads_by_width = {width: heads for size, (width, _, heads) in ENCODER_SIZES.items() if not size.endswith("_v2")}
    if rope:
        heads_by_width[ENCODER_SIZES["giant_v2"][0]] = ENCODER_SIZES["giant_v2"][2]  # released ViT-g: 22 heads
    heads = num_heads or heads_by_width.get(embed_dim, 0)
    if not heads:
        raise CheckpointError(
            f"embed_dim {embed_dim} is not an official ViT width ({sorted(heads_by_width)}): pass num_heads"
        )
    return heads


def _set_clip_size(cfg: Config, encoder: dict[str, torch.Tensor], num_frames: int | None, img_size: int | None) -> None:
    """Set the model's and the data's clip size (and the table layout) from the encoder's `pos_embed`."""
    m = cfg.model
    rope = m.pos_embed == "rope"
    if "pos_embed" in encoder:
        if rope and img_size is None:  # the unused table of a V-JEPA 2 file: try its release sizes first
            for size in (256, 384):
                try:
                    num_frames, img_size, _ = infer_clip_size(encoder["pos_embed"], m.tubelet_size, m.patch_size,
                                                              num_frames, size)
                    break
                except CheckpointError:
                    continue
        num_frames, img_size, uniform = infer_clip_size(
            encoder["pos_embed"], m.tubelet_size, m.patch_size, num_frames, img_size
        )
        m.uniform_power = m.uniform_power if uniform is None else uniform
    m.num_frames, m.img_size = num_frames or 16, img_size or (256 if rope else 224)
    cfg.data.num_frames, cfg.data.crop_size = m.num_frames, m.img_size


def _set_predictor_shape(m: ModelConfig, predictor: dict[str, torch.Tensor] | None, source: str) -> None:
    """Set the predictor's width, depth, MLP ratio and heads from its weights, if any."""
    if predictor and "predictor_embed.weight" in predictor:
        m.predictor_embed_dim = int(predictor["predictor_embed.weight"].shape[0])
        m.predictor_depth = numbered(predictor, "predictor_blocks.", f"{source} [predictor]")
        m.predictor_mlp_ratio = block_width(predictor, "predictor_blocks.", f"{source} [predictor]") / m.predictor_embed_dim
        m.predictor_num_heads = 12 if m.pos_embed == "rope" else 0  # V-JEPA 2's predictor: 12 heads; V-JEPA 1: the encoder's
        m.predictor_num_mask_tokens = numbered(predictor, "mask_tokens.", f"{source} [predictor]")  # V-JEPA 2: 10


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers (VJEPA2Model / VJEPA2ForVideoClassification)

_HF_BLOCK = {  # ours (below blocks.i.) <- HF (below layer.i.), except the split q/k/v
    "norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
_HF_POOLER_SELF = {  # official AttentivePooler `blocks.i.` <- HF `self_attention_layers.i.`
    "norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj", "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_POOLER_CROSS = {  # official `cross_attention_block.` <- HF `cross_attention_layer.`
    "norm1": "layer_norm1", "norm2": "layer_norm2", "xattn.q": "cross_attn.q_proj", "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def is_hf(path: str | Path) -> bool:
    """A Hugging Face V-JEPA 2 folder (config.json with model_type vjepa2) or a .safetensors in one."""
    path = Path(path)
    if not path.is_dir() and path.suffix != ".safetensors":
        return False
    config = (path if path.is_dir() else path.parent) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "vjepa2"
    except (OSError, ValueError):
        return False


def read_hf(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """Read a local Hugging Face V-JEPA 2 model: (config.json dict, tensors, weights file)."""
    from safetensors.torch import load_file

    path = Path(path)
    weights = path / "model.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise CheckpointError(f"{path}: no model.safetensors (sharded or .bin Hugging Face files are not supported)")
    config = json.loads((weights.parent / "config.json").read_text())
    return config, load_file(str(weights)), str(weights)


def _take(tensors: dict[str, torch.Tensor], key: str, used: set[str], where: str) -> torch.Tensor:
    if key not in tensors:
        raise CheckpointError(f"{where}: missing key {key}")
    used.add(key)
    return tensors[key]


def _map_blocks(tensors, src: str, dst: str, names: dict[str, str], count: int, used, where, qkv: tuple[str, ...]):
    """HF blocks `{src}{i}.` -> ours `{dst}{i}.` (weights and biases), q/k/v concatenated into one."""
    out = {}
    for i in range(count):
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{i}.{ours}.{kind}"] = _take(tensors, f"{src}{i}.{theirs}.{kind}", used, where)
        if qkv:
            fused = qkv[0]
            for kind in ("weight", "bias"):
                parts = [_take(tensors, f"{src}{i}.{p}.{kind}", used, where) for p in qkv[1:]]
                out[f"{dst}{i}.{fused}.{kind}"] = torch.cat(parts, dim=0)
    return out


_HF_QKV = ("attn.qkv", "attention.query", "attention.key", "attention.value")  # our fused key, HF's parts


def _hf_encoder(sub: dict[str, torch.Tensor], config: dict[str, Any], used: set[str], where: str) -> dict[str, torch.Tensor]:
    """Our encoder state dict from a Hugging Face `VJEPA2Model`'s `encoder.*` tensors (adds the keys
    it reads to `used`)."""
    enc = {
        "patch_embed.proj.weight": _take(sub, "encoder.embeddings.patch_embeddings.proj.weight", used, where),
        "patch_embed.proj.bias": _take(sub, "encoder.embeddings.patch_embeddings.proj.bias", used, where),
        "norm.weight": _take(sub, "encoder.layernorm.weight", used, where),
        "norm.bias": _take(sub, "encoder.layernorm.bias", used, where),
    }
    enc.update(_map_blocks(sub, "encoder.layer.", "blocks.", _HF_BLOCK, config["num_hidden_layers"], used, where,
                           _HF_QKV))
    return enc


def _hf_predictor(sub: dict[str, torch.Tensor], config: dict[str, Any], used: set[str], where: str) -> dict[str, torch.Tensor]:
    """Our predictor state dict from a Hugging Face `VJEPA2Model`'s `predictor.*` tensors (adds the
    keys it reads to `used`); its stacked mask tokens [M, 1, 1, P] become `mask_tokens.i`."""
    tokens = _take(sub, "predictor.embeddings.mask_tokens", used, where)  # [M, 1, 1, P]
    pred = {f"mask_tokens.{i}": t for i, t in enumerate(tokens.unbind(0))}
    for ours, theirs in (("predictor_embed", "predictor.embeddings.predictor_embeddings"),
                         ("predictor_norm", "predictor.layernorm"), ("predictor_proj", "predictor.proj")):
        for kind in ("weight", "bias"):
            pred[f"{ours}.{kind}"] = _take(sub, f"{theirs}.{kind}", used, where)
    pred.update(_map_blocks(sub, "predictor.layer.", "predictor_blocks.", _HF_BLOCK,
                            config["pred_num_hidden_layers"], used, where, _HF_QKV))
    return pred


def _hf_probe(tensors: dict[str, torch.Tensor], config: dict[str, Any], used: set[str], where: str) -> dict[str, torch.Tensor]:
    """The official `AttentiveClassifier` state of a `VJEPA2ForVideoClassification`'s pooler and
    classifier (adds the keys it reads to `used`); the cross-attention's k and v fuse into `xattn.kv`."""
    probe = {"pooler.query_tokens": _take(tensors, "pooler.query_tokens", used, where)}
    probe.update(_map_blocks(tensors, "pooler.self_attention_layers.", "pooler.blocks.", _HF_POOLER_SELF,
                             config.get("num_pooler_layers", 3), used, where,
                             ("attn.qkv", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")))
    for ours, theirs in _HF_POOLER_CROSS.items():
        for kind in ("weight", "bias"):
            probe[f"pooler.cross_attention_block.{ours}.{kind}"] = _take(
                tensors, f"pooler.cross_attention_layer.{theirs}.{kind}", used, where)
    for kind in ("weight", "bias"):
        probe[f"pooler.cross_attention_block.xattn.kv.{kind}"] = torch.cat(
            [_take(tensors, f"pooler.cross_attention_layer.cross_attn.{p}.{kind}", used, where)
             for p in ("k_proj", "v_proj")])
        probe[f"linear.{kind}"] = _take(tensors, f"classifier.{kind}", used, where)
    return probe


def hf_to_networks(config: dict[str, Any], tensors: dict[str, torch.Tensor], where: str):
    """Map a Hugging Face V-JEPA 2 state dict to our networks.

    Returns:
        ({"encoder": ..., "predictor": ...}, probe state or None). The classifier's pooler is given in
        the official `AttentiveClassifier` layout (`pooler.query_tokens`, `pooler.blocks.i.*` for its
        self-attention layers, `pooler.cross_attention_block.*`, `linear.*`).

    Raises:
        CheckpointError: naming any key the mapping did not use or could not find.
    """
    prefix = "vjepa2." if any(k.startswith("vjepa2.") for k in tensors) else ""
    sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    used: set[str] = set()
    networks = {"encoder": _hf_encoder(sub, config, used, where)}
    if any(k.startswith("predictor.") for k in sub):
        networks["predictor"] = _hf_predictor(sub, config, used, where)
    probe = None
    if prefix:  # VJEPA2ForVideoClassification: pooler + classifier beside the model
        used = {prefix + k for k in used}
        probe = _hf_probe(tensors, config, used, where)
    unused = sorted(set(tensors) - used)
    if unused:
        raise CheckpointError(f"{where}: keys not understood as a V-JEPA 2 model: {', '.join(unused[:12])}")
    return networks, probe


def hf_model_config(config: dict[str, Any]):
    """Our `Config` for a Hugging Face V-JEPA 2 config.json (RoPE, sizes, clip size)."""
    from vjepa.config import Config

    cfg = Config()
    m = cfg.model
    m.pos_embed, m.uniform_power = "rope", False
    m.embed_dim, m.depth, m.num_heads = config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]
    m.mlp_ratio, m.patch_size, m.tubelet_size = config["mlp_ratio"], config["patch_size"], config["tubelet_size"]
    m.in_chans, m.img_size, m.num_frames = config.get("in_chans", 3), config["crop_size"], config["frames_per_clip"]
    m.predictor_embed_dim, m.predictor_depth = config["pred_hidden_size"], config["pred_num_hidden_layers"]
    m.predictor_num_heads, m.predictor_mlp_ratio = config["pred_num_attention_heads"], config["pred_mlp_ratio"]
    m.predictor_num_mask_tokens = config.get("pred_num_mask_tokens", 10)  # transformers' default: 10
    cfg.data.num_frames, cfg.data.crop_size = m.num_frames, m.img_size
    return cfg


def _blocks_to_hf(state: dict[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    """Our transformer blocks (`src`i.*) in Hugging Face names (`dst`i.*), the fused qkv split in three."""
    out = {}
    for i in range(sum(k.startswith(src) and k.endswith(".norm1.weight") for k in state)):
        for ours, theirs in _HF_BLOCK.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{i}.{theirs}.{kind}"] = state[f"{src}{i}.{ours}.{kind}"]
        for kind in ("weight", "bias"):
            q, k, v = state[f"{src}{i}.attn.qkv.{kind}"].chunk(3, dim=0)
            out.update({f"{dst}{i}.attention.query.{kind}": q, f"{dst}{i}.attention.key.{kind}": k,
                        f"{dst}{i}.attention.value.{kind}": v})
    return out


def _hf_config(m: Any, num_mask_tokens: int) -> dict[str, Any]:
    """The config.json of a Hugging Face `VJEPA2Model` for our `ModelConfig` `m`."""
    return {
        "model_type": "vjepa2", "architectures": ["VJEPA2Model"], "hidden_size": m.embed_dim,
        "num_hidden_layers": m.depth, "num_attention_heads": m.num_heads, "mlp_ratio": m.mlp_ratio,
        "patch_size": m.patch_size, "tubelet_size": m.tubelet_size, "in_chans": m.in_chans,
        "crop_size": m.img_size, "frames_per_clip": m.num_frames, "pred_hidden_size": m.predictor_embed_dim,
        "pred_num_hidden_layers": m.predictor_depth, "pred_num_attention_heads": m.predictor_num_heads or m.num_heads,
        "pred_mlp_ratio": m.predictor_mlp_ratio, "pred_num_mask_tokens": num_mask_tokens,
        "layer_norm_eps": 1e-6, "qkv_bias": True, "hidden_act": "gelu",
    }


def networks_to_hf(cfg, encoder: dict[str, torch.Tensor], predictor: dict[str, torch.Tensor]):
    """Our RoPE encoder + predictor state dicts -> (Hugging Face `VJEPA2Model` tensors, config.json dict)."""
    m = cfg.model
    if m.pos_embed != "rope":
        raise ValueError("Hugging Face VJEPA2Model has RoPE attention only; this model uses sin-cos positions")
    out = {
        "encoder.embeddings.patch_embeddings.proj.weight": encoder["patch_embed.proj.weight"],
        "encoder.embeddings.patch_embeddings.proj.bias": encoder["patch_embed.proj.bias"],
        "encoder.layernorm.weight": encoder["norm.weight"], "encoder.layernorm.bias": encoder["norm.bias"],
        "predictor.embeddings.mask_tokens": torch.stack(
            [predictor[f"mask_tokens.{i}"] for i in range(sum(k.startswith("mask_tokens.") for k in predictor))]),
    }
    for ours, theirs in (("predictor_embed", "predictor.embeddings.predictor_embeddings"),
                         ("predictor_norm", "predictor.layernorm"), ("predictor_proj", "predictor.proj")):
        for kind in ("weight", "bias"):
            out[f"{theirs}.{kind}"] = predictor[f"{ours}.{kind}"]
    for state, src, dst in ((encoder, "blocks.", "encoder.layer."), (predictor, "predictor_blocks.", "predictor.layer.")):
        out.update(_blocks_to_hf(state, src, dst))
    config = _hf_config(m, int(out["predictor.embeddings.mask_tokens"].shape[0]))
    return {k: v.detach().contiguous().clone() for k, v in out.items()}, config


# ---------------------------------------------------------------------------------------------
# any supported file -> (config, networks): the one reader `vjepa.load`, `model.init_from` and
# fine-tuning share


def read_weights(
    source: str | Path,
    num_frames: int | None = None,
    img_size: int | None = None,
    num_heads: int | None = None,
) -> tuple[Config, dict[str, dict[str, torch.Tensor]], str]:
    """Read a checkpoint of any supported kind without building a model.

    Args:
        source: a run directory (its latest.pt), our .pt checkpoint, a .safetensors export, an
            official .pth.tar, or a preset name (then there are no weights).
        num_frames, img_size, num_heads: architecture hints for checkpoints without a config.

    Returns:
        (config, {network name: state dict without wrapper prefixes}, a description of the source).

    Raises:
        CheckpointError: for a missing or unreadable file, or hints that contradict a stored config.
    """
    cfg, networks, description, _ = _read_weights(source, num_frames, img_size, num_heads)
    return cfg, networks, description


def checkpoint_path(source: str | Path) -> Path:
    """The file that holds `source`'s weights: a run directory's latest.pt, a Hugging Face folder's
    model.safetensors, or the file itself (the one resolver of `load`, caches and `model.init_from`).

    Raises:
        CheckpointError: naming `source` when there is no such file (or the folder has neither).
    """
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {source} (and it is not a preset: {', '.join(PRESETS)})")
    if path.is_dir():
        if not (path / "latest.pt").is_file() and is_hf(path) and (path / "model.safetensors").is_file():
            return path / "model.safetensors"
        path = path / "latest.pt"
        if not path.is_file():
            raise CheckpointError(f"{source} is a folder without latest.pt (pass a run directory or a file)")
    return path


def _read_hf(path: Path) -> tuple[Config, dict[str, dict[str, torch.Tensor]], str, bool] | None:
    """A Hugging Face V-JEPA 2 folder or file as (config, networks incl. `probe` if any, file, False); else None."""
    if is_hf(path):
        hf_config, tensors, where = read_hf(path)
        networks, probe = hf_to_networks(hf_config, tensors, where)
        if probe:
            networks["probe"] = probe
        return hf_model_config(hf_config), networks, f"Hugging Face {where}", False
    return None


def _file_networks(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any] | None]:
    """The networks of a .safetensors export or a .pt / .pth.tar checkpoint, and its stored config
    dict (None when the file has none)."""
    if path.suffix == ".safetensors":
        tensors, config = load_safetensors(path)
        which = read_safetensors_metadata(path).get("which", "encoder")
        networks = {which: {k: v for k, v in tensors.items() if not k.startswith("predictor.")}}
        predictor = {k[len("predictor."):]: v for k, v in tensors.items() if k.startswith("predictor.")}
        networks.update({"predictor": predictor} if predictor else {})
        return networks, config
    state = load_checkpoint(path)
    return split_networks(state), state.get("config") if isinstance(state.get("config"), dict) else None


def _check_hints(path: Path, cfg: Config, **given: int | None) -> None:
    """CheckpointError when a clip-size or head hint contradicts the file's stored config."""
    stored = {"num_frames": cfg.data.num_frames, "img_size": cfg.data.crop_size, "num_heads": cfg.model.num_heads}
    wrong = [f"{name}={value} (stored {stored[name]})" for name, value in given.items()
             if value not in (None, stored[name])]
    if wrong:
        raise CheckpointError(f"{path} stores its config; these hints contradict it: {', '.join(wrong)}")


def _read_weights(
    source: str | Path, num_frames: int | None, img_size: int | None, num_heads: int | None,
    pos_embed: str | None = None,
) -> tuple[Config, dict[str, dict[str, torch.Tensor]], str, bool]:
    """`read_weights` plus whether the config is the run's own (stored, or a preset's) rather
    than inferred from tensor shapes (official checkpoints, bare state dicts, Hugging Face)."""
    if not Path(source).exists() and str(source) in PRESETS:
        return preset(str(source)), {}, f"preset {source!r} (random init)", True
    foreign = _read_hf(Path(source)) if Path(source).exists() else None
    if foreign:
        return foreign
    path = checkpoint_path(source)
    networks, config = _file_networks(path)
    if not config:
        cfg = infer_model_config(networks, num_frames, img_size, num_heads, str(path), pos_embed)
        if cfg.model.pos_embed == "rope":
            drop_unused_tables(networks)  # released V-JEPA 2 files still carry a sin-cos table
        return cfg, networks, str(path), False
    cfg = config_from_stored(config, str(path))
    _check_hints(path, cfg, num_frames=num_frames, img_size=img_size, num_heads=num_heads)
    return cfg, networks, str(path), True
