"""The bottom layer: config primitives, safe checkpoints, text-line reading and the vocabulary of
labels and emotions. Nothing here imports any other part of the project."""
