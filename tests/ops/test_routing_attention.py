"""Bi-level routing attention: every path against the official gather formulation (outputs and gradients of q, k, v),
the gather formulation and the routing against independent oracles (a dense masked softmax, the official region
means), the padding convention, input validation and dispatch.

The Triton kernels run in Triton's interpreter, which must be switched on before Triton is first imported, so they
run in one subprocess (this file with ``--triton-worker``) that saves inputs and results; the comparisons happen
here.
"""
import importlib
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import compile_triton_kernel_for_cuda, run_triton_worker

from visionzoo.ops.routing_attention import region_routing, routing_attention

torch_path = importlib.import_module('visionzoo.ops.routing_attention.torch')  # the module, not PyTorch

FP64_TOL = dict(rtol=1e-9, atol=1e-10)
FP32_TOL = dict(rtol=1e-4, atol=1e-5)
HALF_TOL = {torch.float16: dict(rtol=1e-2, atol=1e-2), torch.bfloat16: dict(rtol=5e-2, atol=5e-2)}

# name, (batch, height, width, heads, dim_qk, dim_v), n_win, topk
CASES = [
    ('divisible', (2, 8, 8, 2, 4, 4), 4, 3),
    ('padded-nonsquare', (2, 9, 13, 3, 4, 5), 4, 5),     # regions of 3 x 4 tokens, bottom and right padding
    ('smaller-than-n_win', (1, 5, 4, 2, 3, 3), 7, 5),    # 1 x 1 regions; 33 of 49 regions are all padding
    ('topk-all-regions', (2, 6, 7, 2, 4, 3), 3, 9),      # topk = n_win**2: full attention over the padded map
    ('topk-1', (1, 12, 10, 2, 4, 4), 2, 1),
]
IDS = [c[0] for c in CASES]


def make_inputs(shape, dtype=torch.float64, seed=0):
    batch, height, width, heads, dim_qk, dim_v = shape
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, height, width, heads, dim_qk, generator=g).to(dtype) for _ in range(2))
    return q, k, torch.randn(batch, height, width, heads, dim_v, generator=g).to(dtype)


def run(inputs, n_win, topk, backend, upstream_seed=1):
    """Output and gradients of q, k, v of one path for a fixed upstream gradient."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = routing_attention(*leaves, n_win, topk, backend=backend)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(upstream_seed)).to(out.dtype)
    return [out.detach()] + list(torch.autograd.grad(out, leaves, dout))


def assert_all_close(got, expected, tol, what=''):
    for name, g, e in zip(('out', 'dq', 'dk', 'dv'), got, expected):
        assert g.shape == e.shape, (what, name, g.shape, e.shape)
        torch.testing.assert_close(g.to(e.dtype), e, **tol, msg=lambda m, n=name: f'{what} {n}: {m}')


@pytest.fixture
def small_chunks(monkeypatch):
    """A few query regions per chunk in the PyTorch path, so that small maps span several chunks."""
    monkeypatch.setattr(torch_path, '_CHUNK_ELEMENTS', 256)


@pytest.fixture(params=['chunked', 'dense'])
def formulation(request, monkeypatch, small_chunks):
    """The PyTorch path's chunked gather/scatter formulation or its dense masked one, whatever the routed
    fraction."""
    monkeypatch.setattr(torch_path, '_DENSE_MIN_FRACTION', 2.0 if request.param == 'chunked' else 0.0)
    return request.param


# ------------------------------------------------------------------------------------------------ the PyTorch path
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_torch_path_matches_gather_reference(case, formulation):
    _, shape, n_win, topk = case
    inputs = make_inputs(shape)
    assert_all_close(run(inputs, n_win, topk, 'torch'), run(inputs, n_win, topk, 'reference'), FP64_TOL,
                     f'torch ({formulation}) vs reference')


def test_torch_path_picks_dense_from_a_quarter_of_the_regions(monkeypatch):
    calls = []
    original = torch_path._dense_masked
    monkeypatch.setattr(torch_path, '_dense_masked', lambda *a: calls.append(a[3].shape[-1]) or original(*a))
    q, k, v = make_inputs((1, 8, 8, 1, 4, 4))
    for topk in (3, 4, 16):  # of 16 regions
        routing_attention(q, k, v, 4, topk, backend='torch')
    assert calls == [4, 16]


@pytest.mark.parametrize('shape,topk', [((2, 28, 28, 4, 32, 32), 4), ((2, 14, 14, 8, 32, 32), 16)],
                         ids=['stage2-chunked', 'stage3-dense'])
def test_torch_path_biformer_stage_shapes(shape, topk):
    """BiFormer-T stages 2 and 3 at 224² (7 x 7 regions of 16 / 4 tokens, 4 / 8 heads of 32), default settings."""
    inputs = make_inputs(shape, dtype=torch.float32, seed=3)
    assert_all_close(run(inputs, 7, topk, 'torch'), run(inputs, 7, topk, 'reference'), FP32_TOL,
                     'torch vs reference')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_torch_path_half_inputs(dtype, formulation):
    half = [t.to(dtype) for t in make_inputs((1, 9, 10, 2, 8, 8), dtype=torch.float32, seed=5)]
    got = run(half, 3, 2, 'torch')
    assert all(t.dtype == dtype for t in got)
    assert_all_close(got, run([t.float() for t in half], 3, 2, 'reference'), HALF_TOL[dtype], str(dtype))


def test_torch_path_gradcheck(formulation):
    q, k, v = (t.requires_grad_() for t in make_inputs((1, 5, 6, 2, 3, 2)))
    assert torch.autograd.gradcheck(lambda *a: routing_attention(*a, 3, 2, backend='torch'), (q, k, v))


def test_non_contiguous_views_of_a_projection():
    """q, k, v as views of one (…, heads, 2 * dim_qk + dim_v) projection, as BiFormer passes them."""
    qkv = torch.randn(2, 7, 9, 2, 11, dtype=torch.float64)
    views = qkv.split([4, 4, 3], dim=-1)
    dense = [t.contiguous() for t in views]
    for backend in ('torch', 'reference'):
        assert_all_close(run(views, 3, 4, backend), run(dense, 3, 4, backend), FP64_TOL, backend)


# ----------------------------------------------------------------------------------------------------- semantics
def masked_softmax_oracle(q, k, v, n_win, topk, scale):
    """Dense attention over the zero-padded map with a boolean mask from the routing: query token i may attend key
    token j iff region(j) is among the routed regions of region(i)."""
    batch, height, width, heads, _ = q.shape
    rh, rw = -(-height // n_win), -(-width // n_win)
    index = region_routing(q, k, n_win, topk, scale)
    ys, xs = torch.meshgrid(torch.arange(n_win * rh), torch.arange(n_win * rw), indexing='ij')
    region_of = ((ys // rh) * n_win + xs // rw).reshape(-1)
    routed = torch.zeros(batch, n_win * n_win, n_win * n_win, dtype=torch.bool)
    routed.scatter_(2, index, True)
    mask = routed[:, region_of][:, :, region_of]  # (batch, tokens, tokens)

    def padded(t):
        t = F.pad(t, (0, 0, 0, 0, 0, n_win * rw - width, 0, n_win * rh - height))
        return t.flatten(1, 2).transpose(1, 2)  # (batch, heads, tokens, dim)
    out = F.scaled_dot_product_attention(padded(q), padded(k), padded(v), attn_mask=mask[:, None], scale=scale)
    return out.transpose(1, 2).reshape(batch, n_win * rh, n_win * rw, heads, -1)[:, :height, :width]


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_gather_reference_matches_masked_softmax(case):
    _, shape, n_win, topk = case
    q, k, v = make_inputs(shape, seed=2)
    scale = (q.shape[-2] * q.shape[-1]) ** -0.5
    torch.testing.assert_close(routing_attention(q, k, v, n_win, topk, backend='reference'),
                               masked_softmax_oracle(q, k, v, n_win, topk, scale), **FP64_TOL)


def test_routing_is_the_official_region_selection():
    """Official ``TopkRouting`` on region means (bra_legacy.py): mean over each region of the padded map, all
    heads together, logits ``(q_r * scale) @ k_r^T``, ``torch.topk``; the same regions for every head."""
    q, k, _ = make_inputs((2, 10, 13, 2, 4, 4), seed=4)
    n_win, topk, scale = 5, 6, 8 ** -0.5
    qp, kp = (F.pad(t.flatten(-2), (0, 0, 0, 2, 0, 0)) for t in (q, k))  # 10 x 13 -> 10 x 15: 2 x 3 regions

    def region_means(t):  # 'n (j h) (i w) c -> n (j i) c' mean, as the official rearrange + mean([2, 3])
        return t.view(2, n_win, 2, n_win, 3, 8).permute(0, 1, 3, 2, 4, 5).reshape(2, n_win * n_win, 6, 8).mean(2)
    expected = torch.topk((region_means(qp) * scale) @ region_means(kp).transpose(-1, -2), topk, dim=-1).indices
    assert torch.equal(region_routing(q, k, n_win, topk, scale), expected)


def test_padding_convention_is_zero_tokens():
    """A map that does not divide is the same as the map explicitly zero-padded, cropped afterwards."""
    q, k, v = make_inputs((2, 7, 10, 2, 4, 3), seed=6)
    padded = [F.pad(t, (0, 0, 0, 0, 0, 2, 0, 2)) for t in (q, k, v)]  # 9 x 12 = 3 x 3 regions of 3 x 4
    for backend in ('torch', 'reference'):
        torch.testing.assert_close(routing_attention(q, k, v, 3, 4, backend=backend),
                                   routing_attention(*padded, 3, 4, backend=backend)[:, :7, :10], **FP64_TOL)


def test_topk_all_regions_is_full_attention():
    """With topk = all regions, output and gradients equal plain attention over the whole map (SDPA)."""
    q, k, v = (t.requires_grad_() for t in make_inputs((1, 6, 6, 2, 4, 4), seed=7))
    out = routing_attention(q, k, v, 2, 4, backend='torch')
    flat = [t.flatten(1, 2).transpose(1, 2) for t in (q, k, v)]
    expected = F.scaled_dot_product_attention(*flat, scale=8 ** -0.5).transpose(1, 2).reshape(out.shape)
    torch.testing.assert_close(out, expected, **FP64_TOL)
    got = torch.autograd.grad(out.square().sum(), (q, k, v))
    for g, e in zip(got, torch.autograd.grad(expected.square().sum(), (q, k, v))):
        torch.testing.assert_close(g, e, **FP64_TOL)


# ---------------------------------------------------------------------------------------------------- validation
def _bad(**changes):
    q, k, v = make_inputs((2, 8, 9, 2, 4, 4), dtype=torch.float32)
    args = dict(q=q, k=k, v=v, n_win=4, topk=2)
    args.update(changes)
    return args


@pytest.mark.parametrize('changes,pattern', [
    (dict(q=torch.randn(2, 8, 9, 8)), r'q must have shape \(batch, height, width, heads, dim\)'),
    (dict(k=torch.randn(2, 8, 9, 2, 3)), r'k must have the shape of q \(2, 8, 9, 2, 4\)'),
    (dict(v=torch.randn(2, 8, 9, 1, 4)), r'v must have the batch, height, width and heads of q'),
    (dict(v=torch.randn(2, 8, 9, 2, 4, dtype=torch.float64)), r'v must have the dtype and device of q'),
    (dict(q=torch.ones(2, 8, 9, 2, 4, dtype=torch.int64)), r'q must have a real floating dtype'),
    (dict(n_win=0), r'n_win must be an int >= 1'),
    (dict(n_win=2.0), r'n_win must be an int >= 1'),
    (dict(topk=17), r'topk must be an int in \[1, n_win\*\*2 = 16\], got 17'),
    (dict(topk=0), r'topk must be an int in \[1, n_win\*\*2 = 16\]'),
    (dict(scale=-1.0), r'scale must be a positive real number or None'),
])
def test_bad_input_raises_value_error_naming_argument(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        routing_attention(**_bad(**changes))


def test_bad_backend_names(monkeypatch):
    with pytest.raises(ValueError, match=r'backend must be one of'):
        routing_attention(**_bad(), backend='cuda')
    monkeypatch.setenv('VISIONZOO_BRA_BACKEND', 'fast')
    with pytest.raises(ValueError, match=r'VISIONZOO_BRA_BACKEND must be one of'):
        routing_attention(**_bad())


def test_dispatch_default_env_and_override(monkeypatch):
    pkg = importlib.import_module('visionzoo.ops.routing_attention')  # the package; its attribute is the function
    calls = []
    for name in ('routing_attention_torch', 'routing_attention_reference'):
        original = getattr(pkg, name)
        monkeypatch.setattr(pkg, name, lambda *a, _n=name, _o=original: calls.append(_n) or _o(*a))
    monkeypatch.delenv('VISIONZOO_BRA_BACKEND', raising=False)
    routing_attention(**_bad())
    assert calls[-1] == 'routing_attention_torch'  # CPU tensors: the PyTorch path
    monkeypatch.setenv('VISIONZOO_BRA_BACKEND', 'reference')
    routing_attention(**_bad())
    assert calls[-1] == 'routing_attention_reference'
    routing_attention(**_bad(), backend='torch')  # an explicit backend wins over the environment
    assert calls[-1] == 'routing_attention_torch'


def test_triton_backend_on_cpu_without_interpreter_is_refused():
    pytest.importorskip('triton')
    from visionzoo.ops.routing_attention import triton as triton_path
    if triton_path.interpreting():
        pytest.skip('this process runs Triton in interpreter mode')
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
        routing_attention(**_bad(), backend='triton')
    q, k, v = make_inputs((1, 4, 4, 1, 4, 4))
    with pytest.raises(ValueError, match=r"backend 'triton' takes float16, bfloat16 or float32"):
        routing_attention(q, k, v, 2, 1, backend='triton')


# ---------------------------------------------------------------------------------------------- the Triton kernels
# name, shape, n_win, topk, dtype; tiny: the interpreter runs every program in Python (about 1 s per case here)
TRITON_CASES = [
    ('padded', (1, 7, 6, 2, 4, 3), 3, 2, torch.float32),           # 3 x 2 regions, partial at bottom and right
    ('topk-all-regions', (1, 6, 10, 2, 8, 8), 2, 4, torch.float32),  # 15-token regions, one 16-lane block
    ('multi-block-regions', (1, 12, 6, 1, 4, 4), 2, 2, torch.float32),  # 18-token regions: two query/key blocks
    ('fp16', (1, 8, 8, 2, 8, 8), 2, 2, torch.float16),
    ('bf16', (1, 8, 8, 2, 8, 8), 2, 3, torch.bfloat16),
]


def _triton_worker(path):
    """Run every Triton case (this process has TRITON_INTERPRET=1) and save inputs and results; the inputs of the
    first case are passed as views of one projection tensor (strided reads)."""
    from visionzoo.ops.routing_attention import triton as triton_path
    assert triton_path.interpreting(), 'the worker must run with TRITON_INTERPRET=1'
    results = {}
    for i, (name, shape, n_win, topk, dtype) in enumerate(TRITON_CASES):
        inputs = make_inputs(shape, dtype=dtype, seed=11)
        if i == 0:
            inputs = torch.cat(inputs, dim=-1).split([shape[4], shape[4], shape[5]], dim=-1)
        results[name] = (inputs, run(inputs, n_win, topk, 'triton'))
    torch.save(results, path)


@pytest.fixture(scope='module')
def triton_results(tmp_path_factory):
    return run_triton_worker(__file__, tmp_path_factory.mktemp('triton'), 'VISIONZOO_BRA_BACKEND')


@pytest.mark.parametrize('name', [c[0] for c in TRITON_CASES])
def test_triton_kernels_interpreted_match_reference(name, triton_results):
    _, _, n_win, topk, dtype = next(c for c in TRITON_CASES if c[0] == name)
    inputs, got = triton_results[name]
    assert all(t.dtype == dtype for t in got)
    expected = run([t.float() for t in inputs], n_win, topk, 'reference')
    assert_all_close(got, expected, FP32_TOL if dtype == torch.float32 else HALF_TOL[dtype], f'triton {name}')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (the interpreter tests cover CPU)')
@pytest.mark.parametrize('dtype,tol', [(torch.float32, FP32_TOL), (torch.bfloat16, HALF_TOL[torch.bfloat16])])
def test_triton_on_cuda_matches_reference(dtype, tol):
    """The compiled kernels at BiFormer-T stage-1 and padded detection-like sizes, against the float32 reference."""
    for shape, n_win, topk in (((2, 56, 56, 2, 32, 32), 7, 1), ((1, 50, 84, 4, 32, 32), 16, 4)):
        inputs = make_inputs(shape, dtype=dtype, seed=13)
        got = run([t.cuda() for t in inputs], n_win, topk, 'triton')
        assert_all_close([t.cpu() for t in got], run([t.float() for t in inputs], n_win, topk, 'reference'), tol,
                         f'cuda {shape}')


@pytest.mark.parametrize('kernel', ['fwd', 'bwd'])
@pytest.mark.parametrize('dtype', ['fp32', 'bf16'])
def test_triton_kernels_compile_for_cuda(kernel, dtype):
    """The kernels compile for CUDA (dot shapes, atomics on 2-D blocks, constexpr branches, casts)."""
    constexprs = dict(FP32_DOT=dtype == 'fp32', BLOCK_M=64, BLOCK_N=64, BLOCK_DQK=32, BLOCK_DV=32)
    fp32_ptrs = {'lse_ptr', 'delta_ptr', 'dk_ptr', 'dv_ptr'}

    def ptr_type(p):
        return '*i64' if p == 'idx_ptr' else '*fp32' if p in fp32_ptrs else f'*{dtype}'
    compile_triton_kernel_for_cuda('visionzoo.ops.routing_attention.triton', f'_bra_{kernel}_kernel', constexprs,
                                   ptr_type, lambda p: 'fp32' if 'scale' in p else 'i32')


if __name__ == '__main__' and len(sys.argv) == 3 and sys.argv[1] == '--triton-worker':
    _triton_worker(sys.argv[2])
