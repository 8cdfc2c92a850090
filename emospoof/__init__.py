"""emospoof: emotion-aware audio anti-spoofing.

One sub-package per concern (docs/architecture.md has the map and the layers): ``core`` (config
primitives, checkpoints, the vocabulary of labels and emotions), ``corpora`` (dataset readers),
``augment`` (training-data augmentation), ``metrics`` (ASVspoof metrics, calibration, fusion,
per-group statistics), ``training`` (the one training loop), ``scoring`` (the one scoring path),
``reports`` (tables and plots), ``downloads``, and the two recipes ``cm`` (countermeasures) and
``ser`` (speech emotion recognition). The architectures live in the top-level ``models/``; the
entry points (``main.py``, ``inference.py``, ...) sit at the top level and call one recipe each.
"""
