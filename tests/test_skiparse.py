"""Skiparse attention equals full attention restricted to each token's Skiparse group."""
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from opensora.models.config import OpenSoraT2VConfig
from opensora.models.skiparse import (group_index, padded_length, skiparse, skiparse_attention,
                                      skiparse_cross_attention, unskiparse)

RATIOS = [1, 2, 3, 4]
TOKENS = [1, 5, 16, 27, 37, 50]  # 27, 37, 50: not multiples of 4, 9 or 16


def scope_mask(num_tokens: int, ratio: int, group: bool) -> torch.Tensor:
    """(N, N) bool: token i may attend to token j iff both fall in the same Skiparse group (the definition)."""
    i = torch.arange(num_tokens)
    g = (i // ratio) % ratio if group else i % ratio
    return g[:, None] == g[None, :]


def dense_reference(q, k, v, allowed):
    """Full attention with a boolean scope (B or 1, N, N); q/k/v (B, N, heads, d)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2).double(), k.transpose(1, 2).double(),
                                         v.transpose(1, 2).double(), attn_mask=allowed[:, None])
    return out.transpose(1, 2)


def qkv(batch, num_tokens, heads=2, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, num_tokens, heads, dim, generator=g) for _ in range(3)]


@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("num_tokens", TOKENS)
def test_skiparse_equals_scoped_dense_attention(num_tokens, ratio, group):
    q, k, v = qkv(2, num_tokens, seed=num_tokens * 10 + ratio)
    out = skiparse_attention(q, k, v, ratio, group)
    ref = dense_reference(q, k, v, scope_mask(num_tokens, ratio, group)[None])
    assert out.shape == q.shape
    assert (out.double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_skiparse_with_key_mask(ratio, group):
    num_tokens = 3 * ratio * ratio + 1  # padded
    q, k, v = qkv(2, num_tokens, seed=ratio)
    keep = torch.rand(2, num_tokens, generator=torch.Generator().manual_seed(1)) > 0.4
    keep[:, : ratio * ratio] = True  # every group keeps at least one key
    out = skiparse_attention(q, k, v, ratio, group, keep=keep)
    allowed = scope_mask(num_tokens, ratio, group)[None] & keep[:, None, :]
    assert (out.double() - dense_reference(q, k, v, allowed)).abs().max() < 1e-5


def test_group_index_matches_definition():
    for ratio in RATIOS:
        for group in (False, True):
            g = group_index(37, ratio, group)
            assert torch.equal(g[:, None] == g[None, :], scope_mask(37, ratio, group))


@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("ratio", RATIOS)
def test_rearrange_gathers_one_group_per_row(ratio, group):
    num_tokens = 29
    ids = torch.arange(1, num_tokens + 1, dtype=torch.float32).view(1, -1, 1).repeat(2, 1, 1)  # 0 marks padding
    rows = skiparse(ids, ratio, group)
    assert rows.shape == (2 * ratio, padded_length(num_tokens, ratio) // ratio, 1)
    g = group_index(num_tokens, ratio, group)
    for r, row in enumerate(rows[:ratio, :, 0]):  # first sample; rows are sample-major
        real = row[row > 0].long() - 1
        assert torch.equal(real, torch.nonzero(g == r).flatten())
    assert torch.equal(unskiparse(rows, ratio, group, num_tokens), ids)


@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("ratio", [1, 4])
def test_release_rearrange_convention(ratio, group):
    """The release works on (N, B, D) with '(g k) b d -> g (k b) d' and '(n m k) b d -> (n k) (m b) d'."""
    x = torch.randn(2, 32, 3)
    ours = skiparse(x, ratio, group)
    seq_first = rearrange(x, "b s d -> s b d")
    if group:
        release = rearrange(seq_first, "(n m k) b d -> (n k) (m b) d", m=ratio, k=ratio)
        release = rearrange(release, "s (m b) d -> (b m) s d", m=ratio)
    else:
        release = rearrange(seq_first, "(g k) b d -> g (k b) d", k=ratio)
        release = rearrange(release, "s (k b) d -> (b k) s d", k=ratio)
    assert torch.equal(ours, release)


@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_release_cross_attention_is_plain_cross_attention(ratio, group):
    q, _, _ = qkv(2, 23, seed=3)
    k, v, _ = qkv(2, 7, seed=4)
    keep = torch.ones(2, 7, dtype=torch.bool)
    keep[1, 4:] = False
    bias = torch.zeros(2, 1, 1, 7).masked_fill(~keep[:, None, None, :], -10000.0)
    grouped = skiparse_cross_attention(q, k, v, ratio, group, bias)
    plain = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=bias).transpose(1, 2)
    assert (grouped - plain).abs().max() < 1e-6


def test_ratio_one_is_full_attention():
    q, k, v = qkv(1, 19)
    full = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    assert (skiparse_attention(q, k, v, 1, False) - full).abs().max() < 1e-6


def test_skiparse_gradients_reach_only_real_tokens():
    q, k, v = (t.requires_grad_() for t in qkv(1, 11))
    skiparse_attention(q, k, v, 3, True).square().sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and torch.isfinite(t.grad).all()


def test_default_dense_blocks_match_release_rule():
    """Release: block i is sparse iff 2 <= i < 30; odd blocks use group skip."""
    cfg = OpenSoraT2VConfig(num_layers=32, sparse1d=True, sparse_n=4)
    assert [cfg.skiparse_ratio(i) for i in range(32)] == [4 if 2 <= i < 30 else 1 for i in range(32)]
    assert [cfg.is_group_block(i) for i in range(4)] == [False, True, False, True]
    # (0, 1, 30, 31) reproduces the release's rule for any depth; the default keeps the last two dense.
    short = OpenSoraT2VConfig(num_layers=8, sparse_n=3, dense_blocks=(0, 1, 30, 31))
    assert [short.skiparse_ratio(i) for i in range(8)] == [1, 1, 3, 3, 3, 3, 3, 3]
    assert [OpenSoraT2VConfig(num_layers=8).skiparse_ratio(i) for i in range(8)] == [1, 1, 4, 4, 4, 4, 1, 1]
    assert all(OpenSoraT2VConfig(sparse1d=False).skiparse_ratio(i) == 1 for i in range(32))
