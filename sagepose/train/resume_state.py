"""What an exact resume needs beyond what Lightning restores: the global RNGs and the train loader's position.

Lightning restores the model, optimizer, scheduler, loops and callbacks (EMA). The global RNGs (drop path draws from
torch's) and the position in the epoch of the train loader -- or of each loader of a dict of them (labeled and
unlabeled) -- travel in the checkpoint's ``"sagepose"`` entry. Lightning saves the loader's state too, but when
``configure_optimizers`` asks for ``estimated_stepping_batches`` it builds the train loader before the checkpoint is
restored and never hands that state back; so the module restores it at ``on_train_start``.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def global_rng_state() -> dict:
    """torch's, numpy's and Python's global RNG states (and CUDA's when it is in use), as tensors and tuples
    (Lightning loads checkpoints with ``weights_only=True``); a DDP run's checkpoint holds rank 0's."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
           "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_global_rng_state(rng: dict) -> None:
    """Put back what :func:`global_rng_state` saved (CUDA's where the same number of GPUs is visible)."""
    torch.set_rng_state(rng["torch"])
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


def loader_state(loaders) -> dict | None:
    """The train loader's position (``trainer.train_dataloader``: one loader, or a dict of them): its
    ``state_dict()``, or one per loader of a dict; None for a loader without one."""
    if isinstance(loaders, dict):
        return {k: v.state_dict() for k, v in loaders.items() if hasattr(v, "state_dict")}
    return loaders.state_dict() if hasattr(loaders, "state_dict") else None


def restore_loader_state(loaders, state) -> None:
    """Put back what :func:`loader_state` saved; a dict of loaders takes only a state that names some of them."""
    if state is None:
        return
    if isinstance(loaders, dict):
        if isinstance(state, dict) and set(state) <= set(loaders):
            for k, v in state.items():
                if hasattr(loaders[k], "load_state_dict"):
                    loaders[k].load_state_dict(v)
        return
    if hasattr(loaders, "load_state_dict"):
        loaders.load_state_dict(state)
