import numpy as np
import torch
from torch import nn

from axion_ray.models.runner import StageRunner


class Picky(nn.Module):
    """A real module that runs out of memory above a batch size, as a big model on a small GPU does."""

    INPUTS = ("opt_v1", "month", "biome_code")

    def __init__(self, max_batch: int):
        super().__init__()
        self.max_batch = max_batch
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, opt_v1, month, biome_code):
        if opt_v1.device.type != "cpu" or opt_v1.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        assert month.dtype == torch.long and biome_code.dtype == torch.long
        return opt_v1 * self.scale + month[:, None, None, None] * 0


def batch(n):
    return {"opt_v1": np.random.default_rng(0).random((n, 4, 8, 8), dtype=np.float32),
            "month": np.arange(n) % 12 + 1, "biome_code": np.zeros(n, np.int8)}


def test_runs_a_stage_on_numpy_batches(stage2_model):
    runner = StageRunner(stage2_model, torch.device("cpu"))
    inputs = batch(3)
    out = runner(inputs)
    assert out.dtype == np.float32 and out.shape == (3, 4, 8, 8)
    np.testing.assert_array_equal(out, inputs["opt_v1"])  # untrained refiner = identity
    assert runner.stats.tiles == 3 and runner.stats.devices == {"cpu"} and not runner.amp


def test_out_of_memory_splits_the_batch():
    runner = StageRunner(Picky(max_batch=2), torch.device("cpu"))
    inputs = batch(7)
    out = runner(inputs)
    np.testing.assert_array_equal(out, inputs["opt_v1"])
    assert runner.stats.oom_splits >= 2 and runner.stats.cpu_fallback_tiles == 0


def test_a_tile_that_never_fits_falls_back_to_cpu_and_is_counted():
    runner = StageRunner(Picky(max_batch=0), torch.device("cpu"))
    runner._cpu_model = Picky(max_batch=1)  # the CPU copy has room for one tile
    out = runner(batch(2))
    assert out.shape == (2, 4, 8, 8) and runner.stats.cpu_fallback_tiles == 2
