"""GPU checks: run where a CUDA device is present (the lent H100), skipped elsewhere."""

import numpy as np
import pytest
import torch

from axion_ray.models import build_stage
from axion_ray.models.runner import StageRunner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def inputs(b=2, t=64):
    rng = np.random.default_rng(0)
    return {"s1": rng.normal(-14, 4, (b, 2, t, t)).astype(np.float32),
            "opt_v1": rng.random((b, 4, t, t), dtype=np.float32) * 0.4,
            "opt_v2": rng.random((b, 4, t, t), dtype=np.float32) * 0.4,
            "month": np.array([6, 1]), "biome_code": np.array([4, 0])}


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("amp", [True, False])
def test_stages_run_on_cuda_with_and_without_amp(stage, amp):
    model = build_stage(stage, "tiny", allow_random_init=True, timesteps=1, device="cuda")
    if stage == 2:
        torch.nn.init.normal_(model.head.out.weight, std=0.01)
    out = StageRunner(model, torch.device("cuda"), amp=amp)(inputs())
    assert out.shape == (2, 4, 64, 64) and np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    if stage == 2:  # the GPU agrees with the CPU
        cpu = StageRunner(model.to("cpu"), torch.device("cpu"))(inputs())
        np.testing.assert_allclose(out, cpu, atol=2e-2 if amp else 1e-4)
