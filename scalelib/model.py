"""The masked-reconstruction transformer of the reference study, exactly.

A cell is a set of gene tokens, one per gene of the vocabulary. Token ``g`` of a cell is the
learned embedding of gene ``g`` plus a linear projection ``Linear(1 -> d)`` of its expression
value; at a masked position the value is zeroed and the projection is replaced by one learned
mask vector. There is no positional encoding, so the model is permutation-invariant over genes.
Pre-LayerNorm encoder blocks (fused QKV and output projection with biases, GELU feed-forward of
width ``ff_mult * d`` with biases, dropout) are followed directly, with no final LayerNorm, by a
linear head ``d -> 1`` that predicts one value per gene (``d -> k`` for an objective that
predicts ``k`` distribution parameters per gene, see :mod:`scalelib.objectives`). A block computes what
``torch.nn.TransformerEncoderLayer(d, heads, ff_mult * d, dropout, "gelu", batch_first=True,
norm_first=True)`` computes, dropout included (on attention weights, on the feed-forward hidden
layer and on both residual branches; the tests check the equivalence), with attention through
``scaled_dot_product_attention``, or on a CPU with attention dropout through the tiled attention
of :mod:`scalelib.cpu_dropout` (PyTorch's fused CPU kernel has no dropout).

The network is tensor-only: it knows nothing of AnnData or files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scalelib import cpu_dropout
from scalelib.config import ModelSize


class EncoderBlock(nn.Module):
    """One pre-LayerNorm transformer block: ``x + Attn(LN(x))`` then ``x + FF(LN(x))``."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float,
                 attention_dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.attention_dropout = attention_dropout
        self.attn_norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attn_out = nn.Linear(d_model, d_model)
        self.ff_norm = nn.LayerNorm(d_model)
        self.ff_in = nn.Linear(d_model, ff_mult * d_model)
        self.ff_out = nn.Linear(ff_mult * d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Parameters
        ----------
        x
            Token states, shape ``(batch, tokens, d_model)``.

        Returns
        -------
        torch.Tensor
            Updated token states, same shape as ``x``.
        """
        x = x + self._dropout(self.attn_out(self._attend(self.attn_norm(x))))
        hidden = self._dropout(F.gelu(self.ff_in(self.ff_norm(x))))
        return x + self._dropout(self.ff_out(hidden))

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_dropout.dropout(x, self.dropout, self.training)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        attended = cpu_dropout.attention(q, k, v, self.attention_dropout, self.training)
        return attended.transpose(1, 2).reshape(batch, tokens, width)


class MaskedExpressionTransformer(nn.Module):
    """Predict masked gene expression values from the rest of the cell.

    Parameters
    ----------
    size
        Width, depth, heads and feed-forward multiple.
    n_genes
        Vocabulary size V (the number of gene tokens per cell).
    dropout
        Dropout on the feed-forward hidden layer and on both residual branches.
    attention_dropout
        Dropout on attention weights (None: same as ``dropout``). On a CPU it costs extra
        (see :mod:`scalelib.cpu_dropout`): without it, attention uses PyTorch's fused kernel.
    head_outputs
        Outputs per gene: 1 (a value) or more (the parameters of a predicted distribution).
    gene_outputs
        Distribution parameters learned once per gene, shared by all cells and appended after
        the head's outputs (a per-gene negative-binomial dispersion); 0 for none.
    """

    def __init__(self, size: ModelSize, n_genes: int, dropout: float = 0.1,
                 attention_dropout: float | None = None, head_outputs: int = 1,
                 gene_outputs: int = 0) -> None:
        super().__init__()
        self.size = size
        self.n_genes = n_genes
        self.head_outputs = head_outputs
        self.gene_outputs = gene_outputs
        d = size.d_model
        self.gene_embedding = nn.Embedding(n_genes, d)
        self.value_projection = nn.Linear(1, d)
        self.mask_embedding = nn.Parameter(torch.empty(d))
        self.blocks = nn.ModuleList(
            EncoderBlock(d, size.n_heads, size.ff_mult, dropout,
                         dropout if attention_dropout is None else attention_dropout)
            for _ in range(size.n_layers)
        )
        self.head = nn.Linear(d, head_outputs)
        # registered only when used, so models without it keep their state dicts
        self.gene_parameters = (nn.Parameter(torch.zeros(n_genes, gene_outputs))
                                if gene_outputs else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise weights: normal(0, 0.02) for matrices and embeddings, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.normal_(self.mask_embedding, std=0.02)
        if self.gene_parameters is not None:  # as the head's zero bias would start them
            nn.init.zeros_(self.gene_parameters)

    def encode(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return the final hidden states, shape ``(batch, n_genes, d_model)``.

        Parameters
        ----------
        values
            Normalised log1p expression, shape ``(batch, n_genes)``.
        mask
            Boolean, True where a gene is masked, same shape as ``values``.
        """
        if values.shape[-1] != self.n_genes:
            raise ValueError(f"expected {self.n_genes} genes per cell, got {values.shape[-1]}")
        visible = values.masked_fill(mask, 0.0).unsqueeze(-1)
        value_tokens = torch.where(
            mask.unsqueeze(-1), self.mask_embedding.to(visible.dtype), self.value_projection(visible)
        )
        x = self.gene_embedding.weight + value_tokens
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predict one value per gene, shape ``(batch, n_genes)``, or with more outputs per
        gene ``(batch, n_genes, head_outputs + gene_outputs)``, the per-gene parameters last;
        score on masked genes.

        Parameters
        ----------
        values
            Normalised log1p expression, shape ``(batch, n_genes)``.
        mask
            Boolean, True where a gene is masked, same shape as ``values``.
        """
        outputs = self.head(self.encode(values, mask))
        if self.gene_parameters is not None:
            shared = self.gene_parameters.to(outputs.dtype).expand(*outputs.shape[:-1], -1)
            outputs = torch.cat([outputs, shared], dim=-1)
        return outputs.squeeze(-1) if outputs.shape[-1] == 1 else outputs

    def cell_embedding(self, values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean-pooled final hidden state per cell, shape ``(batch, d_model)``.

        Parameters
        ----------
        values
            Normalised log1p expression, shape ``(batch, n_genes)``.
        mask
            Boolean, True where a gene is masked, same shape as ``values``; None masks nothing.
        """
        if mask is None:
            mask = torch.zeros_like(values, dtype=torch.bool)
        return self.encode(values, mask).mean(dim=1)

    def num_parameters(self) -> int:
        """Number of trainable parameters, embeddings included (the published count)."""
        return sum(p.numel() for p in self.parameters())

    def training_flops_per_cell(self) -> float:
        """Training FLOPs per cell; see :func:`training_flops_per_cell`."""
        return training_flops_per_cell(self.size, self.n_genes)


def count_parameters(size: ModelSize, n_genes: int, head_outputs: int = 1,
                     gene_outputs: int = 0) -> int:
    """Parameter count of :class:`MaskedExpressionTransformer` without building it.

    ``V d`` (gene embedding) + ``2 d`` (value projection) + ``d`` (mask vector)
    + per block ``4 d`` (two LayerNorms) + ``3 d^2 + 3 d`` (QKV) + ``d^2 + d`` (output)
    + ``2 f d^2 + f d + d`` (feed-forward, ``f = ff_mult``) + ``k (d + 1)`` (head with ``k``
    outputs per gene) + ``V g`` (``g`` parameters learned per gene).

    Parameters
    ----------
    size
        Width ``d``, depth, heads and feed-forward multiple ``f``.
    n_genes
        Vocabulary size ``V``.
    head_outputs
        Outputs per gene ``k`` (1 for the MSE objective).
    gene_outputs
        Parameters learned once per gene ``g`` (1 for a per-gene dispersion).

    Returns
    -------
    int
        Trainable parameters, embeddings included; equals
        :meth:`MaskedExpressionTransformer.num_parameters` of the built model.
    """
    d, f = size.d_model, size.ff_mult
    per_block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (2 * f * d * d + f * d + d)
    return (n_genes * d + 2 * d + d + size.n_layers * per_block + head_outputs * (d + 1)
            + n_genes * gene_outputs)


def training_flops_per_cell(size: ModelSize, n_genes: int) -> float:
    """Training FLOPs for one cell (forward plus backward), attention included.

    With ``T = n_genes`` tokens, width ``d``, ``f = ff_mult`` and ``L`` layers, a forward pass
    costs ``2 T (L (4 d^2 + 2 f d^2) + 2 d)`` FLOPs in matrix products (QKV, output and
    feed-forward weights in each block, the value projection and the head) plus
    ``4 L T^2 d`` in attention (``Q K^T`` and the weighted sum of ``V``). Training costs three
    forward passes (the backward pass is about twice the forward). Embedding look-ups,
    LayerNorm, GELU, softmax and the optimiser are not counted.

    Parameters
    ----------
    size
        Width ``d``, depth ``L`` and feed-forward multiple ``f``.
    n_genes
        Tokens per cell ``T`` (the vocabulary size).

    Returns
    -------
    float
        Forward-plus-backward FLOPs for one cell.
    """
    d, f, layers, tokens = size.d_model, size.ff_mult, size.n_layers, n_genes
    matmul = 2 * tokens * (layers * (4 * d * d + 2 * f * d * d) + 2 * d)
    attention = 4 * layers * tokens * tokens * d
    return 3.0 * (matmul + attention)
