"""Bundled YAML recipes; `resolve_config("demo_tiny_vit")` finds one by name."""
from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def resolve_config(name_or_path: str | Path) -> Path:
    """A path to an existing YAML file, or the name of a bundled recipe (with or without .yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p.name, CONFIG_DIR / f"{p.name}.yaml"):
        if cand.is_file():
            return cand
    known = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"{name_or_path}: no such config file or bundled recipe (bundled: {known})")
