import pytest
import torch

from axion_ray.errors import DeviceError
from axion_ray.models import build_stage, export_fp16_state
from axion_ray.models.common import autocast, pad_to_multiple, resolve_device


def test_cpu_runs_fp32_and_auto_picks_what_exists():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with autocast(torch.device("cpu"), enabled=True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_user_error():
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_fp16_export_halves_the_weights():
    model = build_stage(2, "tiny", allow_random_init=True)
    fp32 = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    state = export_fp16_state(model)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert sum(v.numel() * v.element_size() for v in state.values()) == pytest.approx(fp32 / 2, rel=0.01)
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched


def test_padding_never_truncates():
    x = torch.arange(2 * 50 * 70, dtype=torch.float32).reshape(1, 2, 50, 70)
    padded, (h, w) = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (64, 80) and (h, w) == (50, 70)
    assert torch.equal(padded[..., :50, :70], x)
    square, _ = pad_to_multiple(x, 32, square=True)
    assert square.shape[-2:] == (96, 96)
