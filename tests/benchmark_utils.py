"""Import a script from benchmarks/ or experiments/ (neither is a package) as a module, for its tests."""

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
EXPERIMENTS = ROOT / "experiments"


def _load(path: Path) -> ModuleType:
    """Execute the script at `path` as a fresh module (its module-level state starts clean)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py, freshly executed."""
    return _load(BENCHMARKS / f"{name}.py")


def load_experiment(name: str) -> ModuleType:
    """experiments/<name>.py, freshly executed."""
    return _load(EXPERIMENTS / f"{name}.py")
