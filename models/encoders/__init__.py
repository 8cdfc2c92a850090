"""Speech encoders behind the architectures: self-supervised models (wav2vec 2.0, HuBERT, WavLM),
the pruned DPHuBERT, and Hugging Face audio loading."""
