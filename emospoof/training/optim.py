"""The optimiser and its learning-rate schedule: Adam (AdamW, SGD) with the AASIST reference's
per-step cosine decay, and the parameter groups (a lower learning rate for a fine-tuned SSL encoder).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from emospoof.core.config import ConfigError, str_to_bool
from models.encoders.ssl import SSLEncoder
from utils import trainable_parameters

# optim_config keys (docs/config.md); ssl_lr only means something for models with an SSL encoder.
OPTIM_KEYS = {"optimizer", "amsgrad", "base_lr", "lr_min", "betas", "weight_decay", "scheduler",
              "momentum", "nesterov", "ssl_lr"}


def parameter_groups(model: nn.Module, optim_config: dict) -> list:
    """The trainable parameters for ``create_optimizer``. With ``optim_config.ssl_lr`` the weights
    of every self-supervised speech model inside ``model`` (``models.encoders.ssl.SSLEncoder.model``) form
    a second group with that learning rate, the usual lower rate for fine-tuning a large
    pre-trained encoder; the scheduler scales both groups alike."""
    trainable = trainable_parameters(model)
    if optim_config.get("ssl_lr") is None:
        return trainable
    ssl_ids = {id(p) for module in model.modules() if isinstance(module, SSLEncoder)
               for p in module.model.parameters() if p.requires_grad}
    groups = [{"params": [p for p in trainable if id(p) not in ssl_ids]}]
    if ssl_ids:  # nothing to add when the SSL model is frozen
        groups.append({"params": [p for p in trainable if id(p) in ssl_ids], "lr": optim_config["ssl_lr"]})
    return groups


def create_optimizer(parameters, optim_config: dict, total_steps: int):
    """Adam (AdamW, SGD) with a per-step cosine decay from ``base_lr`` to ``lr_min``, as in AASIST.
    ``parameters``: a list of parameters or of parameter groups (:func:`parameter_groups`)."""
    base_lr = optim_config["base_lr"]
    name = optim_config.get("optimizer", "adam").lower()
    if name in ("adam", "adamw"):  # AdamW: decoupled weight decay (Rawformer's recipe)
        optimizer = (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(
            parameters, lr=base_lr, betas=tuple(optim_config.get("betas", (0.9, 0.999))),
            weight_decay=optim_config.get("weight_decay", 0.0),
            amsgrad=str_to_bool(optim_config.get("amsgrad", False), "optim_config.amsgrad"))
    elif name == "sgd":
        optimizer = torch.optim.SGD(
            parameters, lr=base_lr, momentum=optim_config.get("momentum", 0.9),
            weight_decay=optim_config.get("weight_decay", 0.0),
            nesterov=str_to_bool(optim_config.get("nesterov", False), "optim_config.nesterov"))
    else:
        raise ConfigError(f"optim_config.optimizer: unknown optimizer {name!r} (adam, adamw, sgd)")

    scheduler_name = optim_config.get("scheduler", "cosine")
    if scheduler_name == "cosine":
        floor = optim_config.get("lr_min", 0.0) / base_lr

        def cosine(step: int) -> float:
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    elif scheduler_name in ("none", "constant"):
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    else:
        raise ConfigError(f"optim_config.scheduler: unknown scheduler {scheduler_name!r} (cosine, none)")
    return optimizer, scheduler
