"""Print max abs differences between vjepa and transformers V-JEPA 2 on tiny random models (fp32, CPU).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/hf_parity.py  (needs the hf extra)
"""
import tempfile
from pathlib import Path

import torch
import transformers

from vjepa.api import export_hf, load

d = Path(tempfile.mkdtemp())
cfg = transformers.VJEPA2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=8, tubelet_size=2,
    crop_size=32, frames_per_clip=8, pred_hidden_size=48, pred_num_hidden_layers=2, pred_num_attention_heads=4, num_labels=5)
torch.manual_seed(0)
hf = transformers.VJEPA2Model(cfg).eval(); hf.save_pretrained(d / "hf")
clip = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
ours = load(d / "hf", device="cpu")
with torch.no_grad():
    a = hf(pixel_values_videos=clip.transpose(1, 2), skip_predictor=True).last_hidden_state
    b = ours(clip)
    print("HF -> vjepa.load: max abs diff", (a - b).abs().max().item(), "scale", a.abs().max().item())
    export_hf(d / "hf", d / "back")
    hf2 = transformers.VJEPA2Model.from_pretrained(d / "back").eval()
    c = hf2(pixel_values_videos=clip.transpose(1, 2), skip_predictor=True).last_hidden_state
    print("vjepa export --format hf -> VJEPA2Model.from_pretrained: max abs diff", (c - b).abs().max().item())
    cl = transformers.VJEPA2ForVideoClassification(cfg).eval(); cl.save_pretrained(d / "cls")
    e = load(d / "cls", device="cpu")(clip)
    f = cl.vjepa2(pixel_values_videos=clip.transpose(1, 2), skip_predictor=True).last_hidden_state
    print("HF classifier encoder -> vjepa.load: max abs diff", (e - f).abs().max().item())
    big = torch.randn(1, 3, 8, 48, 40)
    print("other clip size (48x40) vjepa vs HF (HF uses the crop grid):", (load(d / "hf", device="cpu")(big) - hf(pixel_values_videos=big.transpose(1, 2), skip_predictor=True).last_hidden_state).abs().max().item())
