"""Neighbourhood attention: every path against the brute-force reference (outputs and gradients of q, k, v, rpb;
1-D, 2-D and 3-D), the reference against NATTEN 0.21 (forward, 1-D to 3-D; NATTEN has no CPU backward and no bias),
the bias convention, the reference's independence of the fast paths' window rule, input validation and dispatch.

The Triton kernels run in Triton's interpreter, which must be switched on before Triton is first imported, so they
run in one subprocess (this file with ``--triton-worker``) that saves inputs, outputs and gradients; the comparisons
happen here.
"""
import importlib
import sys
import warnings

import pytest
import torch
from conftest import compile_triton_kernel_for_cuda, require, run_triton_worker

from visionzoo.ops import neighborhood_attention

torch_path = importlib.import_module('visionzoo.ops.neighborhood_attention.torch')  # the module, not PyTorch

FP64_TOL = dict(rtol=1e-9, atol=1e-10)
FP32_TOL = dict(rtol=1e-4, atol=1e-5)
HALF_TOL = {torch.float16: dict(rtol=1e-2, atol=1e-2), torch.bfloat16: dict(rtol=5e-2, atol=5e-2)}

# name, spatial shape, kernel_size, dilation, is_causal
CASES = [
    ('1d-odd', (13,), 5, 1, False),
    ('1d-even', (12,), 4, 1, False),
    ('1d-dil-uneven', (17,), 3, 4, False),      # groups of 5, 4, 4, 4
    ('1d-causal-dil', (14,), 4, 3, True),
    ('1d-boundary', (12,), 3, 4, False),        # n = k * dilation
    ('2d-nonsquare', (9, 13), 3, 1, False),
    ('2d-even-dil', (11, 10), (4, 3), (2, 3), False),
    ('2d-mixed-causal', (10, 12), (3, 5), (3, 2), (True, False)),
    ('2d-causal', (7, 9), 3, 2, True),
    ('2d-boundary', (6, 8), (3, 4), 2, (False, True)),
    ('3d', (5, 6, 7), (3, 2, 3), (1, 2, 2), (False, True, False)),
    ('3d-even-boundary', (6, 5, 8), (2, 3, 4), (3, 1, 2), (False, False, True)),  # n = k * dilation on every axis
]
IDS = [c[0] for c in CASES]


def rpb_shape(heads, kernel, rank):
    kernel = (kernel,) * rank if isinstance(kernel, int) else kernel
    return (heads,) + tuple(2 * k - 1 for k in kernel)


def make_inputs(spatial, kernel, batch=2, heads=3, dim=8, with_rpb=True, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, *spatial, heads, dim, generator=g).to(dtype) for _ in range(3))
    rpb = torch.randn(rpb_shape(heads, kernel, len(spatial)), generator=g).to(dtype) if with_rpb else None
    return q, k, v, rpb


def run(inputs, kernel, dilation, causal, backend, upstream_seed=1):
    """Output and gradients (q, k, v[, rpb]) of one path for a fixed upstream gradient."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    out = neighborhood_attention(*leaves[:3], kernel, dilation, causal, rpb=leaves[3], backend=backend)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(upstream_seed)).to(out.dtype)
    present = [t for t in leaves if t is not None]
    return [out.detach()] + list(torch.autograd.grad(out, present, dout))


def assert_all_close(got, expected, tol, what=''):
    for name, g, e in zip(('out', 'dq', 'dk', 'dv', 'drpb'), got, expected):
        assert g.shape == e.shape, (what, name, g.shape, e.shape)
        torch.testing.assert_close(g.to(e.dtype), e, **tol, msg=lambda m, n=name: f'{what} {n}: {m}')


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiny tiles and chunks in the PyTorch path, so that small maps span many tiles, halos and chunks."""
    monkeypatch.setattr(torch_path, '_TILE', {1: 3, 2: 2, 3: 2})
    monkeypatch.setattr(torch_path, '_CHUNK_ELEMENTS', 4096)


# ------------------------------------------------------------------------------------------------ the PyTorch path
@pytest.mark.parametrize('with_rpb', [True, False], ids=['rpb', 'no-rpb'])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_torch_path_matches_reference(case, with_rpb, small_tiles):
    _, spatial, kernel, dilation, causal = case
    inputs = make_inputs(spatial, kernel, with_rpb=with_rpb)
    assert_all_close(run(inputs, kernel, dilation, causal, 'torch'),
                     run(inputs, kernel, dilation, causal, 'reference'), FP64_TOL, 'torch vs reference')


@pytest.mark.parametrize('spatial,kernel,dilation,causal', [
    ((30, 33), 7, 2, False),        # default 7 x 7 tiles: several tiles per dilation group, padded last tile
    ((100,), 9, 3, (True,)),        # default 32-query tiles
])
def test_torch_path_default_tiles(spatial, kernel, dilation, causal):
    inputs = make_inputs(spatial, kernel, batch=1, heads=2, dtype=torch.float32, seed=3)
    assert_all_close(run(inputs, kernel, dilation, causal, 'torch'),
                     run(inputs, kernel, dilation, causal, 'reference'), FP32_TOL, 'torch vs reference')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_torch_path_half_inputs(dtype, small_tiles):
    inputs = make_inputs((9, 10), 3, dtype=torch.float32, seed=5)
    half = [t.to(dtype) for t in inputs]
    got = run(half, 3, 2, False, 'torch')
    assert all(t.dtype == dtype for t in got)
    assert_all_close(got, run([t.float() for t in half], 3, 2, False, 'reference'), HALF_TOL[dtype], str(dtype))


def test_torch_path_gradcheck(small_tiles):
    q, k, v, rpb = (t.requires_grad_() for t in make_inputs((5, 6), (3, 2), batch=1, heads=2, dim=3))
    assert torch.autograd.gradcheck(
        lambda *a: neighborhood_attention(*a[:3], (3, 2), (1, 2), (False, True), rpb=a[3], backend='torch'),
        (q, k, v, rpb))


# ----------------------------------------------------------------------------------------------------- semantics
def test_bias_convention_at_borders_and_in_dilation_groups():
    """rpb[h, (j' - i') + k - 1] in group coordinates, also where the window is shifted (NAT/DiNAT convention)."""
    n, kernel, dilation = 8, 3, 2
    v = torch.randn(1, n, 1, 2, dtype=torch.float64)
    q = k = torch.zeros_like(v)  # logits = bias only
    rpb = torch.tensor([[0.3, -1.2, 2.0, 0.7, -0.4]], dtype=torch.float64)
    for backend in ('torch', 'reference'):
        out = neighborhood_attention(q, k, v, kernel, dilation, rpb=rpb, backend=backend)
        # query 7: group 1, coordinate 3 of a 4-long group -> window start clamp(2, 0, 1) = 1: keys 3, 5, 7 at
        # group offsets -2, -1, 0 -> rpb[0], rpb[1], rpb[2]
        w = torch.softmax(rpb[0, :3], 0)
        torch.testing.assert_close(out[0, 7, 0], w @ v[0, [3, 5, 7], 0], **FP64_TOL)
        # query 0: group 0, coordinate 0 -> keys 0, 2, 4 at offsets 0, 1, 2 -> rpb[2], rpb[3], rpb[4]
        w = torch.softmax(rpb[0, 2:], 0)
        torch.testing.assert_close(out[0, 0, 0], w @ v[0, [0, 2, 4], 0], **FP64_TOL)


@pytest.fixture(scope='module')
def natten_functional():
    # natten 0.21.7 is the forward oracle
    return require('natten.functional', "pip install --no-build-isolation --no-deps 'natten==0.21.7'")


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_matches_natten_forward(case, natten_functional):
    _, spatial, kernel, dilation, causal = case
    q, k, v, _ = make_inputs(spatial, kernel, dtype=torch.float32, seed=7)
    na = (natten_functional.na1d, natten_functional.na2d, natten_functional.na3d)[len(spatial) - 1]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # flex attention on CPU warns that it materialises the scores
        expected = na(q, k, v, kernel_size=kernel, dilation=dilation, is_causal=causal)
    for backend in ('reference', 'torch'):
        got = neighborhood_attention(q, k, v, kernel, dilation, causal, backend=backend)
        torch.testing.assert_close(got, expected, **FP32_TOL, msg=lambda m, b=backend: f'{b} vs natten: {m}')


def test_reference_does_not_share_the_window_rule_of_the_fast_paths(monkeypatch):
    """A window rule off by one position in :mod:`.window` (which the PyTorch and Triton paths read) changes the
    PyTorch path and not the reference, so the comparisons above would catch it."""
    window = importlib.import_module('visionzoo.ops.neighborhood_attention.window')
    reference = importlib.import_module('visionzoo.ops.neighborhood_attention.reference')
    assert not any(name.startswith('visionzoo.ops.neighborhood_attention.') and name != reference.__name__
                   for name in (getattr(v, '__module__', '') or '' for v in vars(reference).values()))
    original = window._window_bounds

    def shifted(coord, group_len, kernel, causal):  # every non-causal window one group member further right
        lo, hi = original(coord, group_len, kernel, causal)
        if causal:
            return lo, hi
        lo = torch.minimum(lo + 1, group_len - kernel)
        return lo, lo + kernel

    inputs = make_inputs((9, 7), 3, batch=1, heads=2, dim=4)
    expected = run(inputs, 3, 1, False, 'reference')
    for cache in (window.tile_tables, window.dense_tables):
        cache.cache_clear()
    monkeypatch.setattr(window, '_window_bounds', shifted)
    try:
        assert_all_close(run(inputs, 3, 1, False, 'reference'), expected, FP64_TOL, 'reference with a wrong rule')
        got = run(inputs, 3, 1, False, 'torch')
        assert not torch.allclose(got[0], expected[0]), 'the PyTorch path ignored the shifted window rule'
    finally:
        for cache in (window.tile_tables, window.dense_tables):
            cache.cache_clear()


# ---------------------------------------------------------------------------------------------------- validation
def _bad(**changes):
    q, k, v, rpb = make_inputs((8, 9), 3, dtype=torch.float32)
    args = dict(q=q, k=k, v=v, kernel_size=3, dilation=1, is_causal=False, rpb=rpb)
    args.update(changes)
    return args


@pytest.mark.parametrize('changes,pattern', [
    (dict(k=torch.randn(2, 8, 8, 3, 8)), r'k must have the shape of q \(2, 8, 9, 3, 8\)'),
    (dict(v=torch.randn(2, 8, 9, 3, 8, dtype=torch.float64)), r'v must have the dtype and device of q'),
    (dict(q=torch.randn(2, 8, 9)), r'q must have 4, 5 or 6 dimensions'),
    (dict(q=torch.ones(2, 8, 9, 3, 8, dtype=torch.int64)), r'q must have a real floating dtype'),
    (dict(kernel_size=5, dilation=2), r'axis 0 has size 8 < kernel_size 5 \* dilation 2'),
    (dict(kernel_size=(3, 10), rpb=None), r'axis 1 has size 9 < kernel_size 10 \* dilation 1'),
    (dict(kernel_size=(3, 3, 3)), r'kernel_size must be an int >= 1 or a tuple of 2'),
    (dict(kernel_size=0), r'kernel_size must be an int >= 1'),
    (dict(dilation=0), r'dilation must be an int >= 1'),
    (dict(dilation=(1, -2)), r'dilation must be an int >= 1'),
    (dict(is_causal=1), r'is_causal must be a bool'),
    (dict(rpb=torch.randn(3, 5, 4)), r'rpb must have shape \(heads, 2k-1, \.\.\.\)=\(3, 5, 5\), got \(3, 5, 4\)'),
    (dict(rpb=torch.randn(2, 5, 5)), r'rpb must have shape \(heads, 2k-1, \.\.\.\)=\(3, 5, 5\), got \(2, 5, 5\)'),
    (dict(scale='x'), r'scale must be a real number or None'),
])
def test_bad_input_raises_value_error_naming_argument(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        neighborhood_attention(**_bad(**changes))


def test_bad_backend_names(monkeypatch):
    q, k, v, _ = make_inputs((6,), 3, dtype=torch.float32)
    with pytest.raises(ValueError, match=r'backend must be one of'):
        neighborhood_attention(q, k, v, 3, backend='cuda')
    monkeypatch.setenv('VISIONZOO_NA_BACKEND', 'fast')
    with pytest.raises(ValueError, match=r'VISIONZOO_NA_BACKEND must be one of'):
        neighborhood_attention(q, k, v, 3)


# ------------------------------------------------------------------------------------------------------ dispatch
def test_dispatch_default_env_and_override(monkeypatch):
    pkg = importlib.import_module('visionzoo.ops.neighborhood_attention')  # the package; its attribute is the function
    calls = []
    for name in ('neighborhood_attention_torch', 'neighborhood_attention_reference'):
        original = getattr(pkg, name)
        monkeypatch.setattr(pkg, name, lambda *a, _n=name, _o=original: calls.append(_n) or _o(*a))
    q, k, v, _ = make_inputs((6,), 3, dtype=torch.float32)
    monkeypatch.delenv('VISIONZOO_NA_BACKEND', raising=False)
    neighborhood_attention(q, k, v, 3)
    assert calls[-1] == 'neighborhood_attention_torch'  # CPU tensors: the PyTorch path
    monkeypatch.setenv('VISIONZOO_NA_BACKEND', 'reference')
    neighborhood_attention(q, k, v, 3)
    assert calls[-1] == 'neighborhood_attention_reference'
    neighborhood_attention(q, k, v, 3, backend='torch')  # an explicit backend wins over the environment
    assert calls[-1] == 'neighborhood_attention_torch'


def test_triton_backend_on_cpu_without_interpreter_is_refused():
    pytest.importorskip('triton')
    from visionzoo.ops.neighborhood_attention import triton as triton_path
    if triton_path.interpreting():
        pytest.skip('this process runs Triton in interpreter mode')
    q, k, v, _ = make_inputs((6,), 3, dtype=torch.float32)
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
        neighborhood_attention(q, k, v, 3, backend='triton')
    with pytest.raises(ValueError, match=r"backend 'triton' takes float16, bfloat16 or float32"):
        neighborhood_attention(q.double(), k.double(), v.double(), 3, backend='triton')


# ---------------------------------------------------------------------------------------------- the Triton kernels
TRITON_CASES = [
    # name, spatial, kernel, dilation, causal, dtype
    ('1d-even-dil-uneven', (37,), 4, 2, False, torch.float32),
    ('1d-causal', (20,), 5, 1, True, torch.float32),
    ('2d-mixed-causal', (9, 13), 3, (2, 3), (True, False), torch.float32),
    ('2d-boundary', (6, 12), (3, 4), (2, 3), False, torch.float32),
    ('3d', (4, 6, 8), (3, 2, 3), (1, 1, 2), (False, True, False), torch.float32),
    ('2d-fp16', (8, 9), 3, 1, False, torch.float16),
    ('2d-bf16', (8, 9), 3, (1, 2), False, torch.bfloat16),
]


def _triton_worker(path):
    """Run every Triton case (this process has TRITON_INTERPRET=1) and save inputs and results."""
    from visionzoo.ops.neighborhood_attention import triton as triton_path
    assert triton_path.interpreting(), 'the worker must run with TRITON_INTERPRET=1'
    results = {}
    for name, spatial, kernel, dilation, causal, dtype in TRITON_CASES:
        inputs = make_inputs(spatial, kernel, batch=2, heads=2, dim=8, dtype=dtype, seed=11)
        results[name] = (inputs, run(inputs, kernel, dilation, causal, 'triton'))
    torch.save(results, path)


@pytest.fixture(scope='module')
def triton_results(tmp_path_factory):
    return run_triton_worker(__file__, tmp_path_factory.mktemp('triton'), 'VISIONZOO_NA_BACKEND')


@pytest.mark.parametrize('name', [c[0] for c in TRITON_CASES])
def test_triton_kernels_interpreted_match_reference(name, triton_results):
    _, _, kernel, dilation, causal, dtype = next(c for c in TRITON_CASES if c[0] == name)
    inputs, got = triton_results[name]
    assert all(t.dtype == dtype for t in got)
    expected = run([t.float() for t in inputs], kernel, dilation, causal, 'reference')
    assert_all_close(got, expected, FP32_TOL if dtype == torch.float32 else HALF_TOL[dtype], f'triton {name}')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (the interpreter tests cover CPU)')
@pytest.mark.parametrize('dtype,tol', [(torch.float32, FP32_TOL), (torch.bfloat16, HALF_TOL[torch.bfloat16])])
def test_triton_on_cuda_matches_reference(dtype, tol):
    """The compiled kernels at a NAT-like size (several tiles, dilation), against the float32 reference."""
    inputs = make_inputs((28, 30), 7, batch=2, heads=4, dim=32, dtype=dtype, seed=13)
    got = run([t.cuda() for t in inputs], 7, 2, False, 'triton')
    assert_all_close([t.cpu() for t in got], run([t.float() for t in inputs], 7, 2, False, 'reference'), tol, 'cuda')


@pytest.mark.parametrize('kernel', ['fwd', 'bwd'])
@pytest.mark.parametrize('dtype', ['fp32', 'bf16'])
def test_triton_kernels_compile_for_cuda(kernel, dtype):
    """The kernels compile for CUDA (dot shapes, atomics on 2-D blocks, constexpr branches, casts)."""
    constexprs = dict(HAS_RPB=True, FP32_DOT=dtype == 'fp32', BLOCK_M=64, BLOCK_N=32, BLOCK_D=32)
    fp32_ptrs = {'lse_ptr', 'delta_ptr', 'rpb_ptr', 'dk_ptr', 'dv_ptr', 'drpb_ptr'}

    def ptr_type(p):
        return '*i32' if p in ('qidx_ptr', 'kidx_ptr', 'bidx_ptr') else '*fp32' if p in fp32_ptrs else f'*{dtype}'
    compile_triton_kernel_for_cuda('visionzoo.ops.neighborhood_attention.triton', f'_na_{kernel}_kernel', constexprs,
                                   ptr_type, lambda p: 'fp32' if 'scale' in p else 'i32')


# --------------------------------------------------------------------------------------------------------- layer
def test_layer_state_dict_layout_and_forward():
    """NAT/DiNAT parameter names and shapes; forward = qkv -> op (with rpb) -> proj, and gradients reach rpb."""
    from visionzoo.layers import NeighborhoodAttention2D
    torch.manual_seed(0)
    layer = NeighborhoodAttention2D(16, 2, kernel_size=3, dilation=(1, 2)).double()
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {
        'qkv.weight': (48, 16), 'qkv.bias': (48,), 'rpb': (2, 5, 5), 'proj.weight': (16, 16), 'proj.bias': (16,)}
    x = torch.randn(2, 6, 7, 16, dtype=torch.float64)
    out = layer(x)
    q, k, v = layer.qkv(x).reshape(2, 6, 7, 3, 2, 8).unbind(3)
    expected = neighborhood_attention(q, k, v, 3, (1, 2), rpb=layer.rpb, backend='reference')
    expected = layer.proj(expected.reshape(2, 6, 7, 16))
    torch.testing.assert_close(out, expected, **FP64_TOL)
    out.sum().backward()
    assert layer.rpb.grad is not None and layer.rpb.grad.abs().sum() > 0


def test_layer_pads_maps_smaller_than_the_window():
    from visionzoo.layers import NeighborhoodAttention2D
    torch.manual_seed(0)
    layer = NeighborhoodAttention2D(8, 2, kernel_size=5, rel_pos_bias=False).double()
    assert layer.rpb is None
    x = torch.randn(1, 3, 6, 8, dtype=torch.float64)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 2))  # height 3 -> 5, as NATTEN <= 0.17 did
    torch.testing.assert_close(layer(x), layer(padded)[:, :3], **FP64_TOL)
    with pytest.raises(ValueError, match='attn_drop must be 0'):
        NeighborhoodAttention2D(8, 2, 3, attn_drop=0.1)
    with pytest.raises(ValueError, match=r'dim \(8\) must be divisible by num_heads \(3\)'):
        NeighborhoodAttention2D(8, 3, 3)


if __name__ == '__main__' and len(sys.argv) == 3 and sys.argv[1] == '--triton-worker':
    _triton_worker(sys.argv[2])
