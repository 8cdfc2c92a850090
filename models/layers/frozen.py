"""Frozen sub-modules: parts of a model that are used but not trained (a pre-trained SER
branch, an SSL encoder, an AASIST initialised from published weights).

A frozen part has ``requires_grad=False`` (the optimiser never sees it), stays in eval mode
whatever ``train()`` is called with (BatchNorm statistics and dropout untouched), and its owner
runs it under ``torch.no_grad`` so no graph is built.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


def freeze_(module: nn.Module) -> None:
    """No gradients and eval mode; owners keep it in eval mode through :class:`KeepsFrozen`."""
    module.requires_grad_(False)
    module.eval()


def no_grad_if(frozen: bool) -> contextlib.AbstractContextManager:
    """``torch.no_grad()`` for a frozen part; otherwise nothing (an outer no_grad still holds)."""
    return torch.no_grad() if frozen else contextlib.nullcontext()


class KeepsFrozen(nn.Module):
    """Base of modules with frozen parts: :meth:`freeze_part` freezes a child, and ``train()``
    puts every frozen child back in eval mode, since ``nn.Module.train`` would switch it back."""

    def freeze_part(self, name: str) -> None:
        freeze_(getattr(self, name))
        if name not in getattr(self, "_frozen_parts", ()):
            self._frozen_parts = getattr(self, "_frozen_parts", ()) + (name,)

    def thaw_part(self, name: str) -> None:
        """Undo :meth:`freeze_part`: the child trains again (and follows ``train()``)."""
        getattr(self, name).requires_grad_(True)
        self._frozen_parts = tuple(part for part in getattr(self, "_frozen_parts", ()) if part != name)

    def train(self, mode: bool = True) -> KeepsFrozen:
        super().train(mode)
        for name in getattr(self, "_frozen_parts", ()):
            getattr(self, name).eval()
        return self
