"""Shared layers that are not architectures: the AASIST blocks with their stage hooks, the
CPU-fused twin of the residual block, and frozen sub-modules."""
