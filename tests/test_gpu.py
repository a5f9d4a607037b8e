"""CUDA: a small ladder trains in bf16 with fused AdamW, and attention dropout stays on the
flash kernel. Marked ``gpu`` (deselected by default; run with ``-m gpu``, as
benchmarks/gpu_check.sh does); skipped without a CUDA device."""

import pytest
import torch
import torch.nn.functional as F

from scalelib.config import SMOKE_LADDER, TRAIN_PRESETS, Regime
from scalelib.data.preprocess import simulate_dataset
from scalelib.hardware import resolve_dtype
from scalelib.model import MaskedExpressionTransformer
from scalelib.train import make_optimizer, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def dataset():
    return simulate_dataset(Regime("rich", n_genes=64, n_cells=2_000), seed=0)


def test_small_ladder_trains_on_cuda_in_bf16_and_beats_the_baseline(dataset):
    config = TRAIN_PRESETS["smoke"].with_(max_steps=150, eval_every=50, device="cuda",
                                          dtype="bf16", batch_size=64)
    for size in SMOKE_LADDER[1:]:  # T0 (d_model 2) needs longer to pass the baseline
        result = train(dataset, size, config, seed=0, progress=False)
        assert result.device.startswith("cuda") and result.dtype == "bf16"
        assert result.best_val_mse < result.baseline_val_mse, size.name


def test_auto_dtype_is_bf16_and_adamw_is_fused_on_cuda():
    device = torch.device("cuda")
    assert resolve_dtype("auto", device, SMOKE_LADDER[0]) == "bf16"
    model = MaskedExpressionTransformer(SMOKE_LADDER[-1], 32).to(device)
    optimizer = make_optimizer(model, TRAIN_PRESETS["smoke"], device)
    assert optimizer.defaults["fused"]


def test_bf16_autocast_forward_is_close_to_fp32():
    torch.manual_seed(0)
    model = MaskedExpressionTransformer(SMOKE_LADDER[-1], 128).cuda().eval()
    values = torch.rand(16, 128, device="cuda") * 3
    mask = torch.rand(16, 128, device="cuda") < 0.15
    with torch.no_grad():
        full = model(values, mask)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(values, mask).float()
    torch.testing.assert_close(half, full, atol=0.05, rtol=0.05)


def test_attention_dropout_trains_through_the_flash_kernel():
    """With only the flash backend allowed, a training step with attention dropout runs (the
    CPU's tiled attention is not used on CUDA)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    model = MaskedExpressionTransformer(SMOKE_LADDER[-1], 256, attention_dropout=0.1).cuda()
    values = torch.rand(8, 256, device="cuda")
    mask = torch.rand(8, 256, device="cuda") < 0.15
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cuda", dtype=torch.bfloat16):
        first, second = model.train()(values, mask), model(values, mask)
    loss = F.mse_loss(first.float()[mask], values[mask])
    loss.backward()
    assert torch.isfinite(loss)
    assert not torch.equal(first, second)  # dropout is on
    assert all(p.grad is not None for p in model.parameters())
