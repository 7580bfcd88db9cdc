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


def test_a_large_cpu_batch_runs_in_parts_with_the_same_result():
    # 20 tiles of 64 px are 81,920 pixels: two calls of at most CPU_CALL_PIXELS (16 tiles), not one.
    from axion_ray.models import build_stage
    from axion_ray.models.runner import CPU_CALL_PIXELS

    stage2_model = build_stage(2, "tiny", allow_random_init=True)  # its own: the head is changed below
    torch.manual_seed(0)
    torch.nn.init.normal_(stage2_model.head.out.weight, std=0.05)  # a head that changes its input
    calls = []
    hook = stage2_model.register_forward_hook(lambda module, args, kwargs, out: calls.append(out.shape[0]),
                                              with_kwargs=True)
    rng = np.random.default_rng(1)
    inputs = {"opt_v1": rng.random((20, 4, 64, 64), dtype=np.float32), "month": np.arange(20) % 12 + 1,
              "biome_code": np.zeros(20, np.int8)}
    out = StageRunner(stage2_model, torch.device("cpu"))(inputs)
    assert calls == [CPU_CALL_PIXELS // 4096, 20 - CPU_CALL_PIXELS // 4096] == [16, 4]
    hook.remove()
    with torch.inference_mode():
        whole = stage2_model(torch.from_numpy(inputs["opt_v1"]), torch.from_numpy(inputs["month"]),
                             torch.from_numpy(inputs["biome_code"]).long()).numpy()
    assert not np.allclose(whole, inputs["opt_v1"], atol=1e-3)
    np.testing.assert_allclose(out, whole, atol=1e-5)
