"""NAT training and inference on this machine (not a test): the neighbourhood-attention op against dense masked SDPA
and NATTEN's CPU forward, in the same model.

Rows, all measured in one run, all NAT-Tiny (``nat_tiny``) with the same weights except for how its neighbourhood
attention is computed:

* ``masked-sdpa`` (the baseline): every layer's attention as ``torch.nn.functional.scaled_dot_product_attention``
  over the whole map with an additive mask (the relative position bias gathered into the neighbourhood entries,
  ``-inf`` elsewhere; the (N, N) tables come from the op's brute-force reference and are built once per shape,
  outside the timings' steps after the warm-up); autograd backward;
* ``na-op``: ``visionzoo.ops.neighborhood_attention``'s default path (on CPU the tiled PyTorch path with its own
  backward; on CUDA the Triton kernels);
* ``natten-fwd`` (inference only): NATTEN 0.21's ``na2d`` (CPU forward; NATTEN has no CPU backward and no relative
  position bias, so this row runs the model without the bias: the same work minus one addition per logit).

Training step = forward, cross-entropy loss, backward (no optimizer step); times are the best of ``--repeats`` steps
after a warm-up step, forward and backward timed separately. Inference = forward under ``torch.no_grad`` in eval
mode, as images per second. Every (row, measurement) runs in fresh subprocesses: peak memory (growth of the
process's peak resident set during one step, after a batch-1 warm-up, glibc's mmap threshold fixed; CUDA:
``max_memory_allocated``) and timing each in their own (``_common.run_worker``).

Usage::

    python benchmarks/benchmark_nat.py                      # NAT-Tiny, 224², batch 8, CPU, 2 threads
    python benchmarks/benchmark_nat.py --batch 4 --repeats 2 --threads 4
    python benchmarks/benchmark_nat.py --device cuda        # GPU: na-op runs the Triton kernels
    python benchmarks/benchmark_nat.py --rows na-op --no-memory --no-inference --size 64 --batch 1 --repeats 1
"""
import argparse

import torch
import torch.nn.functional as F

from _common import Table, emit, peak_memory, ratio, run_memory_and_time, scaled, timed

ROWS = ('masked-sdpa', 'na-op', 'natten-fwd')
BASELINE = 'masked-sdpa'
TRAINABLE = ('masked-sdpa', 'na-op')


def masked_sdpa(q, k, v, kernel_size, dilation=1, is_causal=False, rpb=None, scale=None, backend=None):
    """The op's signature (heads-last q, k, v of (B, H, W, heads, d)) computed as dense masked SDPA."""
    import importlib
    reference = importlib.import_module('visionzoo.ops.neighborhood_attention.reference')
    batch, height, width, heads, dim = q.shape
    pair = (lambda t: tuple(t) if isinstance(t, (tuple, list)) else (t, t))
    allowed, rel = reference._tables((height, width), pair(kernel_size), pair(dilation), pair(is_causal))
    allowed, rel = allowed.to(q.device), rel.to(q.device)
    bias = rpb.flatten(1)[:, rel] if rpb is not None else q.new_zeros(heads, *rel.shape)
    mask = bias.to(q.dtype).masked_fill(~allowed, float('-inf'))
    out = F.scaled_dot_product_attention(*(t.flatten(1, 2).transpose(1, 2) for t in (q, k, v)), attn_mask=mask,
                                         scale=scale)
    return out.transpose(1, 2).reshape(q.shape)


def natten_forward(q, k, v, kernel_size, dilation=1, is_causal=False, rpb=None, scale=None, backend=None):
    """NATTEN 0.21's na2d (no bias support: ``rpb`` is left out)."""
    import natten.functional
    return natten.functional.na2d(q, k, v, kernel_size=kernel_size, dilation=dilation, is_causal=is_causal,
                                  scale=scale)


def build(name: str, size: int, device: str) -> torch.nn.Module:
    import timm

    import visionzoo.backbones.nat  # noqa: F401  (registers nat_*)
    import visionzoo.layers.neighborhood_attention as layer
    if name == 'masked-sdpa':
        layer.neighborhood_attention = masked_sdpa
    elif name == 'natten-fwd':
        layer.neighborhood_attention = natten_forward
    torch.manual_seed(0)
    return timm.create_model('nat_tiny').to(device)


def worker(name: str, task: str, mode: str, size: int, batch: int, device: str, repeats: int) -> dict:
    """(In a fresh subprocess) ``mode='memory'``: peak memory of one step; ``'time'``: best forward and backward
    times over ``repeats`` steps after a warm-up step."""
    model = build(name, size, device)
    model.train(task == 'train')
    x = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, 1000, (batch,), device=device)

    def forward(inputs):
        if task == 'train':
            return F.cross_entropy(model(inputs), target[:inputs.shape[0]])
        with torch.no_grad():
            return model(inputs)

    if mode == 'memory':
        warm = forward(x[:1])  # also builds the masked-sdpa tables of every map size
        if task == 'train':
            warm.backward()
        model.zero_grad(set_to_none=True)
        del warm
        return {'peak_bytes': peak_memory(lambda: forward(x), [], device, backward=task == 'train')}
    best_fwd = best_bwd = float('inf')
    for step in range(repeats + 1):
        t_fwd, out = timed(lambda: forward(x), device)
        t_bwd, _ = timed(out.backward if task == 'train' else lambda: None, device)
        model.zero_grad(set_to_none=True)
        del out
        if step:  # the first step warms up
            best_fwd, best_bwd = min(best_fwd, t_fwd), min(best_bwd, t_bwd)
    return {'fwd': best_fwd, 'bwd': best_bwd if task == 'train' else None}


def measure(name: str, task: str, args) -> dict:
    argv = ['--worker', name, '--task', task, '--size', args.size, '--batch', args.batch, '--device', args.device,
            '--repeats', args.repeats, '--threads', args.threads]
    return run_memory_and_time(__file__, argv, f'{name} {task}', memory=not args.no_memory)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--repeats', type=int, default=3, help='timed steps after the warm-up step (best is kept)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--no-inference', action='store_true', help='skip the inference rows')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory runs')
    parser.add_argument('--rows', nargs='+', choices=ROWS, default=list(ROWS),
                        help=f'rows to run (the baseline {BASELINE} always runs; default: all)')
    parser.add_argument('--worker', choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument('--task', choices=('train', 'infer'), default='train', help=argparse.SUPPRESS)
    parser.add_argument('--mode', choices=('memory', 'time'), default='time', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size < 1 or args.batch < 1 or args.repeats < 1 or args.threads < 1:
        parser.error('--size, --batch, --repeats and --threads must be at least 1')
    torch.set_num_threads(args.threads)
    if args.worker:
        emit(worker(args.worker, args.task, args.mode, args.size, args.batch, args.device, args.repeats))
        return

    def get(row, key):
        return row[key] if row else None

    print(f'# NAT-Tiny, {args.size}², batch {args.batch}, {args.device}, {args.threads} threads, best of '
          f'{args.repeats} after a warm-up; torch {torch.__version__}')
    print(f'# ratios = {BASELINE} / row, measured in this run (higher is better); peak = growth of peak memory '
          f'during one step')
    print('\ntraining step (forward + cross-entropy + backward)')
    table = Table([('row', 12, '<'), ('fwd ms', 9, '.0f'), ('ratio', 8), ('bwd ms', 9, '.0f'), ('ratio', 8),
                   ('step ms', 9, '.0f'), ('ratio', 8), ('peak MiB', 10, '.0f'), ('ratio', 8)])
    table.header()
    rows = {name: measure(name, 'train', args) for name in TRAINABLE if name in args.rows or name == BASELINE}
    base = rows[BASELINE]
    base_step = base and base['fwd'] + base['bwd']
    for name, r in rows.items():
        if r is None:
            table.row(name, 'failed')
            continue
        step = r['fwd'] + r['bwd']
        table.row(name, r['fwd'] * 1e3, ratio(get(base, 'fwd'), r['fwd']), r['bwd'] * 1e3,
                  ratio(get(base, 'bwd'), r['bwd']), step * 1e3, ratio(base_step, step),
                  scaled(r['peak_bytes'], 2**-20), ratio(get(base, 'peak_bytes'), r['peak_bytes']))
    if args.no_inference:
        return
    print('\ninference (eval, no_grad)')
    table = Table([('row', 12, '<'), ('img/s', 9, '.1f'), ('ratio', 8), ('peak MiB', 10, '.0f'), ('ratio', 8)])
    table.header()
    rows = {name: measure(name, 'infer', args) for name in ROWS if name in args.rows or name == BASELINE}
    base = rows[BASELINE]
    for name, r in rows.items():
        if r is None:
            table.row(name, 'failed')
            continue
        table.row(name, args.batch / r['fwd'], ratio(get(base, 'fwd'), r['fwd']), scaled(r['peak_bytes'], 2**-20),
                  ratio(get(base, 'peak_bytes'), r['peak_bytes']))


if __name__ == '__main__':
    main()
