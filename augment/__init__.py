"""Data augmentation: RawBoost (``augment.rawboost``), codecs, telephone band, noise and
reverberation (``augment.channel``), and the config sections that chain them
(``augment.pipeline``). Documented in docs/augmentation.md."""
