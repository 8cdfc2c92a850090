"""Structural copies of a model that share its weights.

:func:`shared_copy` copies the module objects of a model (their Python attributes, hooks and
configs) but hands the copy the very parameter and buffer tensors of the original, so a copy costs
almost nothing, even with a frozen wav2vec 2.0 inside. Two uses:

* one replica per scoring thread (``emospoof.scoring.windows.threaded_cpu_forward``): a module
  that keeps something of a call on itself (the HF SER's pooled classifier input, taken by a hook)
  then keeps it per thread, so threads never read each other's values;
* the base of the CPU-optimised twin (``models.layers.fused.optimise_for_cpu``), which then swaps
  its residual blocks without touching the original model.

Tensors are shared, not frozen: writing into one (an optimiser step, a BatchNorm update in train
mode) changes every copy. Replicas are for inference.
"""
from __future__ import annotations

import copy

from torch import nn


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree whose parameters and buffers are the original's tensors
    (the same objects); everything else (module objects, hooks, Python attributes) is copied."""
    tensors = [*model.parameters(), *model.buffers()]
    return copy.deepcopy(model, memo={id(tensor): tensor for tensor in tensors})
