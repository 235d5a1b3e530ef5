"""BiFormer training and inference on this machine (not a test): the routed-attention op against the official gather.

Rows, all measured in one run:

* ``bra-gather`` (the baseline): BiFormer-T with its routed attention on the official formulation
  (``VISIONZOO_BRA_BACKEND=reference``: ``torch.gather`` from an expanded view, autograd backward);
* ``bra-op``: BiFormer-T on ``visionzoo.ops.routing_attention``'s default path (on CPU the PyTorch path with the
  index gather and scatter backward; on CUDA the Triton kernels);
* ``swin-tiny`` (inference only, for context): timm's ``swin_tiny_patch4_window7_224``.

Training step = forward, cross-entropy loss, backward (BatchNorm in train mode, no optimizer step); times are the
best of ``--repeats`` steps after a warm-up step, forward and backward timed separately. Inference = forward under
``torch.no_grad`` in eval mode, reported as images per second. Every (model, measurement) runs in fresh
subprocesses: peak memory (growth of the process's peak resident set during one step, after a batch-1 warm-up, with
glibc's mmap threshold fixed so freed buffers leave the resident set; CUDA: ``max_memory_allocated``) and timing
(default allocator) each in their own (``_common.run_worker``).

Usage::

    python benchmarks/benchmark_biformer.py                 # 224², batch 8, CPU, 2 threads
    python benchmarks/benchmark_biformer.py --batch 4 --repeats 2 --threads 4
    python benchmarks/benchmark_biformer.py --device cuda   # GPU: bra-op runs the Triton kernels
    python benchmarks/benchmark_biformer.py --rows bra-op --no-memory --no-inference --size 64 --batch 1 --repeats 1
"""
import argparse
import os

import torch

from _common import Table, emit, peak_memory, ratio, run_memory_and_time, scaled, timed

ROWS = ('bra-gather', 'bra-op', 'swin-tiny')
BASELINE = 'bra-gather'
TRAINABLE = ('bra-gather', 'bra-op')


def build(name: str, size: int, device: str) -> torch.nn.Module:
    import timm

    import visionzoo.backbones.biformer  # noqa: F401  (registers biformer_*)
    if name == 'swin-tiny':  # timm's Swin checks the input size: built for --size
        return timm.create_model('swin_tiny_patch4_window7_224', img_size=size).to(device)
    os.environ['VISIONZOO_BRA_BACKEND'] = 'reference' if name == 'bra-gather' else 'auto'
    return timm.create_model('biformer_tiny').to(device)


def worker(name: str, task: str, mode: str, size: int, batch: int, device: str, repeats: int) -> dict:
    """(In a fresh subprocess) ``mode='memory'``: peak memory of one step; ``'time'``: best forward and backward
    times over ``repeats`` steps after a warm-up step."""
    model = build(name, size, device)
    model.train(task == 'train')
    x = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, 1000, (batch,), device=device)

    def forward(inputs):
        if task == 'train':
            return torch.nn.functional.cross_entropy(model(inputs), target[:inputs.shape[0]])
        with torch.no_grad():
            return model(inputs)

    if mode == 'memory':
        warm = forward(x[:1])
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
    """Peak memory and times of one row, each in a fresh interpreter (see ``_common.run_worker``); peak memory
    None with ``--no-memory``."""
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

    print(f'# BiFormer-T, {args.size}², batch {args.batch}, {args.device}, {args.threads} threads, best of '
          f'{args.repeats} after a warm-up; torch {torch.__version__}')
    print(f'# ratios = {BASELINE} / row, measured in this run (higher is better); peak = growth of peak memory '
          f'during one step')
    print('\ntraining step (forward + cross-entropy + backward)')
    table = Table([('row', 11, '<'), ('fwd ms', 9, '.0f'), ('ratio', 8), ('bwd ms', 9, '.0f'), ('ratio', 8),
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
    table = Table([('row', 11, '<'), ('img/s', 9, '.1f'), ('ratio', 8), ('peak MiB', 10, '.0f'), ('ratio', 8)])
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
