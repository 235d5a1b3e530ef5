"""Benchmarks of visionzoo's custom ops (not a test): times and peak memory, as ratios measured in one run.

Usage::

    python benchmarks/benchmark_ops.py scan                 # CPU: ViM-Ti shape and l=1024
    python benchmarks/benchmark_ops.py scan --device cuda   # GPU: adds the Triton path (and mamba's CUDA kernel)
    python benchmarks/benchmark_ops.py scan --shape 8,384,197,16 --repeats 5
    python benchmarks/benchmark_ops.py na                   # neighborhood attention: NAT-Tiny stage 1 and 1-D
    python benchmarks/benchmark_ops.py scan --device cpu --shape 1,4,8,2 --paths torch --repeats 1       # smoke

For every path of the selective scan it prints forward time (no autograd), forward+backward time and peak
memory of forward+backward, each also as a ratio against the baseline ``sequential``: the plain sequential
formulation of mamba-ssm's and VMamba's PyTorch references (decays ``exp(delta A)`` and inputs ``delta B u``
precomputed for every position as (batch, dim, seqlen, dstate) tensors, then one step per position), written
with elementwise operations and differentiated by autograd through its loop. Also timed: ``reference``, the
lighter sequential loop the tests use (:mod:`visionzoo.ops.selective_scan.reference`: decays computed step by
step, so autograd never scatters into a full-size tensor), mamba-ssm's ``selective_scan_ref`` when the package is
installed (imported from its module file, without the CUDA extension), and its CUDA kernel when
``selective_scan_cuda`` imports and the device is CUDA.

Inputs follow ViM's use: variable B and C with one group, D, z, delta_bias, softplus, A = -(1..dstate).
``na`` times neighbourhood attention (forward, forward+backward, peak memory of forward+backward) against two
baselines measured in the same run: ``sdpa-masked``, ``F.scaled_dot_product_attention`` with the boolean
(positions x positions) neighbourhood mask (built inside the call, as a layer would), and ``natten``, NATTEN's own
CPU forward (``natten.functional.na1d/na2d``, FlexAttention underneath; it has no CPU backward, so its row has
forward time and forward peak memory only).

Every (shape, path) runs in a fresh subprocess, so that allocator state left by one path does not slow the next.
CPU peak memory is the growth of that process's peak resident set during one forward+backward (the peak is reset
through /proc/self/clear_refs first); CUDA peak memory is ``torch.cuda.max_memory_allocated`` above the memory held
before the call.
"""
import argparse
import importlib
import importlib.util
import math
import sys
import types

import torch

from _common import Table, emit, peak_memory, ratio, run_worker, scaled, time_runs

DEFAULT_SHAPES = ['8,384,197,16', '8,384,1024,16']
BASELINE = 'sequential'
SLOW = ('sequential', 'reference', 'mamba-ref')
QUADRATIC = ('sequential', 'mamba-ref')  # autograd scatters every step into a full-size tensor: O(seqlen^2) backward
QUADRATIC_MAX_SEQLEN = 512


# --------------------------------------------------------------------------------------------------------- inputs
def scan_inputs(batch, dim, seqlen, dstate, device, dtype=torch.float32, seed=0):
    """ViM-like inputs (variable B/C with one group, D, z, delta_bias), as leaves that require grad."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, seqlen, generator=g)
    delta = 0.5 * torch.randn(batch, dim, seqlen, generator=g)
    A = -torch.arange(1, dstate + 1, dtype=torch.float32).repeat(dim, 1)
    B = torch.randn(batch, 1, dstate, seqlen, generator=g)
    C = torch.randn(batch, 1, dstate, seqlen, generator=g)
    D = torch.ones(dim)
    z = torch.randn(batch, dim, seqlen, generator=g)
    dt = torch.exp(torch.rand(dim, generator=g) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3)))
                   + torch.log(torch.tensor(1e-3)))
    delta_bias = dt + torch.log(-torch.expm1(-dt))
    tensors = [u.to(dtype), delta.to(dtype), A, B.to(dtype), C.to(dtype), D, z.to(dtype), delta_bias]
    return [t.to(device).requires_grad_() for t in tensors]


def load_mamba_ref():
    """mamba-ssm's ``selective_scan_ref`` from its module file, or None when mamba-ssm is not installed."""
    spec = importlib.util.find_spec('mamba_ssm')
    if spec is None or not spec.submodule_search_locations:
        return None
    package = types.ModuleType('mamba_ssm')
    package.__path__ = list(spec.submodule_search_locations)
    saved = sys.modules.get('mamba_ssm')
    sys.modules['mamba_ssm'] = package
    stub = 'selective_scan_cuda' not in sys.modules
    if stub:
        sys.modules['selective_scan_cuda'] = types.ModuleType('selective_scan_cuda')
    try:
        return importlib.import_module('mamba_ssm.ops.selective_scan_interface').selective_scan_ref
    except Exception:  # noqa: BLE001 - an incompatible mamba-ssm just drops this row
        return None
    finally:
        if saved is not None:
            sys.modules['mamba_ssm'] = saved
        if stub:
            sys.modules.pop('selective_scan_cuda', None)


def load_mamba_cuda():
    """mamba-ssm's CUDA ``selective_scan_fn``, or None when its extension does not import."""
    try:
        import selective_scan_cuda  # noqa: F401
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001
        return None
    return selective_scan_fn


def sequential_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The baseline: plain sequential selective scan over precomputed (batch, dim, seqlen, dstate) tensors.

    The structure of mamba-ssm's ``selective_scan_ref``: ``exp(delta A)`` and ``delta B u`` computed for every
    position up front, then one step per position that reads slices of them; here with elementwise products
    instead of einsum, and ``C`` read per group without repeating it over channels (variable B/C only).
    Autograd differentiates through the loop.
    """
    batch, dim, seqlen = u.shape
    groups, dstate = B.shape[1], A.shape[1]
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = torch.nn.functional.softplus(dt)
    decay = torch.exp(dt.unsqueeze(-1) * A.float()[:, None, :])  # (batch, dim, seqlen, dstate)
    Bd = B.float().repeat_interleave(dim // groups, dim=1).transpose(2, 3)
    inputs = (dt * u.float()).unsqueeze(-1) * Bd
    Cg = C.float()  # (batch, groups, dstate, seqlen)
    h = u.new_zeros((batch, dim, dstate), dtype=torch.float32)
    ys = []
    for t in range(seqlen):
        h = decay[:, :, t] * h + inputs[:, :, t]
        ys.append((h.view(batch, groups, dim // groups, dstate) * Cg[:, :, None, :, t]).sum(-1).view(batch, dim))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + D.float()[:, None] * u.float()
    if z is not None:
        y = y * torch.nn.functional.silu(z.float())
    return y.to(u.dtype)


def scan_paths(device):
    """name -> callable(u, delta, A, B, C, D, z, delta_bias, softplus) for every path available here."""
    from visionzoo.ops import selective_scan

    paths = {BASELINE: sequential_scan,
             'reference': lambda *a: selective_scan(*a, backend='reference'),
             'torch': lambda *a: selective_scan(*a, backend='torch')}
    if device == 'cuda':
        from visionzoo.ops.selective_scan import triton_available
        if triton_available():
            paths['triton'] = lambda *a: selective_scan(*a, backend='triton')
        cuda_fn = load_mamba_cuda()
        if cuda_fn is not None:
            paths['mamba-cuda'] = lambda *a: cuda_fn(*a)
    ref = load_mamba_ref()
    if ref is not None:
        paths['mamba-ref'] = lambda *a: ref(*a)
    return paths


# -------------------------------------------------------------------------------------------------------- timing
def time_path(run, leaves, device, repeats, warmup=True, backward=True):
    """Best forward time (no autograd) and best forward+backward time over ``repeats`` runs (after a warm-up run).

    ``run()`` computes the output from ``leaves``; forward+backward is skipped (None) when ``backward`` is False.
    """
    def fwd():
        with torch.no_grad():
            run()

    def fwd_bwd():
        out = run()
        out.backward(torch.ones_like(out))
        for t in leaves:
            t.grad = None

    results = [min(time_runs(step, repeats, warmup=int(warmup), device=device))
               for step in ((fwd, fwd_bwd) if backward else (fwd,))]
    return results + [None] * (2 - len(results))


def _scan_case(path_name, shape, device):
    """(run, leaves, slow, backward) of one selective-scan path at ``shape`` = (batch, dim, seqlen, dstate)."""
    batch, dim, seqlen, dstate = shape
    fn = scan_paths(device)[path_name]
    inputs = scan_inputs(batch, dim, seqlen, dstate, device)
    return (lambda: fn(*inputs, True)), inputs, path_name in SLOW, True


def measure_worker(op, path_name, shape, device, repeats, memory, timing=True):
    """(In a fresh subprocess) peak memory of one forward+backward, then best times, of one path at one shape.

    Returns ``{'peak_bytes': int or None, 'fwd': s, 'fwd_bwd': s or None}`` (times None without ``timing``). The
    memory run comes first, so that the process's peak is that of this path alone; it doubles as the warm-up of the
    timed runs.
    """
    if op == 'na' and memory:  # first use of the libraries (thread pool, BLAS buffers) at a small size, not counted
        _, heads, dim, kernel, *spatial = shape
        small = _na_case(path_name, (1, heads, dim, kernel) + tuple(min(n, 2 * kernel) for n in spatial), device)
        peak_memory(*small[:2], device, small[3])
    run, leaves, slow, backward = (_scan_case if op == 'scan' else _na_case)(path_name, shape, device)
    peak = peak_memory(run, leaves, device, backward) if memory else None
    if not timing:
        return {'peak_bytes': peak, 'fwd': None, 'fwd_bwd': None}
    # slow paths take up to seconds per call: one timed run, no further warm-up
    fwd, fwd_bwd = time_path(run, leaves, device, repeats, warmup=not slow and not memory, backward=backward)
    return {'peak_bytes': peak, 'fwd': fwd, 'fwd_bwd': fwd_bwd}


def _run_worker(op, path_name, shape, device, repeats, threads, memory, timing, fixed_mmap_threshold=False):
    argv = [op, '--worker', path_name, '--shape', ','.join(map(str, shape)), '--device', device,
            '--threads', threads, '--repeats', repeats] + ([] if memory else ['--no-memory']) + \
        ([] if timing else ['--no-time'])
    return run_worker(__file__, argv, f'{path_name} at {shape}', memory=fixed_mmap_threshold)


def measure(op, path_name, shape, device, repeats, memory, threads):
    """Run :func:`measure_worker` in a fresh interpreter, so that every path starts from the same process state
    (allocator caches and the peak resident set left by one path would otherwise skew the next).

    na: the memory run gets a process of its own with a fixed mmap threshold (see :func:`_common.run_worker`).
    """
    if op == 'na' and memory:
        mem = _run_worker(op, path_name, shape, device, repeats, threads, True, False, fixed_mmap_threshold=True)
        times = _run_worker(op, path_name, shape, device, repeats, threads, False, True)
        return None if mem is None or times is None else dict(times, peak_bytes=mem['peak_bytes'])
    return _run_worker(op, path_name, shape, device, repeats, threads, memory, True)


# ------------------------------------------------------------------------------------------ neighborhood attention
# batch, heads, dim, kernel, spatial...: the NAT-Tiny stage-1 map (56 x 56, kernel 7, head dim 32) with 4 heads, and a
# long 1-D sequence with a 63-wide window; batch 4 for both.
NA_DEFAULT_SHAPES = ['4,4,32,7,56,56', '4,4,32,63,4096']
NA_BASELINE = 'sdpa-masked'
NA_SLOW = ('natten',)


def dense_na_mask(spatial, kernel, device):
    """The (positions, positions) boolean neighbourhood mask, from the op's own window rule (dilation 1)."""
    from visionzoo.ops.neighborhood_attention.window import axis_window

    mask = None
    for n in spatial:
        w = axis_window(n, kernel, 1, False)
        axis = (w.lo[:, None] <= w.coord[None, :]) & (w.coord[None, :] < w.hi[:, None])
        mask = axis if mask is None else (mask[:, None, :, None] & axis[None, :, None, :]).flatten(2).flatten(0, 1)
    return mask.to(device)


def na_paths(device):
    """name -> callable(q, k, v, kernel) for every neighbourhood-attention path available here."""
    import torch.nn.functional as F

    from visionzoo.ops import neighborhood_attention

    def sdpa_masked(q, k, v, kernel):
        batch, heads, dim = q.shape[0], q.shape[-2], q.shape[-1]
        mask = dense_na_mask(q.shape[1:-2], kernel, q.device)
        qh, kh, vh = (t.reshape(batch, -1, heads, dim).transpose(1, 2) for t in (q, k, v))
        return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask).transpose(1, 2).reshape(q.shape)

    paths = {NA_BASELINE: sdpa_masked,
             'torch': lambda q, k, v, kernel: neighborhood_attention(q, k, v, kernel, backend='torch')}
    if device == 'cuda':
        from visionzoo.ops.neighborhood_attention import triton_available
        if triton_available():
            paths['triton'] = lambda q, k, v, kernel: neighborhood_attention(q, k, v, kernel, backend='triton')
    try:
        import warnings

        from natten import functional as natten_functional
    except ImportError:
        return paths

    def natten_na(q, k, v, kernel):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # on CPU: "materializes the full scores matrix"
            fn = natten_functional.na1d if q.dim() == 4 else natten_functional.na2d
            return fn(q, k, v, kernel_size=kernel)
    paths['natten'] = natten_na
    return paths


def _na_case(path_name, shape, device):
    """(run, leaves, slow, backward) of one neighbourhood-attention path at (batch, heads, dim, kernel, *spatial)."""
    batch, heads, dim, kernel, *spatial = shape
    fn = na_paths(device)[path_name]
    backward = not (path_name == 'natten' and device == 'cpu')  # NATTEN 0.21 has no CPU backward (and refuses
    g = torch.Generator().manual_seed(0)                         # inputs that require grad there)
    leaves = [torch.randn(batch, *spatial, heads, dim, generator=g).to(device).requires_grad_(backward)
              for _ in range(3)]
    return (lambda: fn(*leaves, kernel)), leaves, path_name in NA_SLOW, backward


# ----------------------------------------------------------------------------------------------------------- main
def _bench_plan(args, default_shapes, paths, baseline):
    """Shapes, path names (``--paths`` subset, the baseline always kept) and thread count of a benchmark run."""
    shapes = [tuple(int(v) for v in s.split(',')) for s in (args.shape or default_shapes)]
    names = [k for k in paths if not args.paths or k in args.paths.split(',') or k == baseline]
    return shapes, names, args.threads or torch.get_num_threads()


def bench_scan(args):
    device = args.device
    shapes, names, threads = _bench_plan(args, DEFAULT_SHAPES, scan_paths(device), BASELINE)
    print(f'selective scan, device={device}, torch {torch.__version__}, threads={threads}; each path in a fresh '
          f'process, best of {args.repeats} runs (one run for {", ".join(SLOW)})')
    print(f'ratio = {BASELINE} / path, measured in this run (higher is better); '
          f'"vs reference" = reference / path for forward+backward')
    for shape in shapes:
        batch, dim, seqlen, dstate = shape
        rows = {}
        for name in names:
            if name in QUADRATIC and seqlen > QUADRATIC_MAX_SEQLEN and not args.long_baselines:
                continue
            r = measure('scan', name, shape, device, args.baseline_repeats if name in SLOW else args.repeats,
                        not args.no_memory, threads)
            rows[name] = (r['fwd'], r['fwd_bwd'], r['peak_bytes']) if r else (None, None, None)
        base = rows.get(BASELINE, (None, None, None))
        ref = rows.get('reference', (None, None, None))
        skipped = [n for n in QUADRATIC if n in names and n not in rows]
        print(f'\nb={batch} d={dim} l={seqlen} n={dstate}'
              + (f' ({", ".join(skipped)} skipped: quadratic backward; --long-baselines runs them)' if skipped else ''))
        table = Table([('path', 12, '<'), ('fwd ms', 10, '.2f'), ('ratio', 9), ('fwd+bwd ms', 12, '.2f'),
                       ('ratio', 9), ('vs reference', 14), ('peak MiB', 10, '.1f'), ('ratio', 9)])
        table.header()
        for name, (fwd, fwd_bwd, mem) in rows.items():
            if fwd is None:
                table.row(name, 'failed')
                continue
            table.row(name, fwd * 1e3, ratio(base[0], fwd, 1), fwd_bwd * 1e3, ratio(base[1], fwd_bwd, 1),
                      ratio(ref[1], fwd_bwd, 1), scaled(mem, 2**-20), ratio(base[2], mem, 1))


def bench_na(args):
    device = args.device
    shapes, names, threads = _bench_plan(args, NA_DEFAULT_SHAPES, na_paths(device), NA_BASELINE)
    print(f'neighborhood attention, device={device}, torch {torch.__version__}, threads={threads}; each path in a '
          f'fresh process, best of {args.repeats} runs (one run for {", ".join(NA_SLOW)}); float32, non-causal, '
          f'dilation 1, no bias')
    print(f'ratios = baseline / path, measured in this run (higher is better): "vs sdpa" against {NA_BASELINE} '
          f'(F.scaled_dot_product_attention with the dense boolean mask), "vs natten" against natten\'s forward; '
          f'peak = growth of peak resident memory during one forward+backward (natten: forward only), after a '
          f'small warm-up call; work = peak less the output, its upstream gradient and the q/k/v gradients that '
          f'every path must hold (natten: less the output)')
    for shape in shapes:
        batch, heads, dim, kernel, *spatial = shape
        rows = {}
        for name in names:
            r = measure('na', name, shape, device, 1 if name in NA_SLOW else args.repeats, not args.no_memory,
                        threads)
            rows[name] = (r['fwd'], r['fwd_bwd'], r['peak_bytes']) if r else (None, None, None)
        base = rows.get(NA_BASELINE, (None, None, None))
        nat = rows.get('natten', (None, None, None))
        print(f'\n{"x".join(map(str, spatial))} map, batch {batch}, {heads} heads, dim {dim}, kernel {kernel}')
        tensor_bytes = 4 * batch * heads * dim * math.prod(spatial)  # one float32 (batch, *spatial, heads, dim)

        def work(name, mem, rows=rows, tensor_bytes=tensor_bytes):
            return None if mem is None else mem - tensor_bytes * (5 if rows[name][1] is not None else 1)
        base_work = work(NA_BASELINE, base[2]) if NA_BASELINE in rows else None
        table = Table([('path', 13, '<'), ('fwd ms', 10, '.2f'), ('vs sdpa', 9), ('vs natten', 11),
                       ('fwd+bwd ms', 12, '.2f'), ('vs sdpa', 9), ('peak MiB', 10, '.1f'), ('vs sdpa', 9),
                       ('work MiB', 10, '.1f'), ('vs sdpa', 9)])
        table.header()
        for name, (fwd, fwd_bwd, mem) in rows.items():
            if fwd is None:
                table.row(name, 'failed')
                continue
            table.row(name, scaled(fwd, 1e3), ratio(base[0], fwd, 1), ratio(nat[0], fwd, 1), scaled(fwd_bwd, 1e3),
                      ratio(base[1], fwd_bwd, 1), scaled(mem, 2**-20), ratio(base[2], mem, 1),
                      scaled(work(name, mem), 2**-20), ratio(base_work, work(name, mem), 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='op', required=True)
    scan = sub.add_parser('scan', help='selective scan: every path against the sequential reference')
    scan.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=('cpu', 'cuda'))
    scan.add_argument('--shape', action='append', help='batch,dim,seqlen,dstate (repeatable); default: '
                      + ' and '.join(DEFAULT_SHAPES))
    scan.add_argument('--paths', help='comma-separated subset of paths (the baseline always runs)')
    scan.add_argument('--repeats', type=int, default=5, help='timed runs per fast path (best is kept)')
    scan.add_argument('--baseline-repeats', type=int, default=1, help='timed runs of the slow references')
    scan.add_argument('--no-memory', action='store_true', help='skip the peak-memory measurement')
    scan.add_argument('--long-baselines', action='store_true',
                      help=f'also run {", ".join(QUADRATIC)} above seqlen {QUADRATIC_MAX_SEQLEN} (minutes)')
    scan.add_argument('--threads', type=int, help='torch.set_num_threads (default: PyTorch\'s choice)')
    scan.add_argument('--worker', help=argparse.SUPPRESS)
    na = sub.add_parser('na', help='neighborhood attention: PyTorch path against masked SDPA and natten')
    na.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=('cpu', 'cuda'))
    na.add_argument('--shape', action='append', help='batch,heads,dim,kernel,x[,y] (repeatable); default: '
                    + ' and '.join(NA_DEFAULT_SHAPES))
    na.add_argument('--paths', help='comma-separated subset of paths (the baseline always runs)')
    na.add_argument('--repeats', type=int, default=5, help='timed runs per path (best is kept)')
    na.add_argument('--no-memory', action='store_true', help='skip the peak-memory measurement')
    na.add_argument('--threads', type=int, help='torch.set_num_threads (default: PyTorch\'s choice)')
    na.add_argument('--worker', help=argparse.SUPPRESS)
    na.add_argument('--no-time', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        shape = tuple(int(v) for v in args.shape[0].split(','))
        emit(measure_worker(args.op, args.worker, shape, args.device, args.repeats, not args.no_memory,
                            not getattr(args, 'no_time', False)))
        return
    if args.op == 'na':
        bench_na(args)
        return
    bench_scan(args)


if __name__ == '__main__':
    main()
