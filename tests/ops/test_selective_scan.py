"""Selective scan: every path against the sequential reference and against mamba-ssm's ``selective_scan_ref``.

The Triton kernels run in Triton's interpreter, which must be switched on before Triton is first imported, so
they run in one subprocess (this file with ``--triton-worker``) that saves inputs, outputs and gradients; the
comparisons happen here.
"""
import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import compile_triton_kernel_for_cuda, run_triton_worker

from visionzoo.ops import selective_scan, selective_scan_bidirectional

torch_path = importlib.import_module('visionzoo.ops.selective_scan.torch')  # the module, not PyTorch

FP32_TOL = dict(rtol=6e-4, atol=2e-3)  # mamba-ssm's tests, float32
BF16_TOL = dict(rtol=3e-2, atol=5e-2)  # mamba-ssm's tests, bfloat16
FP16_TOL = dict(rtol=3e-3, atol=5e-3)  # mamba-ssm's tests, float16
NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


# ----------------------------------------------------------------------------------------------------------- inputs
def make_inputs(batch=2, dim=4, seqlen=19, dstate=3, b_form='var', c_form='var', groups=1, has_D=True, has_z=True,
                has_bias=True, dtype=torch.float32, seed=0, realistic=False, delta_range=None):
    """Inputs drawn as in mamba-ssm's tests (A = -0.5 rand, delta = 0.5 rand, the rest randn).

    ``b_form``/``c_form``: 'const' (dim, dstate), 'var3' (batch, dstate, seqlen) or 'var' (batch, groups, dstate,
    seqlen). ``realistic`` uses Mamba's parametrisation instead (A = -(1..dstate), delta around softplus^-1(dt)).
    """
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    def bc(form):
        if form == 'const':
            return randn(dim, dstate)
        if form == 'var3':
            return randn(batch, dstate, seqlen).to(dtype)
        return randn(batch, groups, dstate, seqlen).to(dtype)

    u = randn(batch, dim, seqlen).to(dtype)
    if realistic:
        A = -torch.arange(1, dstate + 1, dtype=torch.float32).repeat(dim, 1)
        delta = (0.3 * randn(batch, dim, seqlen)).to(dtype)
        dt = torch.exp(rand(dim) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3)))
                       + torch.log(torch.tensor(1e-3)))
        delta_bias = dt + torch.log(-torch.expm1(-dt))
    else:
        A = -0.5 * rand(dim, dstate)
        delta = (0.5 * rand(batch, dim, seqlen)).to(dtype)
        delta_bias = 0.5 * rand(dim)
    if delta_range is not None:
        delta = (delta_range * (2 * rand(batch, dim, seqlen) - 1)).to(dtype)
    B, C = bc(b_form), bc(c_form)
    D = randn(dim) if has_D else None
    z = randn(batch, dim, seqlen).to(dtype) if has_z else None
    if not has_bias:
        delta_bias = None
    if dtype == torch.float64:
        A, D, delta_bias = (None if t is None else t.double() for t in (A, D, delta_bias))
        B = B.double() if B.dim() == 2 else B
        C = C.double() if C.dim() == 2 else C
    return [u, delta, A, B, C, D, z, delta_bias]


def with_grad(inputs):
    return [None if t is None else t.detach().clone().requires_grad_() for t in inputs]


def run(fn, inputs, upstream_seed=1, **kwargs):
    """Output, last state and gradients (upstream gradient fixed by seed) of fn(*inputs, **kwargs)."""
    leaves = with_grad(inputs)
    out, last = fn(*leaves, return_last_state=True, **kwargs)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(upstream_seed)).to(out.dtype)
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(out, present, dout))
    return out.detach(), last.detach(), [None if t is None else next(grads) for t in leaves]


def assert_all_close(result, expected, tol, what=''):
    """Compare (out, last_state, grads) triples, naming the tensor that differs."""
    out, last, grads = result
    out_e, last_e, grads_e = expected
    torch.testing.assert_close(out.float(), out_e.float(), **tol, msg=lambda m: f'{what} out: {m}')
    torch.testing.assert_close(last.float(), last_e.float(), **tol, msg=lambda m: f'{what} last_state: {m}')
    for name, g, ge in zip(NAMES, grads, grads_e):
        assert (g is None) == (ge is None), name
        if g is not None:
            assert g.dtype == ge.dtype and g.shape == ge.shape, (name, g.dtype, ge.dtype, g.shape, ge.shape)
            torch.testing.assert_close(g.float(), ge.float(), **tol, msg=lambda m, n=name: f'{what} d{n}: {m}')


def reference(*args, reverse=False, **kwargs):
    return selective_scan(*args, backend='reference', reverse=reverse, **kwargs)


# ------------------------------------------------------------------------------------------------- mamba reference
def mamba(mamba_ref, reverse=False):
    """mamba's reference as a function with our signature; ``reverse`` by flipping every (…, seqlen) tensor."""
    def fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
        if reverse:
            u, delta, z = (None if t is None else t.flip(-1) for t in (u, delta, z))
            B, C = (t.flip(-1) if t.dim() >= 3 else t for t in (B, C))
        out, last = mamba_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True)
        return (out.flip(-1) if reverse else out), last
    return fn


# ------------------------------------------------------------------------------------------------ the torch path
@pytest.fixture
def small_chunks(monkeypatch):
    """Force 8-position chunks in the PyTorch path so short sequences span several chunks."""
    monkeypatch.setattr(torch_path, '_MAX_CHUNK', 8)


CASES = [
    # b_form, c_form, groups, has_D, has_z, has_bias, softplus, seqlen, reverse
    ('const', 'const', 1, True, True, True, True, 19, False),
    ('var3', 'var3', 1, False, False, False, False, 19, False),
    ('var', 'var', 2, True, True, True, True, 37, True),
    ('const', 'var', 2, True, False, False, True, 1, False),
    ('var', 'const', 1, False, True, True, False, 16, True),
    ('var3', 'var', 2, True, True, False, True, 150, False),
]


@pytest.mark.parametrize('case', CASES, ids=lambda c: '-'.join(map(str, c)))
def test_reference_matches_mamba(case, mamba_ref):
    """The sequential reference the other paths are held to is itself mamba's semantics."""
    b_form, c_form, groups, has_D, has_z, has_bias, softplus, seqlen, reverse = case
    inputs = make_inputs(seqlen=seqlen, b_form=b_form, c_form=c_form, groups=groups, has_D=has_D, has_z=has_z,
                         has_bias=has_bias, seed=9)
    assert_all_close(run(reference, inputs, delta_softplus=softplus, reverse=reverse),
                     run(mamba(mamba_ref, reverse), inputs, delta_softplus=softplus), FP32_TOL, 'ours vs mamba')


def test_torch_path_large_delta(small_chunks, mamba_ref):
    """delta far past softplus's threshold (20) and past exp's float32 range (88): finite, exact results."""
    inputs = make_inputs(seqlen=30, delta_range=100.0, seed=4)
    assert (inputs[1] > 90).any() and (inputs[1] < -90).any()
    got = run(selective_scan, inputs, backend='torch', delta_softplus=True)
    assert_all_close(got, run(reference, inputs, delta_softplus=True), FP32_TOL, 'vs ours')
    assert_all_close(got, run(mamba(mamba_ref), inputs, delta_softplus=True), FP32_TOL, 'vs mamba')


@pytest.mark.parametrize('case', CASES, ids=lambda c: '-'.join(map(str, c)))
def test_torch_path_matches_reference_and_mamba(case, small_chunks, mamba_ref):
    b_form, c_form, groups, has_D, has_z, has_bias, softplus, seqlen, reverse = case
    inputs = make_inputs(seqlen=seqlen, b_form=b_form, c_form=c_form, groups=groups, has_D=has_D, has_z=has_z,
                         has_bias=has_bias)
    got = run(selective_scan, inputs, backend='torch', delta_softplus=softplus, reverse=reverse)
    assert_all_close(got, run(reference, inputs, delta_softplus=softplus, reverse=reverse), FP32_TOL, 'vs ours')
    assert_all_close(got, run(mamba(mamba_ref, reverse), inputs, delta_softplus=softplus), FP32_TOL, 'vs mamba')


def test_torch_path_default_chunking_long_sequence(mamba_ref):
    """Long sequence with the default chunk length and Mamba's parametrisation (decays close to one)."""
    inputs = make_inputs(batch=1, dim=4, seqlen=1100, dstate=4, groups=1, realistic=True, seed=3)
    assert torch_path._chunk_len(1, 4, 4, 1100) < 1100  # several chunks, the last one partial
    got = run(selective_scan, inputs, backend='torch', delta_softplus=True)
    assert_all_close(got, run(reference, inputs, delta_softplus=True), FP32_TOL, 'vs ours')
    assert_all_close(got, run(mamba(mamba_ref), inputs, delta_softplus=True), FP32_TOL, 'vs mamba')


@pytest.mark.parametrize('dtype,tol', [(torch.bfloat16, BF16_TOL), (torch.float16, FP16_TOL)])
def test_torch_path_half_inputs(dtype, tol, small_chunks, mamba_ref):
    inputs = make_inputs(seqlen=21, b_form='var', c_form='var', groups=2, dtype=dtype)
    got = run(selective_scan, inputs, backend='torch', delta_softplus=True)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert_all_close(got, run(reference, inputs, delta_softplus=True), tol, 'vs ours')
    assert_all_close(got, run(mamba(mamba_ref), inputs, delta_softplus=True), tol, 'vs mamba')


@pytest.mark.parametrize('b_form,c_form,groups,reverse', [('var', 'var', 2, False), ('const', 'var3', 1, True)])
def test_torch_path_gradcheck_float64(b_form, c_form, groups, reverse, monkeypatch):
    monkeypatch.setattr(torch_path, '_MAX_CHUNK', 2)
    inputs = make_inputs(batch=1, dim=2, seqlen=5, dstate=2, b_form=b_form, c_form=c_form, groups=groups,
                         dtype=torch.float64)
    leaves = with_grad(inputs)

    def fn(*args):
        return selective_scan(*args, delta_softplus=True, reverse=reverse, backend='torch')

    assert torch.autograd.gradcheck(fn, tuple(leaves), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_last_state_and_dtypes():
    inputs = make_inputs(seqlen=9)
    out = selective_scan(*inputs, backend='torch')
    assert isinstance(out, torch.Tensor) and out.shape == inputs[0].shape
    out2, last = selective_scan(*with_grad(inputs), backend='torch', return_last_state=True)
    assert torch.equal(out, out2.detach())
    assert last.shape == (2, 4, 3) and last.dtype == torch.float32 and not last.requires_grad


def test_reverse_equals_flipped_scan():
    inputs = make_inputs(seqlen=23, b_form='var', c_form='const', groups=2)
    u, delta, A, B, C, D, z, bias = inputs
    flipped = selective_scan(u.flip(-1), delta.flip(-1), A, B.flip(-1), C, D, z.flip(-1), bias, True,
                             backend='torch').flip(-1)
    torch.testing.assert_close(selective_scan(*inputs, delta_softplus=True, reverse=True, backend='torch'), flipped)


def test_matches_mamba_at_vim_shape_sizes(mamba_ref):
    """ViM's configuration (dstate 16, one group of variable B/C, softplus, D, z, bias) at a small size."""
    inputs = make_inputs(batch=2, dim=8, seqlen=40, dstate=16, b_form='var', c_form='var', groups=1,
                         realistic=True, seed=5)
    got = run(selective_scan, inputs, backend='torch', delta_softplus=True)
    assert_all_close(got, run(mamba(mamba_ref), inputs, delta_softplus=True), FP32_TOL, 'vs mamba')


# --------------------------------------------------------------------------------------------------- bidirectional
def vim_bidirectional(fwd, bwd, z, divide_out=True, backend='reference'):
    """Vim's formulation: the backward branch runs on flipped tensors and its output is flipped back."""
    y_f = selective_scan(*fwd, delta_softplus=True, backend=backend)
    u, delta, A, B, C, D, _, bias = bwd
    flip = (lambda t: t.flip(-1) if t.dim() >= 3 else t)  # noqa: E731
    y_b = selective_scan(flip(u), flip(delta), A, flip(B), flip(C), D, None, bias, True, backend=backend).flip(-1)
    out = (y_f + y_b) * F.silu(z)
    return out / 2 if divide_out else out


def stack_directions(fwd, bwd):
    return [None if a is None else torch.stack([a, b]) for a, b in zip(fwd, bwd)]


def test_bidirectional_matches_vim_formulation():
    fwd = make_inputs(seqlen=29, b_form='var', c_form='var', groups=1, has_z=False, seed=1)
    bwd = make_inputs(seqlen=29, b_form='var', c_form='var', groups=1, has_z=False, seed=2)
    z = torch.randn(2, 4, 29)
    stacked = stack_directions(fwd, bwd)
    leaves = with_grad(stacked + [z])
    u, delta, A, B, C, D, _, bias, zz = leaves
    got = selective_scan_bidirectional(u, delta, A, B, C, D, zz, bias, delta_softplus=True, backend='torch')
    fwd_l = [None if t is None else t[0] for t in (u, delta, A, B, C, D)] + [None, bias[0]]
    bwd_l = [None if t is None else t[1] for t in (u, delta, A, B, C, D)] + [None, bias[1]]
    expected = vim_bidirectional(fwd_l, bwd_l, zz)
    torch.testing.assert_close(got, expected, **FP32_TOL)
    dout = torch.randn_like(got)
    present = [t for t in leaves if t is not None]
    for name, g, ge in zip('u delta A B C D bias z'.split(), torch.autograd.grad(got, present, dout),
                           torch.autograd.grad(expected, present, dout)):
        torch.testing.assert_close(g, ge, **FP32_TOL, msg=lambda m, n=name: f'd{n}: {m}')
    summed = selective_scan_bidirectional(u, delta, A, B, C, D, zz, bias, True, divide_out=False, backend='torch')
    torch.testing.assert_close(summed, 2 * got)


def test_bidirectional_rejects_missing_direction_axis():
    u, delta, A, B, C, D, z, bias = make_inputs()
    with pytest.raises(ValueError, match=r'A must have a leading direction axis of size 2'):
        selective_scan_bidirectional(torch.stack([u, u]), torch.stack([delta, delta]), A, torch.stack([B, B]),
                                     torch.stack([C, C]))


# ------------------------------------------------------------------------------------------------------ validation
def _bad(**changes):
    args = dict(zip(NAMES, make_inputs(b_form='var', c_form='var', groups=2)))
    args.update(changes)
    return args


@pytest.mark.parametrize('changes,pattern', [
    (dict(delta=torch.rand(2, 4, 18)), r'delta must have shape \(batch, dim, seqlen\)=\(2, 4, 19\), got \(2, 4, 18\)'),
    (dict(u=torch.randn(2, 4)), r'u must have shape \(batch, dim, seqlen\), got \(2, 4\)'),
    (dict(A=torch.randn(4, 3, dtype=torch.complex64)), r'A must be real'),
    (dict(A=torch.randn(5, 3)), r'A must have shape \(dim, dstate\)=\(4, dstate\), got \(5, 3\)'),
    (dict(u=torch.ones(2, 4, 19, dtype=torch.int64)), r'u must have a floating dtype'),
    (dict(z=torch.ones(2, 4, 19, dtype=torch.int32)), r'z must have a floating dtype'),
    (dict(B=torch.randn(2, 3, 3, 19)), r'B: dim=4 must be divisible by groups=3'),
    (dict(C=torch.randn(2, 1, 1, 3, 19)), r'C must have shape \(dim, dstate\)=\(4, 3\), \(batch, dstate, seqlen\)'),
    (dict(B=torch.randn(3)), r'B must have shape .*got 1 dimensions \(3\)'),
    (dict(C=torch.randn(2, 3, 20)), r'C must have shape \(batch, dstate, seqlen\)=\(2, 3, 19\), got \(2, 3, 20\)'),
    (dict(B=torch.randn(4, 2)), r'B must have shape \(dim, dstate\)=\(4, 3\), got \(4, 2\)'),
    (dict(D=torch.randn(4, 1)), r'D must have shape \(dim,\)=\(4,\), got \(4, 1\)'),
    (dict(delta_bias=torch.randn(3)), r'delta_bias must have shape \(dim,\)=\(4,\), got \(3\)'),
    (dict(z=torch.randn(2, 4, 1)), r'z must have shape \(batch, dim, seqlen\)=\(2, 4, 19\), got \(2, 4, 1\)'),
])
def test_bad_input_raises_value_error_naming_argument(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        selective_scan(**_bad(**changes))


def test_bad_backend_names():
    inputs = make_inputs()
    with pytest.raises(ValueError, match=r"backend must be one of"):
        selective_scan(*inputs, backend='cuda')


# -------------------------------------------------------------------------------------------------------- dispatch
@pytest.fixture
def spies(monkeypatch):
    """Record which path runs (the wrappers still compute)."""
    pkg = importlib.import_module('visionzoo.ops.selective_scan')  # the package; its attribute is the function
    calls = []
    for name in ('selective_scan_torch', 'selective_scan_reference'):
        original = getattr(pkg, name)

        def spy(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)
        monkeypatch.setattr(pkg, name, spy)
    return calls


def test_dispatch_default_env_and_override(spies, monkeypatch):
    inputs = make_inputs(seqlen=5)
    monkeypatch.delenv('VISIONZOO_SCAN_BACKEND', raising=False)
    selective_scan(*inputs)
    assert spies[-1] == 'selective_scan_torch'  # CPU tensors: the PyTorch path
    monkeypatch.setenv('VISIONZOO_SCAN_BACKEND', 'reference')
    selective_scan(*inputs)
    assert spies[-1] == 'selective_scan_reference'
    selective_scan(*inputs, backend='torch')  # an explicit backend wins over the environment
    assert spies[-1] == 'selective_scan_torch'
    monkeypatch.setenv('VISIONZOO_SCAN_BACKEND', 'fast')
    with pytest.raises(ValueError, match=r'VISIONZOO_SCAN_BACKEND must be one of'):
        selective_scan(*inputs)


def test_triton_backend_on_cpu_without_interpreter_is_refused():
    pytest.importorskip('triton')
    from visionzoo.ops.selective_scan import triton as triton_path
    if triton_path.interpreting():
        pytest.skip('this process runs Triton in interpreter mode')
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
        selective_scan(*make_inputs(seqlen=5), backend='triton')
    with pytest.raises(ValueError, match=r"backend 'triton' takes float16, bfloat16 or float32"):
        selective_scan(*make_inputs(seqlen=5, dtype=torch.float64), backend='triton')


# ---------------------------------------------------------------------------------------------- the Triton kernels
TRITON_CASES = [
    # name, make_inputs kwargs, softplus, reverse
    ('const-const-all', dict(seqlen=19, b_form='const', c_form='const'), True, False),
    ('var3-bare', dict(seqlen=8, b_form='var3', c_form='var3', has_D=False, has_z=False, has_bias=False), False,
     False),
    ('grouped-reverse', dict(seqlen=19, b_form='var', c_form='var', groups=2), True, True),
    ('len1', dict(seqlen=1, b_form='const', c_form='var', groups=2, has_z=False, has_bias=False), True, False),
    ('long-for-interpreter', dict(seqlen=40, b_form='var', c_form='const', groups=2, has_D=False), True, False),
    ('realistic', dict(seqlen=23, dim=4, dstate=5, b_form='var3', c_form='var3', realistic=True), True, False),
    ('large-delta', dict(seqlen=12, b_form='var3', c_form='const', delta_range=100.0), True, False),
    ('bf16', dict(seqlen=19, b_form='var3', c_form='var3', dtype=torch.bfloat16), True, False),
    ('fp16', dict(seqlen=11, b_form='var', c_form='var', groups=2, dtype=torch.float16), True, True),
]


def _triton_worker(path):
    """Run every Triton case (this process has TRITON_INTERPRET=1) and save inputs, results and gradients."""
    from visionzoo.ops.selective_scan import triton as triton_path
    assert triton_path.interpreting(), 'the worker must run with TRITON_INTERPRET=1'
    results = {}
    for name, kwargs, softplus, reverse in TRITON_CASES:
        inputs = make_inputs(**kwargs)
        results[name] = (inputs, run(selective_scan, inputs, backend='triton', delta_softplus=softplus,
                                     reverse=reverse))
    fwd = make_inputs(seqlen=13, b_form='var', c_form='var', groups=2, has_z=False, seed=1)
    bwd = make_inputs(seqlen=13, b_form='var', c_form='var', groups=2, has_z=False, seed=2)
    z = torch.randn(2, 4, 13, generator=torch.Generator().manual_seed(3))
    leaves = with_grad(stack_directions(fwd, bwd) + [z])
    u, delta, A, B, C, D, _, bias, zz = leaves
    out = selective_scan_bidirectional(u, delta, A, B, C, D, zz, bias, True, backend='triton')
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    present = [t for t in leaves if t is not None]
    results['bidirectional'] = (fwd, bwd, z, out.detach(), torch.autograd.grad(out, present, dout), dout)
    torch.save(results, path)


@pytest.fixture(scope='module')
def triton_results(tmp_path_factory):
    return run_triton_worker(__file__, tmp_path_factory.mktemp('triton'), 'VISIONZOO_SCAN_BACKEND')


@pytest.mark.parametrize('name', [c[0] for c in TRITON_CASES])
def test_triton_kernels_interpreted_match_reference_and_mamba(name, triton_results, mamba_ref):
    _, kwargs, softplus, reverse = next(c for c in TRITON_CASES if c[0] == name)
    inputs, got = triton_results[name]
    dtype = kwargs.get('dtype', torch.float32)
    tol = {torch.float32: FP32_TOL, torch.bfloat16: BF16_TOL, torch.float16: FP16_TOL}[dtype]
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    assert_all_close(got, run(reference, inputs, delta_softplus=softplus, reverse=reverse), tol, 'vs ours')
    assert_all_close(got, run(mamba(mamba_ref, reverse), inputs, delta_softplus=softplus), tol, 'vs mamba')


def test_triton_bidirectional_interpreted(triton_results):
    fwd, bwd, z, out, grads, dout = triton_results['bidirectional']
    leaves = with_grad(stack_directions(fwd, bwd) + [z])
    u, delta, A, B, C, D, _, bias, zz = leaves
    fwd_l = [None if t is None else t[0] for t in (u, delta, A, B, C, D)] + [None, bias[0]]
    bwd_l = [None if t is None else t[1] for t in (u, delta, A, B, C, D)] + [None, bias[1]]
    expected = vim_bidirectional(fwd_l, bwd_l, zz)
    torch.testing.assert_close(out, expected.detach(), **FP32_TOL)
    present = [t for t in leaves if t is not None]
    for name, g, ge in zip('u delta A B C D bias z'.split(), grads, torch.autograd.grad(expected, present, dout)):
        torch.testing.assert_close(g, ge, **FP32_TOL, msg=lambda m, n=name: f'd{n}: {m}')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (the interpreter tests cover CPU)')
@pytest.mark.parametrize('dtype,tol', [(torch.float32, FP32_TOL), (torch.bfloat16, BF16_TOL)])
@pytest.mark.parametrize('b_form,groups,reverse', [('var', 1, False), ('var', 2, True), ('const', 1, False)])
def test_triton_on_cuda_matches_reference(dtype, tol, b_form, groups, reverse):
    """The compiled kernels at ViM-like sizes (several chunks and channel blocks), against the float32 reference."""
    inputs = make_inputs(batch=2, dim=64, seqlen=300, dstate=16, b_form=b_form, c_form=b_form, groups=groups,
                         dtype=dtype, realistic=True, seed=11)
    assert selective_scan(*[None if t is None else t.cuda() for t in inputs]).is_cuda
    got = run(selective_scan, [None if t is None else t.cuda() for t in inputs], backend='triton',
              delta_softplus=True, reverse=reverse)
    got = (got[0].cpu(), got[1].cpu(), [None if g is None else g.cpu() for g in got[2]])
    assert_all_close(got, run(reference, inputs, delta_softplus=True, reverse=reverse), tol, 'cuda vs ours')


@pytest.mark.parametrize('kernel', ['fwd', 'bwd'])
def test_triton_kernels_compile_for_cuda(kernel):
    """The kernels compile for CUDA (scan over the last axis of a 3-D tile, reverse scans, constexpr branches)."""
    fp32_ptrs = {'A_ptr', 'D_ptr', 'bias_ptr', 'state_ptr', 'dA_ptr', 'dB_ptr', 'dC_ptr', 'dD_ptr', 'dbias_ptr'}
    constexprs = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, VAR_B=True, VAR_C=False, REVERSE=True,
                      BLOCK_D=2, BLOCK_N=16, BLOCK_L=64)
    compile_triton_kernel_for_cuda('visionzoo.ops.selective_scan.triton', f'_selective_scan_{kernel}_kernel',
                                   constexprs, lambda p: '*fp32' if p in fp32_ptrs else '*bf16')


if __name__ == '__main__' and len(sys.argv) == 3 and sys.argv[1] == '--triton-worker':
    _triton_worker(sys.argv[2])


@pytest.mark.parametrize('batch,dim,seqlen,reverse', [(2, 4, 19, False), (1, 1, 7, False), (2, 3, 1, False),
                                                      (1, 1, 7, True)])
def test_inference_path_leaves_inputs_alone_and_matches_autograd_path(batch, dim, seqlen, reverse):
    """Without gradients the PyTorch path reuses buffers in place; never the caller's tensors."""
    inputs = make_inputs(batch=batch, dim=dim, seqlen=seqlen)
    saved = [None if t is None else t.clone() for t in inputs]
    with torch.no_grad():
        out = selective_scan(*inputs, delta_softplus=True, reverse=reverse, backend='torch')
    for t, s in zip(inputs, saved):
        assert t is None or torch.equal(t, s)
    grad_inputs = with_grad([None if t is None else t.clone() for t in inputs])
    expected = selective_scan(*grad_inputs, delta_softplus=True, reverse=reverse, backend='torch')
    torch.testing.assert_close(out, expected.detach())
    torch.testing.assert_close(out, reference(*inputs, delta_softplus=True, reverse=reverse), atol=1e-5, rtol=1e-5)
