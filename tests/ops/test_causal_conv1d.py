"""causal_conv1d: the PyTorch path against the shifted-sum reference and causal-conv1d's documented equivalence."""
import pytest
import torch
import torch.nn.functional as F

from visionzoo.ops import causal_conv1d


def documented(x, weight, bias=None, activation=None):
    """causal-conv1d README: ``F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=dim)[..., :seqlen]``."""
    dim, width = weight.shape
    out = F.conv1d(x.float(), weight.float().unsqueeze(1), None if bias is None else bias.float(),
                   padding=width - 1, groups=dim)[..., :x.shape[-1]]
    return (out if activation is None else F.silu(out)).to(x.dtype)


def grads(fn, x, weight, bias, activation, seed=0):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight) + (() if bias is None else (bias,))]
    out = fn(*leaves[:2], leaves[2] if bias is not None else None, activation)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    return [out.detach()] + list(torch.autograd.grad(out, leaves, dout))


@pytest.mark.parametrize('width,seqlen', [(4, 37), (4, 2), (3, 1), (2, 9), (1, 5)])
@pytest.mark.parametrize('activation,has_bias', [(None, True), ('silu', True), ('swish', False)])
def test_torch_path_matches_reference_and_documented_formula(width, seqlen, activation, has_bias):
    g = torch.Generator().manual_seed(width * 100 + seqlen)
    x = torch.randn(2, 6, seqlen, generator=g)
    weight = torch.randn(6, width, generator=g)
    bias = torch.randn(6, generator=g) if has_bias else None
    got = grads(lambda *a: causal_conv1d(*a, backend='torch'), x, weight, bias, activation)
    ref = grads(lambda *a: causal_conv1d(*a, backend='reference'), x, weight, bias, activation)
    doc = grads(documented, x, weight, bias, activation)
    for name, a, b, c in zip(('out', 'dx', 'dweight', 'dbias'), got, ref, doc):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f'{n} vs reference: {m}')
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f'{n} vs documented: {m}')


def test_causality():
    """Changing x at position t changes no output before t."""
    x = torch.randn(1, 3, 12)
    weight = torch.randn(3, 4)
    x2 = x.clone()
    x2[..., 7] += 1.0
    out, out2 = causal_conv1d(x, weight), causal_conv1d(x2, weight)
    assert torch.equal(out[..., :7], out2[..., :7])
    assert not torch.allclose(out[..., 7:11], out2[..., 7:11])


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_inputs_keep_dtype(dtype):
    x = torch.randn(2, 4, 16).to(dtype)
    weight = torch.randn(4, 4)
    bias = torch.randn(4)
    got = grads(lambda *a: causal_conv1d(*a), x, weight, bias, 'silu')
    ref = grads(documented, x, weight, bias, 'silu')
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == torch.float32
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.float(), b.float(), rtol=3e-2, atol=5e-2)


def test_gradcheck_float64():
    x = torch.randn(1, 3, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: causal_conv1d(*a, activation='silu'), (x, weight, bias))


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(x=torch.randn(2, 4)), r'x must have shape \(batch, dim, seqlen\)'),
    (dict(x=torch.ones(2, 4, 8, dtype=torch.int64)), r'x must have a real floating dtype'),
    (dict(weight=torch.randn(4, 1, 3)), r'weight must have shape \(dim, width\)=\(4, width\), got \(4, 1, 3\)'),
    (dict(weight=torch.randn(5, 3)), r'weight must have shape \(dim, width\)=\(4, width\), got \(5, 3\)'),
    (dict(bias=torch.randn(3)), r'bias must have shape \(dim,\)=\(4,\), got \(3\)'),
    (dict(activation='relu'), r'activation must be one of'),
    (dict(backend='triton'), r'backend must be one of'),
])
def test_bad_input_raises_value_error(kwargs, pattern):
    args = dict(x=torch.randn(2, 4, 8), weight=torch.randn(4, 3), bias=torch.randn(4), activation=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        causal_conv1d(**args)


@pytest.mark.parametrize('backend', ['torch', 'reference'])
def test_reverse_is_the_flipped_causal_conv(backend):
    """Vision Mamba's backward branch: conv of the flipped sequence, flipped back, without flipped copies."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 13, generator=g)
    weight = torch.randn(5, 4, generator=g)
    bias = torch.randn(5, generator=g)
    got = grads(lambda *a: causal_conv1d(*a, reverse=True, backend=backend), x, weight, bias, 'silu')
    flipped = grads(lambda x_, *a: documented(x_.flip(-1), *a).flip(-1), x, weight, bias, 'silu')
    for name, a, b in zip(('out', 'dx', 'dweight', 'dbias'), got, flipped):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f'{n}: {m}')
