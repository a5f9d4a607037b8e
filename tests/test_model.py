"""The transformer: the published parameter counts, the architecture, masking, FLOPs."""

import pytest
import torch
from torch import nn

from scalelib.bench import copy_block_weights
from scalelib.config import DEMO_LADDER, PAPER_LADDER, ModelSize, find_size
from scalelib.errors import ScalelibError
from scalelib.model import (
    EncoderBlock,
    MaskedExpressionTransformer,
    count_parameters,
    training_flops_per_cell,
)

# Kendiukhov 2026 (arXiv 2602.15253), by vocabulary size V.
PUBLISHED_PARAMS = {
    512: {"XXS": 533, "TINY": 9_953, "XS": 132_993, "S": 859_137, "M": 19_178_497,
          "L": 100_510_801},
    1024: {"XXS": 1_045, "XS": 165_761, "S": 924_673, "M": 19_440_641, "L": 101_033_041,
           "XL": 341_557_249},
}


@pytest.mark.parametrize(
    ("n_genes", "name"), [(v, name) for v, sizes in PUBLISHED_PARAMS.items() for name in sizes]
)
def test_paper_ladder_matches_published_parameter_counts(n_genes, name):
    size = find_size(name)
    with torch.device("meta"):  # no memory for the 3.4e8-parameter model
        model = MaskedExpressionTransformer(size, n_genes)
    assert model.num_parameters() == PUBLISHED_PARAMS[n_genes][name]
    assert count_parameters(size, n_genes) == PUBLISHED_PARAMS[n_genes][name]


def test_demo_ladder_spans_three_orders_of_magnitude():
    params = [count_parameters(size, 128) for size in DEMO_LADDER]
    assert len(DEMO_LADDER) == 7
    assert params == sorted(params)
    assert params[-1] / params[0] >= 1e3


def test_block_computes_what_torch_transformer_encoder_layer_computes():
    torch.manual_seed(0)
    d_model, heads, ff_mult = 32, 4, 4
    reference = nn.TransformerEncoderLayer(d_model, heads, ff_mult * d_model, dropout=0.1,
                                           activation="gelu", batch_first=True, norm_first=True)
    block = EncoderBlock(d_model, heads, ff_mult, dropout=0.1, attention_dropout=0.1)
    copy_block_weights(block, reference)
    x = torch.randn(3, 50, d_model)
    torch.testing.assert_close(block.eval()(x), reference.eval()(x))
    assert sum(p.numel() for p in block.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )


SMALL = ModelSize("t", 8, 2, 2, 2)


def _model(n_genes=12, size=SMALL):
    torch.manual_seed(0)
    return MaskedExpressionTransformer(size, n_genes).eval()


def test_masked_values_do_not_reach_the_model():
    model = _model()
    values = torch.rand(4, 12) * 3
    mask = torch.zeros(4, 12, dtype=torch.bool)
    mask[:, [1, 5]] = True
    altered = values.clone()
    altered[:, [1, 5]] = 99.0
    torch.testing.assert_close(model(values, mask), model(altered, mask))
    assert not torch.allclose(model(values, ~mask), model(altered, ~mask))


def test_model_is_permutation_invariant_over_genes():
    model = _model()
    values, mask = torch.rand(3, 12), torch.rand(3, 12) < 0.3
    permutation = torch.randperm(12)
    permuted = _model()
    with torch.no_grad():
        permuted.gene_embedding.weight.copy_(model.gene_embedding.weight[permutation])
    torch.testing.assert_close(
        permuted(values[:, permutation], mask[:, permutation]),
        model(values, mask)[:, permutation],
    )


def test_outputs_and_cell_embedding_shapes():
    model = _model()
    values = torch.rand(5, 12)
    assert model(values, torch.zeros_like(values, dtype=torch.bool)).shape == (5, 12)
    assert model.cell_embedding(values).shape == (5, 8)
    with pytest.raises(ValueError, match="12 genes"):
        model(torch.rand(2, 10), torch.zeros(2, 10, dtype=torch.bool))


def test_training_flops_formula_on_a_hand_computed_example():
    size = ModelSize("hand", d_model=2, n_layers=1, n_heads=1, ff_mult=1)
    # per token: 2 * (4*4 + 2*1*4 + 2*2) = 56; 3 tokens -> 168; attention 4*1*9*2 = 72
    assert training_flops_per_cell(size, 3) == 3 * (168 + 72)
    assert _model().training_flops_per_cell() == training_flops_per_cell(SMALL, 12)


def test_sizes_check_their_shape():
    with pytest.raises(ScalelibError, match="divisible"):
        ModelSize("bad", 10, 1, 3, 1)
    with pytest.raises(ScalelibError, match="unknown size"):
        find_size("HUGE")


def test_paper_ladder_is_the_published_one():
    shapes = {s.name: (s.d_model, s.n_layers, s.n_heads, s.ff_mult) for s in PAPER_LADDER}
    assert shapes == {
        "XXS": (1, 1, 1, 1), "TINY": (16, 1, 1, 1), "XS": (64, 2, 4, 4), "S": (128, 4, 8, 4),
        "M": (512, 6, 8, 4), "L": (1020, 8, 12, 4), "XL": (1536, 12, 16, 4),
    }
