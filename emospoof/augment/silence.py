"""Silence and level augmentation: random leading and trailing silence (a low white or pink
noise floor) and a random recording level, so that a countermeasure cannot take "trimmed and
normalised" as the mark of bona fide speech -- the silence shortcut of ASVspoof 2019 (Müller,
Dieckmann, Czempin, Canals, Böttinger, Williams, "Speech is Silver, Silence is Golden: What do
ASVspoof-trained Models Really Learn?", ASVspoof 2021 workshop), and the level the devkit's
files were normalised to (``emospoof.augment.preprocess``).

On each use the step draws (in this order) the leading and the trailing duration (uniform in
``lead_s`` and ``trail_s``), the floor's level (uniform in ``floor_dbfs``, RMS relative to full
scale), its colour (one of ``colours``) and the gain (uniform in ``gain_db``); it scales the
audio by the gain (never past full scale: ``prosody.gain_within_full_scale``) and puts the
floor before and after it. The floor lies only in the added silence; its inner ends fade in
and out over 5 ms (as the trimmer's cuts do), so the audio itself is kept sample for sample,
only scaled. The floor's level does not follow the gain: it is the recording's background,
at its own absolute level.

**Where in training, and the crop length.** In training the silence is padded first and the
crop cut after (``data_utils.TrialDataset``): this step is an utterance-level step
(``emospoof.augment.pipeline.UTTERANCE_STEPS``) that runs on the whole utterance, the random
``nb_samp`` crop is cut from the padded result (so it has ``nb_samp`` samples by construction),
and only the other steps run on the crop. Padding the crop instead would make it longer than
``nb_samp``, and the dataset would keep its first ``nb_samp`` samples, so trailing silence would
never be seen and the speech would be cut at the crop's end; cutting the padded crop back at a
random offset would keep the length, but join silence to whatever part of a word the crop
happened to begin or end in and, with a 1-s crop and up to 1 s of silence on a side, leave crops
without speech. Padded first, silence joins the utterance where a recording's own silence would,
at its start and its end, and the share of training crops that show silence is the share of
windows that do when an untrimmed recording is scored (``eval_mode`` ``full``): the crops are
like the windows the countermeasure will see. In evaluation conditions (``eval_condition``) the
whole utterance is augmented anyway and comes out longer, as an untrimmed recording is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft

from data_utils import SAMPLE_RATE
from emospoof.augment.prosody import gain_within_full_scale

COLOURS = ("white", "pink")
FADE_S = 0.005
PINK_FROM_HZ = 20.0  # pink noise's 1/f power is held constant below this


@dataclass(frozen=True)
class SilenceParams:
    lead_s: tuple[float, float] = (0.0, 1.0)
    trail_s: tuple[float, float] = (0.0, 1.0)
    floor_dbfs: tuple[float, float] = (-60.0, -40.0)
    colours: tuple[str, ...] = COLOURS
    gain_db: tuple[float, float] = (-12.0, 6.0)


@dataclass(frozen=True)
class SilenceDraw:
    """One use's values: samples of silence before and after, the floor's level and colour, the gain."""

    lead: int
    trail: int
    floor_dbfs: float
    colour: str
    gain_db: float


def noise_floor(rng: np.random.Generator, n: int, colour: str, level_dbfs: float) -> np.ndarray:
    """``n`` samples of white or pink (power 1/f, shaped by FFT) noise at an RMS of ``level_dbfs``."""
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if colour == "pink":  # shaped over a length the FFT is fast at, then cut
        n_fft = fft.next_fast_len(n, real=True)
        shape = 1 / np.sqrt(np.maximum(fft.rfftfreq(n_fft, 1 / SAMPLE_RATE), PINK_FROM_HZ))
        noise = fft.irfft(fft.rfft(rng.standard_normal(n_fft, dtype=np.float32)) * shape, n_fft)[:n]
    else:
        noise = rng.standard_normal(n, dtype=np.float32)
    level = np.sqrt(np.mean(np.square(noise, dtype=np.float64)))
    return (noise * (10 ** (level_dbfs / 20) / level if level > 0 else 0.0)).astype(np.float32)


class SilenceStep:
    """Leading and trailing silence and a random level (see the module docstring)."""

    def __init__(self, params: SilenceParams = SilenceParams()) -> None:
        self.params = params

    def draw(self, rng: np.random.Generator) -> SilenceDraw:
        p = self.params
        lead = int(round(rng.uniform(*p.lead_s) * SAMPLE_RATE))
        trail = int(round(rng.uniform(*p.trail_s) * SAMPLE_RATE))
        floor = rng.uniform(*p.floor_dbfs)
        colour = p.colours[int(rng.integers(len(p.colours)))]
        return SilenceDraw(lead, trail, floor, colour, rng.uniform(*p.gain_db))

    def apply(self, x: np.ndarray, draw: SilenceDraw, rng: np.random.Generator) -> np.ndarray:
        """``x`` at the drawn gain between ``draw.lead`` and ``draw.trail`` samples of floor."""
        floor = noise_floor(rng, draw.lead + draw.trail, draw.colour, draw.floor_dbfs)
        lead, trail = floor[:draw.lead], floor[draw.lead:]
        fade = int(FADE_S * SAMPLE_RATE)
        if len(lead):
            n = min(fade, len(lead))
            lead[-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
        if len(trail):
            n = min(fade, len(trail))
            trail[:n] *= np.linspace(0.0, 1.0, n, dtype=np.float32)
        return np.concatenate([lead, gain_within_full_scale(np.asarray(x, dtype=np.float32), draw.gain_db), trail])

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(x, self.draw(rng), rng)
