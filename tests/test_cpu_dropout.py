"""CPU dropout: tiled attention equals attention exactly, and its dropout is the published one."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scalelib import cpu_dropout
from scalelib.bench import copy_block_weights
from scalelib.cpu_dropout import attention, dropout, keep_mask, keep_probability
from scalelib.model import EncoderBlock


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of two (cell, head) pairs at 20 tokens, so a call spans several tiles."""
    monkeypatch.setattr(cpu_dropout, "TILE_WEIGHTS", 2 * 20 * 20)


def _qkv(batch=3, heads=4, tokens=20, head_dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, tokens, head_dim, dtype=torch.float64,
                        generator=generator, requires_grad=True) for _ in range(3)]


def _tiled(q, k, v, p):
    batch, heads, tokens, head_dim = q.shape
    flat = [t.reshape(batch * heads, tokens, head_dim) for t in (q, k, v)]
    return cpu_dropout._TiledDropoutAttention.apply(*flat, p).view(q.shape)


def _gradients(out, inputs, seed=1):
    grad = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, inputs, grad)


def test_tiled_attention_without_dropout_equals_sdpa(small_tiles):
    q, k, v = _qkv()
    tiled, fused = _tiled(q, k, v, 0.0), F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(tiled, fused)
    for ours, theirs in zip(_gradients(tiled, (q, k, v)), _gradients(fused, (q, k, v))):
        torch.testing.assert_close(ours, theirs)


def test_tiled_attention_applies_exactly_the_masks_it_draws(small_tiles):
    q, k, v = _qkv()
    p = 0.3
    torch.manual_seed(5)
    tiled = _tiled(q, k, v, p)
    torch.manual_seed(5)
    seed = cpu_dropout._draw_seed()  # the call's seed, replayed
    pairs = 2
    keep = torch.cat([keep_mask(seed, index, (pairs, 20, 20), p, torch.float64)
                      for index in range(12 // pairs)]).view(3, 4, 20, 20)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, -1) * keep / keep_probability(p)
    explicit = weights @ v
    torch.testing.assert_close(tiled, explicit)
    for ours, theirs in zip(_gradients(tiled, (q, k, v)), _gradients(explicit, (q, k, v))):
        torch.testing.assert_close(ours, theirs)


def test_masks_drop_at_the_rate_asked_and_replay_from_their_seed():
    keep = keep_mask(7, 3, (400, 500), 0.1)
    assert set(keep.unique().tolist()) == {0.0, 1.0}
    dropped = 1.0 - keep.mean().item()
    assert abs(dropped - 0.1) < 4 * (0.1 * 0.9 / keep.numel()) ** 0.5
    assert torch.equal(keep, keep_mask(7, 3, (400, 500), 0.1))
    assert not torch.equal(keep, keep_mask(7, 4, (400, 500), 0.1))
    assert keep_probability(0.1) == pytest.approx(0.9, abs=2**-16)
    assert keep_mask(0, 0, (1000,), 0.0).min() == 1.0


def test_dropout_keeps_the_mean_and_passes_gradients_only_where_it_kept():
    x = torch.full((200, 500), 2.0, requires_grad=True)
    out = dropout(x, 0.1, training=True)
    kept = out != 0
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 2.0 / keep_probability(0.1)))
    assert abs(out.mean().item() - 2.0) < 4 * 2.0 * (0.1 / 0.9 / out.numel()) ** 0.5
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, kept.double().float() / keep_probability(0.1))
    assert dropout(x, 0.1, training=False) is x


def test_attention_with_dropout_is_unbiased_and_seeded():
    q, k, v = (t.detach().expand(400, 2, 16, 8) for t in _qkv(batch=1, heads=2, tokens=16))
    exact = F.scaled_dot_product_attention(q[:1], k[:1], v[:1])[0]
    torch.manual_seed(0)
    draws = attention(q, k, v, 0.2, training=True)  # 400 draws on one cell
    standard_error = draws.std(0) / 400**0.5
    z = (draws.mean(0) - exact) / standard_error
    assert z.abs().mean() < 1.0  # about 0.8 for standard normal z-scores
    assert z.abs().max() < 5.0
    torch.manual_seed(0)
    torch.testing.assert_close(attention(q, k, v, 0.2, training=True), draws)
    torch.testing.assert_close(attention(q, k, v, 0.2, training=False)[0], exact)


def test_block_with_dropout_matches_torch_encoder_layer_in_distribution():
    """Training-mode outputs of the block and of nn.TransformerEncoderLayer (its own dropout
    code) on the same weights have the same per-element mean and spread over many draws."""
    torch.manual_seed(0)
    d_model, heads, ff_mult, p = 16, 2, 2, 0.2
    reference = nn.TransformerEncoderLayer(d_model, heads, ff_mult * d_model, dropout=p,
                                           activation="gelu", batch_first=True, norm_first=True)
    block = EncoderBlock(d_model, heads, ff_mult, dropout=p, attention_dropout=p)
    copy_block_weights(block, reference)
    x = torch.randn(1, 12, d_model).expand(600, 12, d_model)  # 600 draws on one cell
    with torch.no_grad():
        ours, theirs = block.train()(x), reference.train()(x)
    z_mean = (ours.mean(0) - theirs.mean(0)) / ((ours.var(0) + theirs.var(0)) / 600) ** 0.5
    assert z_mean.abs().mean() < 1.0
    assert z_mean.abs().max() < 5.0
    spread_ratio = ours.std(0) / theirs.std(0)
    assert 0.85 < spread_ratio.median() < 1.15
    assert not torch.allclose(ours[0], ours[1])  # dropout is on


@pytest.fixture
def two_threads():
    """Torch on two CPU threads, so tiles are spread over threads; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_tiles_spread_over_threads_compute_what_one_thread_computes(small_tiles, two_threads):
    q, k, v = _qkv()
    torch.manual_seed(3)
    spread = _tiled(q, k, v, 0.3)
    spread_gradients = _gradients(spread, (q, k, v))
    torch.set_num_threads(1)
    torch.manual_seed(3)
    single = _tiled(q, k, v, 0.3)
    assert torch.equal(spread, single)
    for ours, theirs in zip(spread_gradients, _gradients(single, (q, k, v))):
        assert torch.equal(ours, theirs)


def test_tiled_attention_with_dropout_passes_gradcheck(small_tiles, two_threads, monkeypatch):
    """Finite differences agree with the backward pass, masks held fixed by a fixed seed."""
    monkeypatch.setattr(cpu_dropout, "_draw_seed", lambda: 11)
    q, k, v = _qkv(batch=2, heads=2, head_dim=4)
    assert torch.autograd.gradcheck(lambda *qkv: _tiled(*qkv, 0.3), (q, k, v))


@pytest.mark.parametrize("p", [0.2, 0.0])
def test_attention_under_bf16_autocast_computes_in_float32(p):
    """With dropout (tiles) and without (fused kernel), bf16 in, float32 inside, bf16 out."""
    q, k, v = (t.detach().to(torch.bfloat16) for t in _qkv(batch=2, heads=2))
    torch.manual_seed(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = attention(q, k, v, p, training=True)
    torch.manual_seed(4)
    exact = attention(q.float(), k.float(), v.float(), p, training=True)
    assert mixed.dtype == torch.bfloat16
    torch.testing.assert_close(mixed, exact.to(torch.bfloat16), rtol=0, atol=0)
