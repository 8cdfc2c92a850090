"""What every script needs about the machine and the model: seeding, device choice and parameter
counts (the optimiser and its schedule are in ``emospoof.training.optim``)."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from emospoof.core.config import ConfigError


def count_parameters(model: nn.Module) -> int:
    """Every parameter, frozen ones included."""
    return sum(p.numel() for p in model.parameters())


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What the optimiser gets: frozen parts (``requires_grad=False``) are left out entirely."""
    return [p for p in model.parameters() if p.requires_grad]


def seed_everything(seed: int, deterministic: bool = True, benchmark: bool = False) -> None:
    """Seed python, numpy and torch (all devices) and set the cuDNN switches from the config:
    cuDNN's autotuner (fastest kernels per input shape) is on whenever determinism is not
    requested; ``benchmark`` also turns it on with determinism (choosing among deterministic
    kernels only)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = benchmark or not deterministic


def select_device(requested: str | None = None) -> torch.device:
    """CUDA when available (or asked for), else CPU; asking for missing CUDA is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but no CUDA device is available")
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
