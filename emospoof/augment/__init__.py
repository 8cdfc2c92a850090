"""Data augmentation: prosody (``emospoof.augment.prosody``), silence and level
(``emospoof.augment.silence``), RawBoost (``emospoof.augment.rawboost``), codecs, telephone band,
noise and reverberation (``emospoof.augment.channel``), and the config sections that chain them
(``emospoof.augment.pipeline``). Documented in docs/augmentation.md."""
