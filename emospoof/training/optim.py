"""The optimiser and its learning-rate schedule: Adam (AdamW, SGD) with the AASIST reference's
per-step cosine decay, and the parameter groups (a lower learning rate for a fine-tuned SSL
encoder, their own rate for the emotion parts of an emotion-conditioned model).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from emospoof.core.config import ConfigError, str_to_bool
from models.encoders.ssl import SSLEncoder
from utils import trainable_parameters

# optim_config keys (docs/config.md); ssl_lr only means something for models with an SSL encoder,
# emotion_lr for the emotion-conditioned models.
OPTIM_KEYS = {"optimizer", "amsgrad", "base_lr", "lr_min", "betas", "weight_decay", "scheduler",
              "momentum", "nesterov", "ssl_lr", "emotion_lr"}


def emotion_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the parts an emotion-conditioned model names in ``emotion_parts`` (FiLM
    generators, gates, expert heads, the Concat head); none for other models."""
    found = []
    for name in getattr(model, "emotion_parts", ()):
        part = getattr(model, name)
        found += [part] if isinstance(part, nn.Parameter) else list(part.parameters())
    return found


def parameter_groups(model: nn.Module, optim_config: dict) -> list:
    """The trainable parameters for ``create_optimizer``. With ``optim_config.ssl_lr`` the weights
    of every self-supervised speech model inside ``model`` (``models.encoders.ssl.SSLEncoder.model``)
    form a group with that learning rate, the usual lower rate for fine-tuning a large pre-trained
    encoder. With ``emotion_lr`` the emotion parts of an emotion-conditioned model form a group with
    that rate and no weight decay: they start at the identity and are tiny beside AASIST, so at
    AASIST's fine-tuning rate and decay they barely move. The scheduler scales every group alike."""
    trainable = trainable_parameters(model)
    special = []
    if optim_config.get("ssl_lr") is not None:
        ssl = {id(p) for module in model.modules() if isinstance(module, SSLEncoder)
               for p in module.model.parameters() if p.requires_grad}
        special.append((ssl, {"lr": optim_config["ssl_lr"]}))
    if optim_config.get("emotion_lr") is not None:
        special.append(({id(p) for p in emotion_parameters(model) if p.requires_grad},
                        {"lr": optim_config["emotion_lr"], "weight_decay": 0.0}))
    if not special:
        return trainable
    claimed = set().union(*(ids for ids, _ in special))
    groups = [{"params": [p for p in trainable if id(p) not in claimed]}]
    groups += [{"params": [p for p in trainable if id(p) in ids], **options} for ids, options in special if ids]
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
