import pytest
import torch
import torch.nn.functional as F

from searcher.embedder import pool

# Two sequences: the second has one real token and two padding positions holding huge values.
HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [5.0, -6.0]],
        [[2.0, -1.0], [100.0, 100.0], [-100.0, 100.0]],
    ]
)
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_mean_averages_only_real_tokens():
    pooled = pool(HIDDEN, MASK, "mean")
    assert torch.allclose(pooled, torch.tensor([[3.0, 0.0], [2.0, -1.0]]))


def test_max_ignores_padding():
    pooled = pool(HIDDEN, MASK, "max")
    assert torch.equal(pooled, torch.tensor([[5.0, 4.0], [2.0, -1.0]]))


def test_cls_takes_the_first_token():
    assert torch.equal(pool(HIDDEN, MASK, "cls"), HIDDEN[:, 0])


@pytest.mark.parametrize("strategy", ["mean", "max", "cls"])
def test_all_zero_mask_gives_finite_vectors(strategy):
    pooled = pool(HIDDEN, torch.zeros_like(MASK), strategy)
    normalized = F.normalize(pooled, dim=-1)
    assert torch.isfinite(normalized).all()


def test_all_zero_mask_mean_and_max_are_zero():
    empty = torch.zeros_like(MASK)
    assert torch.equal(pool(HIDDEN, empty, "mean"), torch.zeros(2, 2))
    assert torch.equal(pool(HIDDEN, empty, "max"), torch.zeros(2, 2))


def test_unknown_strategy_names_the_valid_ones():
    with pytest.raises(ValueError, match="mean, max, cls"):
        pool(HIDDEN, MASK, "median")
