"""Dropout that is cheap on a CPU: attention with dropout done tile by tile, and a faster mask.

On a CPU, PyTorch's fused attention kernel has no dropout, so ``scaled_dot_product_attention``
with ``dropout_p > 0`` falls back to the unfused path: it writes the whole attention matrix
(batch x heads x tokens x tokens) to memory several times over, forward and backward, and draws
one 32-bit Mersenne-Twister number per weight for the dropout mask. Measured on two cores, that
mask alone took a fifth of a training step (``scalelib bench --compare-reference``).

Here attention with dropout runs over small tiles of (cell, head) pairs that stay in cache:
scores, softmax, dropout and the weighted sum per tile. Nothing of size tokens x tokens is kept
for the backward pass; it recomputes each tile's scores and regenerates its mask from the
tile's seed (as flash attention does). Masks come from numpy's SFC64 generator, 16 random bits
per element, four elements per 64-bit draw: the dropout probability is rounded to a multiple of
2^-16 (0.1 becomes 0.100006) and kept weights are scaled by the inverse of that rounded keep
probability, so the expected output is unchanged. Seeds are drawn from torch's default
generator, so ``torch.manual_seed`` makes a run reproducible.

Tiles are shared out over torch's CPU threads: each thread takes the next tile when it finishes
one and runs it single-threaded, so the results do not depend on the thread count. Splitting
every small operation of a tile over both threads instead made each wait on the other, and on
a shared machine on a descheduled one: a training step of XS (V=512, batch 32, forward and
backward) on two threads at load 4.7 took 6.65 s that way and 2.04 s this way, side by side.
Under bf16 autocast the tiles still compute in float32 (see :func:`attention`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

MASK_BITS = 16
# (cell, head) pairs per attention tile aim at this many weights (1 MiB of fp32): a tile's
# scores, probabilities and mask stay in a core's L2 cache. Tiles of 2 and 4 times this were
# 6% and 21% slower (XS training step, two threads, side by side).
TILE_WEIGHTS = 1 << 18
# Below this many elements torch's own dropout is faster (the mask's fixed cost dominates):
# forward plus backward on one thread, 16,384 elements 255 vs 221 us, 32,768: 284 vs 350 us.
MIN_ELEMENTS = 1 << 15


def _threshold(p: float) -> int:
    """Signed 16-bit threshold below which a uniform draw drops an element."""
    return round(p * (1 << MASK_BITS)) - (1 << (MASK_BITS - 1))


def keep_probability(p: float) -> float:
    """The keep probability the masks realise for a dropout probability ``p`` (rounded to
    a multiple of 2^-16)."""
    return 1.0 - round(p * (1 << MASK_BITS)) / (1 << MASK_BITS)


def _score_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _draw_seed() -> int:
    return int(torch.randint(0, 2**62, (1,)).item())


def keep_mask(seed: int, index: int, shape: torch.Size | tuple[int, ...], p: float,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A mask of ones (kept) and zeros (dropped), reproducible from ``(seed, index)``.

    Parameters
    ----------
    seed, index
        Seed of the call and index of the tile within it.
    shape
        Shape of the mask.
    p
        Dropout probability (rounded to a multiple of 2^-16).
    dtype
        Floating dtype of the mask.

    Notes
    -----
    A float mask multiplies in one vectorised pass; boolean masks (``masked_fill``, or a
    comparison turned to floats) measured several times slower on this path. Thresholding the
    16-bit draws as integers before the conversion to floats took 109 us for 512 x 512 draws
    against 147 us for the conversion first (one thread, side by side).
    """
    below = _threshold(p) - 1
    if below < -(1 << (MASK_BITS - 1)):  # p rounds to 0: every element is kept
        return torch.ones(shape, dtype=dtype)
    count = math.prod(shape)
    words = np.random.SFC64([seed, index]).random_raw(-(-count // 4))
    draws = torch.from_numpy(words.view(np.int16)[:count])
    # A draw u is kept when u >= threshold: clamped to [threshold - 1, threshold] and shifted by
    # threshold - 1 it is 1 if kept, 0 if dropped.
    return draws.clamp_(below, below + 1).sub_(below).to(dtype).view(shape)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        scaled_keep = keep_mask(_draw_seed(), 0, x.shape, p, x.dtype).mul_(1.0 / keep_probability(p))
        ctx.save_for_backward(scaled_keep)
        return x * scaled_keep

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scaled_keep,) = ctx.saved_tensors
        return grad * scaled_keep, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``torch.nn.functional.dropout`` with a cheaper mask on a CPU for tensors of at least
    ``MIN_ELEMENTS`` (otherwise the same call).

    Parameters
    ----------
    x
        Input.
    p
        Probability of zeroing an element.
    training
        Apply dropout only when True.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or x.numel() < MIN_ELEMENTS:
        return torch.nn.functional.dropout(x, p, training=True)
    return _Dropout.apply(x, p)


def _for_each_tile(count: int, work: Callable[[int], None]) -> None:
    """Call ``work(index)`` for every tile index, spread over torch's CPU threads.

    Each thread takes the next tile as it finishes one and runs it single-threaded (torch's
    intra-op threads are set to one meanwhile and restored after), so a descheduled thread
    delays only its own tile.

    Parameters
    ----------
    count
        Number of tiles.
    work
        Computes one tile and writes its results into preallocated outputs.
    """
    threads = min(torch.get_num_threads(), count)
    if threads == 1:
        for index in range(count):
            work(index)
        return

    def no_grad_work(index: int) -> None:
        with torch.no_grad():
            work(index)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(no_grad_work, range(count)):
                pass
    finally:
        torch.set_num_threads(before)


def _probabilities(q_scaled: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Softmax attention weights of a tile."""
    return torch.softmax(torch.bmm(q_scaled, k.transpose(1, 2)), -1)


class _TiledDropoutAttention(torch.autograd.Function):
    """Softmax attention with dropout on the weights, over tiles of (cell, head) pairs.

    Inputs are ``(pairs, tokens, head_dim)``, float32 or float64. The backward pass recomputes
    each tile's probabilities and regenerates its mask; with ``D = rowsum(dO * O)`` and ``s``
    the inverse keep probability, the score gradient is ``s P * (keep * (dO V^T) - D / s)``.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
        pairs, tokens, _ = q.shape
        q_scaled = q * q.shape[-1] ** -0.5
        seed, step = _draw_seed(), max(1, TILE_WEIGHTS // (tokens * tokens))
        out = torch.empty_like(v)

        def tile(index: int) -> None:
            rows = slice(index * step, (index + 1) * step)
            weights = _probabilities(q_scaled[rows], k[rows])
            weights.mul_(keep_mask(seed, index, weights.shape, p, weights.dtype))
            torch.bmm(weights, v[rows], out=out[rows])

        _for_each_tile(-(-pairs // step), tile)
        scale = 1.0 / keep_probability(p)
        out.mul_(scale)
        ctx.save_for_backward(q_scaled, k, v, out)
        ctx.p, ctx.seed, ctx.step, ctx.scale = p, seed, step, scale
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        q_scaled, k, v, out = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        row_dot = (grad_out * out).sum(-1, keepdim=True)
        row_dot.mul_(1.0 / ctx.scale)
        grad_q, grad_k, grad_v = torch.empty_like(q_scaled), torch.empty_like(k), torch.empty_like(v)

        def tile(index: int) -> None:
            rows = slice(index * ctx.step, (index + 1) * ctx.step)
            probs = _probabilities(q_scaled[rows], k[rows])
            kept = keep_mask(ctx.seed, index, probs.shape, ctx.p, probs.dtype).mul_(probs)
            torch.bmm(kept.transpose(1, 2), grad_out[rows], out=grad_v[rows])
            grad_scores = torch.bmm(grad_out[rows], v[rows].transpose(1, 2))
            grad_scores.mul_(kept).addcmul_(probs, row_dot[rows], value=-1.0)
            torch.bmm(grad_scores, k[rows], out=grad_q[rows])
            torch.bmm(grad_scores.transpose(1, 2), q_scaled[rows], out=grad_k[rows])

        _for_each_tile(-(-len(q_scaled) // ctx.step), tile)
        grad_v.mul_(ctx.scale)
        grad_q.mul_(ctx.scale * q_scaled.shape[-1] ** -0.5)
        grad_k.mul_(ctx.scale)
        return grad_q, grad_k, grad_v, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float,
              training: bool) -> torch.Tensor:
    """Softmax attention ``softmax(q k^T / sqrt(head_dim)) v`` with dropout ``p`` on the weights.

    Without dropout, or off a CPU, this is ``scaled_dot_product_attention`` (fused kernels);
    on a CPU with dropout it runs tile by tile (see the module docstring). On a CPU it
    computes in at least float32 and returns the inputs' dtype.

    Parameters
    ----------
    q, k, v
        Queries, keys and values, shape ``(batch, heads, tokens, head_dim)``.
    p
        Dropout probability on the attention weights.
    training
        Apply dropout only when True.

    Returns
    -------
    torch.Tensor
        Attended values, shape ``(batch, heads, tokens, head_dim)``.
    """
    p = p if training else 0.0
    if q.device.type != "cpu":
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p)
    batch, heads, tokens, head_dim = q.shape
    # On a CPU, attention runs in at least float32 even under bf16 autocast. Tiles: at a head
    # width of 16 a bf16 product of queries and keys is no faster, and rounding the weights to
    # bf16 for the product with the values costs a pass over them that the faster product does
    # not repay. Fused kernel: its bf16 backward pass took 2.9x as long as its float32 one
    # (S: 512 tokens, head width 16; 959 against 335 ms, forward 124 against 169 ms).
    wide = [t.to(_score_dtype(t.dtype)) for t in (q, k, v)]
    with torch.autocast("cpu", enabled=False):
        if p == 0.0:
            attended = torch.nn.functional.scaled_dot_product_attention(*wide)
        else:
            flat = [t.reshape(batch * heads, tokens, head_dim) for t in wide]
            attended = _TiledDropoutAttention.apply(*flat, p).view(batch, heads, tokens, head_dim)
    return attended.to(q.dtype)
