import pytest
import torch

from ncollapse import etf_gram, etf_gram_error, simplex_etf


@pytest.mark.parametrize(("dim", "k"), [(64, 10), (9, 10), (128, 100), (1000, 512), (4096, 1000)])
def test_gram_is_simplex_etf(dim, k):
    m = simplex_etf(dim, k)
    assert m.shape == (dim, k)
    assert m.dtype == torch.float32
    gram = m.double().T @ m.double()
    expected = (1 + 1 / (k - 1)) * torch.eye(k, dtype=torch.float64) - torch.ones(
        k, k, dtype=torch.float64
    ) / (k - 1)
    assert torch.allclose(gram, expected, atol=1e-5)
    assert torch.allclose(
        gram.diagonal(), torch.ones(k, dtype=torch.float64), atol=1e-5
    )  # unit columns
    assert m.double().sum(dim=1).abs().max() < 1e-5  # columns sum to zero
    assert etf_gram_error(m) < 1e-5


def test_dim_k_minus_one_included():
    m = simplex_etf(9, 10, dtype=torch.float64)
    assert etf_gram_error(m) < 1e-12
    assert torch.linalg.matrix_rank(m) == 9


def test_seeds():
    assert torch.equal(simplex_etf(64, 10, seed=3), simplex_etf(64, 10, seed=3))
    assert not torch.allclose(simplex_etf(64, 10, seed=3), simplex_etf(64, 10, seed=4))
    assert torch.equal(simplex_etf(9, 10, seed=1), simplex_etf(9, 10, seed=1))
    assert not torch.allclose(simplex_etf(9, 10, seed=1), simplex_etf(9, 10, seed=2))


def test_global_rng_untouched():
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    simplex_etf(32, 10, seed=5)
    assert torch.equal(torch.rand(3), a)


@pytest.mark.parametrize(("dim", "k"), [(8, 10), (64, 100), (512, 1000)])
def test_too_narrow_raises_with_remedies(dim, k):
    with pytest.raises(ValueError) as info:
        simplex_etf(dim, k)
    msg = str(info.value)
    assert "no simplex ETF" in msg
    assert "wider feature" in msg and "projection" in msg
    assert str(k - 1) in msg


def test_bad_class_count():
    with pytest.raises(ValueError, match="at least 2 classes"):
        simplex_etf(10, 1)


def test_etf_gram_matches_formula():
    g = etf_gram(4)
    assert torch.allclose(g.diagonal(), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(g[0, 1], torch.tensor(-1 / 3, dtype=torch.float64))
