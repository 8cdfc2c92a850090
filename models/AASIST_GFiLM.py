"""AASIST_GFiLM: FiLM (Perez et al., AAAI 2018) plus a learned per-utterance gate that mixes the
unmodulated AASIST embedding and the FiLM-modulated one: h = (1 - g) * h_plain + g * h_film.

The gate g = sigmoid(w . [e, p_bonafide] + b) reads the emotion input e and the plain path's
bona fide probability, softmax(logits)[:, 1] (index 1 = bona fide, as everywhere in emospoof;
a public version reads index 0, the spoof probability, under a bona fide name). The probability is
detached: it tells the gate how sure the unconditioned countermeasure is, it is not a second
training target. ``film_at`` is as in AASIST_FiLM; with sites inside the network the plain and
modulated paths are two passes through AASIST, with ``["embedding"]`` only they share one.

The gate starts at g = 0.5 for every input (zero weights and bias), where the sigmoid is
steepest: it can learn as soon as the FiLM path moves away from the plain one, and the FiLM
generators get half the gradient they would alone, so both parts learn from the first step.
"""
from __future__ import annotations

import torch
from torch import nn

from emospoof.core.labels import BONAFIDE_INDEX
from models import AASIST_FiLM

CONFIG_KEYS = AASIST_FiLM.CONFIG_KEYS
validate_model_config = AASIST_FiLM.validate_model_config


class Model(AASIST_FiLM.Model):
    """``forward`` returns ``(gated embedding, logits)``; logit index 1 is bona fide."""

    emotion_parts = ("film", "gate")

    def __init__(self, d_args: dict) -> None:
        super().__init__(d_args)
        self.gate = nn.Linear(self.emotion_dim + 1, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def gate_value(self, plain: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """g in (0, 1), shape (batch, 1), from the emotion and the plain path's bona fide probability."""
        p_bonafide = torch.softmax(self.aasist.classify(plain).detach(), dim=-1)[:, BONAFIDE_INDEX:BONAFIDE_INDEX + 1]
        return torch.sigmoid(self.gate(torch.cat([e, p_bonafide.to(e.dtype)], dim=-1)))

    def forward(self, x: torch.Tensor, Freq_aug: bool = False,
                emotion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.emotion(x, emotion)
        plain = self.aasist.graph_embedding(self.aasist.encode(x, Freq_aug))
        if set(self.film) == {"embedding"}:
            modulated = self.film["embedding"](plain, e)
        else:
            modulated = self.modulated_embedding(x, e, Freq_aug)
        g = self.gate_value(plain, e)
        hidden = self.aasist.drop((1 - g) * plain + g * modulated)
        return hidden, self.aasist.classify(hidden)
