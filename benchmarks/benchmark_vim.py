"""Vision Mamba's headline on this machine (not a test): Vim-Ti vs DeiT-Ti batch inference at high resolution.

The paper (Zhu et al. 2024, Fig. 1) reports Vim-Ti 2.8x faster than DeiT-Ti with 86.8% less GPU memory at 1248²,
on a GPU, with the attention of that time (the full score matrix). This script measures the same comparison
here, in one run, against two DeiT-Ti baselines (timm ``deit_tiny_patch16_224`` built with ``img_size``):

* ``deit-explicit``: attention with the full score matrix (``fused_attn = False`` on every block), the paper-era
  baseline;
* ``deit-sdpa``: timm's default ``F.scaled_dot_product_attention`` (memory-efficient / flash kernels).

Usage::

    python benchmarks/benchmark_vim.py                     # 512, 736, 1024, 1248; batch 1; 2 threads
    python benchmarks/benchmark_vim.py --sizes 512 1248 --batch 2 --repeats 3
    python benchmarks/benchmark_vim.py --device cuda       # GPU: Vim on the Triton scan
    python benchmarks/benchmark_vim.py --sizes 32 --models vim-tiny deit-explicit --repeats 1 --no-memory  # smoke

Sides are multiples of the patch size: the paper's 738 becomes 736 (the same 46x46 token grid that DeiT's
patch embedding gives for 738). Every (model, size) runs in two fresh subprocesses: one measures peak memory, the
growth of the process's peak resident set during one forward pass (reset through /proc/self/clear_refs first,
with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 64 KiB so that freed tensors leave the resident set; CUDA:
``max_memory_allocated`` above the memory held before the call); the other the best time of ``--repeats``
forward passes after a warm-up pass, with the default allocator. Ratios are printed against both DeiT-Ti
baselines.
"""
import argparse

import torch

from _common import Table, emit, peak_memory, ratio, run_memory_and_time, scaled, time_runs

MODELS = ('vim-tiny', 'deit-explicit', 'deit-sdpa')
BASELINES = ('deit-explicit', 'deit-sdpa')


def build(name: str, size: int, device: str) -> torch.nn.Module:
    import timm

    import visionzoo  # noqa: F401  (registers vim_tiny)
    if name == 'vim-tiny':
        model = timm.create_model('vim_tiny', img_size=size)
    else:
        model = timm.create_model('deit_tiny_patch16_224', img_size=size)
        for block in model.blocks:
            block.attn.fused_attn = name == 'deit-sdpa'
    return model.eval().to(device)


def worker(name: str, size: int, batch: int, device: str, repeats: int, mode: str) -> dict:
    """(In a fresh subprocess) ``mode='memory'``: peak memory of one forward pass; ``'time'``: the best time over
    ``repeats`` forward passes after a warm-up pass."""
    model = build(name, size, device)
    x = torch.randn(batch, 3, size, size, device=device)

    def run():
        return model(x)

    if mode == 'memory':
        return {'peak_bytes': peak_memory(run, [], device, backward=False)}
    with torch.no_grad():
        return {'time': min(time_runs(run, repeats, warmup=1, device=device))}


def measure(name: str, size: int, batch: int, device: str, repeats: int, threads: int, memory: bool = True):
    """Peak memory (None without ``memory``) and time of one model at one size, each in a fresh interpreter; the
    memory run with a fixed mmap threshold, the timed run with the default allocator (see
    ``_common.run_worker``)."""
    argv = ['--worker', name, '--sizes', size, '--batch', batch, '--device', device, '--repeats', repeats,
            '--threads', threads]
    return run_memory_and_time(__file__, argv, f'{name} at {size}', memory=memory)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 736, 1024, 1248])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--models', nargs='+', choices=MODELS, default=list(MODELS),
                        help='models to run (ratios need the baselines in the same run)')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory runs')
    parser.add_argument('--worker', choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument('--mode', choices=('memory', 'time'), default='time', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for size in args.sizes:
        if size % 16 or size < 16:
            parser.error(f'--sizes: each size must be a positive multiple of the patch size 16, got {size}')
    if args.batch < 1 or args.repeats < 1 or args.threads < 1:
        parser.error('--batch, --repeats and --threads must be at least 1')
    torch.set_num_threads(args.threads)
    if args.worker:
        emit(worker(args.worker, args.sizes[0], args.batch, args.device, args.repeats, args.mode))
        return

    print(f'# Vim-Ti vs DeiT-Ti inference, batch {args.batch}, {args.device}, {args.threads} threads, '
          f'best of {args.repeats}; torch {torch.__version__}')
    table = Table([('size', 5), ('model', 14), ('time s', 8, '.2f'), ('peak MB', 8, '.0f'),
                   ('faster than explicit', 21), ('faster than sdpa', 17), ('mem saved vs explicit', 22),
                   ('mem saved vs sdpa', 18)], sep=' ')
    table.header()
    for size in args.sizes:
        rows = {name: measure(name, size, args.batch, args.device, args.repeats, args.threads, not args.no_memory)
                if name in args.models else None for name in MODELS}
        for name in args.models:
            r = rows[name]
            if r is None:
                table.row(size, name, 'failed')
                continue
            faster = [ratio(rows[base]['time'], r['time']) if rows[base] else '-' for base in BASELINES]
            saved = [f'{100 * (1 - r["peak_bytes"] / rows[base]["peak_bytes"]):.1f}%'
                     if rows[base] and rows[base]['peak_bytes'] and r['peak_bytes'] is not None else '-'
                     for base in BASELINES]
            table.row(size, name, r['time'], scaled(r['peak_bytes'], 2**-20), *faster, *saved)


if __name__ == '__main__':
    main()
