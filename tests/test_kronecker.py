"""Kronecker masks against their definition, and the semantics of masked temporal attention."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from claver.models.kronecker import (
    KroneckerTemporalBlock,
    cached_kronecker_mask,
    kronecker_mask,
)

SIZES = [(1, 1), (1, 5), (3, 1), (2, 3), (4, 5), (8, 2), (3, 7)]


def allowed_by_definition(t, l, t2, l2, mode):
    if mode == "kmt":
        return t2 != t or l2 == l
    return (t2, l2) == (t, l) or t2 < t


@pytest.mark.parametrize("mode", ["kmt", "kmct"])
@pytest.mark.parametrize("T,L", SIZES)
def test_mask_equals_definition(T, L, mode):
    mask = kronecker_mask(T, L, mode)
    assert mask.shape == (T * L, T * L) and mask.dtype == torch.bool
    for (t, l), (t2, l2) in itertools.product(itertools.product(range(T), range(L)), repeat=2):
        assert mask[t * L + l, t2 * L + l2].item() == allowed_by_definition(t, l, t2, l2, mode)


@pytest.mark.parametrize("mode", ["kmt", "kmct"])
@pytest.mark.parametrize("T,L", SIZES)
def test_mask_equals_kronecker_formula(T, L, mode):
    blocked = torch.kron(torch.eye(T), 1 - torch.eye(L))
    if mode == "kmct":
        blocked = blocked + torch.kron(torch.ones(T, T).triu(1), torch.ones(L, L))
    assert torch.equal(kronecker_mask(T, L, mode), blocked == 0)
    # no row is ever fully masked: every token sees at least itself
    assert kronecker_mask(T, L, mode).any(dim=1).all()
    assert kronecker_mask(T, L, mode).diagonal().all()


def test_kmct_first_frame_sees_only_itself():
    m = kronecker_mask(4, 3, "kmct")
    assert torch.equal(m[:3], torch.cat([torch.eye(3, dtype=torch.bool),
                                         torch.zeros(3, 9, dtype=torch.bool)], dim=1))


def test_mask_bad_input():
    with pytest.raises(ValueError, match="mask mode"):
        kronecker_mask(2, 2, "causal")
    with pytest.raises(ValueError, match="T=0"):
        kronecker_mask(0, 2)
    with pytest.raises(ValueError, match="mask mode"):
        KroneckerTemporalBlock(16, 2, "full")


def test_mask_cache_returns_same_tensor():
    a = cached_kronecker_mask(4, 5, "kmt", torch.device("cpu"))
    assert a is cached_kronecker_mask(4, 5, "kmt", "cpu")
    assert a is not cached_kronecker_mask(4, 5, "kmct", "cpu")


def _block(mode, width=32, heads=4, seed=0):
    torch.manual_seed(seed)
    return KroneckerTemporalBlock(width, heads, mode).eval()


def test_kmct_future_frames_do_not_change_past_outputs():
    T, L, D = 5, 4, 32
    block = _block("kmct")
    x = torch.randn(2, T * L, D)
    y = block(x, T)
    for t in range(T - 1):
        x2 = x.clone()
        x2[:, (t + 1) * L:] = torch.randn_like(x2[:, (t + 1) * L:])
        y2 = block(x2, T)
        torch.testing.assert_close(y2[:, : (t + 1) * L], y[:, : (t + 1) * L])
        assert not torch.allclose(y2[:, (t + 1) * L:], y[:, (t + 1) * L:])


def test_kmt_same_frame_tokens_only_reach_through_themselves():
    """Changing token (t, j) changes token (t, l != j) only via other frames' tokens — with a
    single frame there are none, so within-frame tokens are fully independent."""
    T, L, D = 3, 4, 32
    block = _block("kmt")
    # single frame: each token attends only to itself
    x = torch.randn(2, L, D)
    y = block(x, 1)
    x2 = x.clone()
    x2[:, 1] += torch.randn(D)
    y2 = block(x2, 1)
    keep = [0, 2, 3]
    torch.testing.assert_close(y2[:, keep], y[:, keep])
    # several frames: the Jacobian of output (t, l) w.r.t. input (t, j), j != l, is zero
    x = torch.randn(1, T * L, D, requires_grad=True)
    out = block(x, T)
    for t, l in [(0, 0), (1, 2), (2, 3)]:
        (grad,) = torch.autograd.grad(out[0, t * L + l].sum(), x, retain_graph=True)
        for j in range(L):
            norm = grad[0, t * L + j].abs().sum()
            assert (norm > 0) if j == l else (norm == 0), (t, l, j)
        other = grad[0, [i for i in range(T * L) if i // L != t]]
        assert other.abs().sum() > 0  # other frames do contribute


@pytest.mark.parametrize("mode", ["kmt", "kmct"])
def test_block_equals_multihead_attention_with_float_mask(mode):
    """Our SDPA path vs nn.MultiheadAttention with an additive -inf mask (same weights)."""
    T, L, D, H = 4, 5, 32, 4
    block = _block(mode, D, H)
    mha = nn.MultiheadAttention(D, H, batch_first=True)
    mha.in_proj_weight.data.copy_(block.temporal_attn.in_proj_weight.data)
    mha.in_proj_bias.data.copy_(block.temporal_attn.in_proj_bias.data)
    mha.out_proj.load_state_dict(block.temporal_attn.out_proj.state_dict())
    mask = kronecker_mask(T, L, mode)
    float_mask = torch.zeros(T * L, T * L).masked_fill(~mask, float("-inf"))
    x = torch.randn(3, T * L, D)
    h = block.temporal_ln_1(x)
    ref = x + mha(h, h, h, attn_mask=float_mask, need_weights=False)[0]
    ref = ref + block.temporal_mlp(block.temporal_ln_2(ref))
    torch.testing.assert_close(block(x, T), ref, atol=1e-5, rtol=1e-5)


def test_block_rejects_token_count_not_multiple_of_frames():
    with pytest.raises(ValueError, match="not a multiple of num_frames=4"):
        _block("kmt")(torch.randn(1, 10, 32), 4)
