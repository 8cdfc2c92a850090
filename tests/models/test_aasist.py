"""AASIST / AASIST-L reproduce the official weights' outputs exactly."""
import json

import numpy as np
import pytest
import torch

from models.AASIST import Model
from tests.conftest import REPO


@pytest.mark.parametrize("name,prefix,weights,n_params", [
    ("AASIST", "AASIST_", "AASIST.pth", 297_866),
    ("AASIST-L", "AASIST_L_", "AASIST-L.pth", 85_306),
])
def test_matches_reference_outputs(shared_dir, name, prefix, weights, n_params):
    reference = json.loads((shared_dir / "reference/aasist_reference_outputs.json").read_text())
    outputs = np.load(shared_dir / "reference/aasist_reference_outputs.npz")
    model = Model(reference[name]["model_config"])
    assert sum(p.numel() for p in model.parameters()) == n_params
    state = torch.load(shared_dir / "reference/weights" / weights, weights_only=True, map_location="cpu")
    model.load_state_dict(state, strict=True)
    model.eval()
    inputs = torch.tensor(outputs["inputs"], dtype=torch.float32)
    with torch.no_grad():
        hidden, logits = model(inputs)
        _, logits_short = model(inputs[:, :48000])
    np.testing.assert_allclose(logits.numpy(), outputs[prefix + "logits"], atol=1e-4)
    np.testing.assert_allclose(hidden.numpy(), outputs[prefix + "hidden"], atol=1e-4)
    np.testing.assert_allclose(logits_short.numpy(), outputs[prefix + "logits_48000"], atol=1e-4)
    # Index 1 is bona fide: the three bona fide inputs come first in the reference file.
    assert (logits[:3, 1] > logits[:3, 0]).all() and (logits[3:, 1] < logits[3:, 0]).all()


def test_shipped_configs_match_reference(shared_dir):
    reference = json.loads((shared_dir / "reference/aasist_reference_outputs.json").read_text())
    for conf, name in [("AASIST.conf", "AASIST"), ("AASIST-L.conf", "AASIST-L")]:
        shipped = json.loads((REPO / "config" / conf).read_text())["model_config"]
        assert shipped == reference[name]["model_config"]
