"""The emotion branch: the SER backends (one module each), the branch that wraps them, and the
base of the emotion-conditioned countermeasures."""
