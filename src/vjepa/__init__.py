"""vjepa: V-JEPA video representation learning (Bardes et al., 2024).

Shape legend used across the package: B batch, C channels, T frames, H/W pixels,
N tokens, K kept/selected tokens, D feature width.
"""

from vjepa.config import Config, preset

__all__ = ["Config", "preset"]
__version__ = "0.1.0"
