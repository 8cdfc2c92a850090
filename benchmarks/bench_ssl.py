"""CPU cost of AASIST_WAV2VEC at its real size, without downloading XLS-R.

    python benchmarks/bench_ssl.py [--threads 1] [--repeats 3]

Builds a randomly initialised encoder of XLS-R 300M's architecture (the configuration published
with facebook/wav2vec2-xls-r-300m: 24 pre-LN transformer layers of width 1024, 16 heads, feed-forward
4096, seven-layer convolutional feature encoder with LayerNorm and bias) into a temporary
directory, puts config/AASIST_WAV2VEC.conf's back end behind it and times, per 4-second utterance
(64 600 samples): the SSL encoder alone and the whole model in inference (batch 1; eager, and
inference.py's optimised CPU path), and a fine-tuning training step (forward and backward,
batch 2). Speed does not depend on the weights.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_utils import NB_SAMP
from emospoof.cm.config import load_config
from emospoof.scoring.windows import threaded_cpu_forward
from models import build_model
from models.encoders.hf_audio import save_with_extractor
from models.layers.fused import optimise_for_cpu
from utils import count_parameters


def xlsr_300m_config():
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                          conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                          feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                          num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)


def timed(steps: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """(best, median) seconds of each step over ``repeats`` rounds after one warm-up; the steps
    run in turn within a round so that load from other processes affects them alike."""
    times = {name: [] for name in steps}
    for round_ in range(repeats + 1):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            if round_:
                times[name].append(time.perf_counter() - started)
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import Wav2Vec2Model

    config = load_config(REPO / "config/AASIST_WAV2VEC.conf")
    with tempfile.TemporaryDirectory() as folder:
        ssl_dir = save_with_extractor(Wav2Vec2Model(xlsr_300m_config()), Path(folder) / "xlsr_300m_random")
        model = build_model({**config["model_config"], "ssl_path": str(ssl_dir)})
    ssl_params = count_parameters(model.ssl_model)
    print(f"parameters: {count_parameters(model):,} ({ssl_params:,} SSL, "
          f"{count_parameters(model) - ssl_params:,} back end); torch threads: {args.threads}")
    load_before = os.getloadavg()[0]
    one = torch.randn(1, NB_SAMP)
    two = torch.randn(2, NB_SAMP)
    fast = threaded_cpu_forward(optimise_for_cpu(model), args.threads)

    def inference(part) -> None:
        model.eval()
        with torch.inference_mode():
            part(one)

    def train_step() -> None:
        model.train()
        model.zero_grad()
        model(two)[1].sum().backward()
    times = timed({"SSL encoder, inference": lambda: inference(model.ssl_model),
                   "whole model, inference (eager)": lambda: inference(model),
                   "whole model, inference.py's optimised CPU path": lambda: fast(one),
                   "fine-tuning step, per utterance of a batch of 2": train_step}, args.repeats)
    print(f"per 4-s utterance, seconds (best / median of {args.repeats} rounds; load average before: "
          f"{load_before:.1f}, after: {os.getloadavg()[0]:.1f}):")
    for name, (best, median) in times.items():
        per = 2 if name.startswith("fine-tuning") else 1
        print(f"  {name:<50} {best / per:.2f} / {median / per:.2f}")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB")


if __name__ == "__main__":
    main()
