"""Benchmarks: the reference build is the same network, and the comparison runs end to end."""

import json

import pytest
import torch

from scalelib import bench
from scalelib.bench import ReferenceTransformer, compare_reference
from scalelib.cli import main
from scalelib.config import ModelSize
from scalelib.model import MaskedExpressionTransformer

SMALL = ModelSize("t", 16, 2, 2, 2)


@pytest.fixture
def quick_peak(monkeypatch):
    """A small matrix product for the peak: the real one takes seconds."""
    monkeypatch.setattr(bench, "PEAK_MATRIX_SIZE", 64)


def test_reference_build_computes_what_the_model_computes():
    torch.manual_seed(0)
    model = MaskedExpressionTransformer(SMALL, 24).eval()
    reference = ReferenceTransformer(model).eval()
    values, mask = torch.rand(5, 24) * 3, torch.rand(5, 24) < 0.3
    torch.testing.assert_close(reference(values, mask), model(values, mask))
    assert sum(p.numel() for p in reference.parameters()) == model.num_parameters()


def test_comparison_trains_both_from_the_same_start(quick_peak):
    result = compare_reference(SMALL, 24, 8, steps=4, warmup_steps=1, dtype="fp32",
                               loss_window=3)
    assert result.seconds_per_step > 0 and result.reference_seconds_per_step > 0
    assert result.speedup > 0 and 0 < result.mfu
    assert result.attention_dropout == 0.1
    assert abs(result.final_loss - result.reference_final_loss) < 0.5


def test_cli_bench_compare_reference_prints_both_and_the_ratio(capsys, quick_peak):
    args = ["bench", "--size", "T1", "--genes", "16", "--batch", "4", "--steps", "4",
            "--compare-reference", "--dtype", "fp32"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "nn.TransformerEncoder" in printed and "speed-up" in printed and "loss" in printed
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == "T1"


def test_benchmark_samples_the_peak_once_per_timed_step(quick_peak, monkeypatch):
    samples = []
    sample = bench.MatmulPeak.sample
    monkeypatch.setattr(bench.MatmulPeak, "sample", lambda self: samples.append(sample(self)))
    result = bench.benchmark_training(SMALL, 24, 4, steps=3, warmup_steps=1, dtype="fp32",
                                      device="cpu")
    assert len(samples) == 3
    assert result.peak_matmul_flops > 0
    assert result.mfu == pytest.approx(result.achieved_flops / result.peak_matmul_flops)


def test_the_peak_meter_leaves_the_training_random_stream_alone(quick_peak):
    """Its matrices come from their own generator: drawn from torch's default one, they
    shifted every dropout mask of the compared steps (XS's losses then differed by 3 s.e.)."""
    before = torch.get_rng_state()
    bench.MatmulPeak(torch.device("cpu"), "fp32").sample()
    assert torch.equal(torch.get_rng_state(), before)
