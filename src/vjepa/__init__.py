"""vjepa: V-JEPA video representation learning (Bardes et al., 2024).

Shape legend used across the package: B batch, C channels, T frames, H/W pixels,
N tokens, K kept/selected tokens, D feature width.
"""

from typing import Any

from vjepa.config import Config, preset

__all__ = ["Config", "Encoder", "load", "load_probe", "preset"]


def __getattr__(name: str) -> Any:
    """`vjepa.load` / `vjepa.Encoder` / `vjepa.load_probe` import torch on first use, so `import vjepa`
    stays light."""
    if name in ("load", "Encoder"):
        from vjepa import api

        return getattr(api, name)
    if name == "load_probe":
        from vjepa.classify import load_probe

        return load_probe
    raise AttributeError(f"module 'vjepa' has no attribute {name!r}")


__version__ = "0.1.0"
