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
(default allocator) each in their own, as ``tools/benchmark_ops.py``.

Usage::

    python tools/benchmark_biformer.py                      # 224², batch 8, CPU, 2 threads
    python tools/benchmark_biformer.py --batch 4 --repeats 2 --threads 4
    python tools/benchmark_biformer.py --device cuda        # GPU: bra-op runs the Triton kernels
"""
import argparse
import json
import os
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmark_ops import peak_memory, run_worker  # noqa: E402  (tools/ is on sys.path when this script runs)

ROWS = ('bra-gather', 'bra-op', 'swin-tiny')
BASELINE = 'bra-gather'
TRAINABLE = ('bra-gather', 'bra-op')


def build(name: str, device: str) -> torch.nn.Module:
    import timm

    import visionzoo.backbones.biformer  # noqa: F401  (registers biformer_*)
    if name == 'swin-tiny':
        return timm.create_model('swin_tiny_patch4_window7_224').to(device)
    os.environ['VISIONZOO_BRA_BACKEND'] = 'reference' if name == 'bra-gather' else 'auto'
    return timm.create_model('biformer_tiny').to(device)


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def worker(name: str, task: str, mode: str, size: int, batch: int, device: str, repeats: int) -> dict:
    """(In a fresh subprocess) ``mode='memory'``: peak memory of one step; ``'time'``: best forward and backward
    times over ``repeats`` steps after a warm-up step."""
    model = build(name, device)
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
        start = time.perf_counter()
        out = forward(x)
        _sync(device)
        middle = time.perf_counter()
        if task == 'train':
            out.backward()
            _sync(device)
        end = time.perf_counter()
        model.zero_grad(set_to_none=True)
        del out
        if step:  # the first step warms up
            best_fwd, best_bwd = min(best_fwd, middle - start), min(best_bwd, end - middle)
    return {'fwd': best_fwd, 'bwd': best_bwd if task == 'train' else None}


def measure(name: str, task: str, args) -> dict:
    """Peak memory and times of one row, each in a fresh interpreter (see ``benchmark_ops.run_worker``)."""
    result = {}
    for mode in ('memory', 'time'):
        cmd = [sys.executable, os.path.abspath(__file__), '--worker', name, '--task', task, '--mode', mode,
               '--size', str(args.size), '--batch', str(args.batch), '--device', args.device,
               '--repeats', str(args.repeats), '--threads', str(args.threads)]
        part = run_worker(cmd, f'{name} {task} ({mode})', fixed_mmap_threshold=mode == 'memory')
        if part is None:
            return None
        result.update(part)
    return result


def _ratio(base, value) -> str:
    return f'{base / value:.2f}x' if base and value else '-'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--repeats', type=int, default=3, help='timed steps after the warm-up step (best is kept)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--no-inference', action='store_true', help='skip the inference rows')
    parser.add_argument('--worker', choices=ROWS, help=argparse.SUPPRESS)
    parser.add_argument('--task', choices=('train', 'infer'), default='train', help=argparse.SUPPRESS)
    parser.add_argument('--mode', choices=('memory', 'time'), default='time', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.task, args.mode, args.size, args.batch, args.device,
                                args.repeats)))
        return

    print(f'# BiFormer-T, {args.size}², batch {args.batch}, {args.device}, {args.threads} threads, best of '
          f'{args.repeats} after a warm-up; torch {torch.__version__}')
    print(f'# ratios = {BASELINE} / row, measured in this run (higher is better); peak = growth of peak memory '
          f'during one step')
    print('\ntraining step (forward + cross-entropy + backward)')
    print(f'{"row":<11}{"fwd ms":>9}{"ratio":>8}{"bwd ms":>9}{"ratio":>8}{"step ms":>9}{"ratio":>8}'
          f'{"peak MiB":>10}{"ratio":>8}')
    rows = {name: measure(name, 'train', args) for name in TRAINABLE}
    base = rows[BASELINE]
    for name, r in rows.items():
        if r is None:
            print(f'{name:<11}  failed')
            continue
        step = r['fwd'] + r['bwd']
        base_step = base and base['fwd'] + base['bwd']
        print(f'{name:<11}{r["fwd"] * 1e3:9.0f}{_ratio(base and base["fwd"], r["fwd"]):>8}{r["bwd"] * 1e3:9.0f}'
              f'{_ratio(base and base["bwd"], r["bwd"]):>8}{step * 1e3:9.0f}{_ratio(base_step, step):>8}'
              f'{r["peak_bytes"] / 2**20:10.0f}{_ratio(base and base["peak_bytes"], r["peak_bytes"]):>8}', flush=True)
    if args.no_inference:
        return
    print('\ninference (eval, no_grad)')
    print(f'{"row":<11}{"img/s":>9}{"ratio":>8}{"peak MiB":>10}{"ratio":>8}')
    rows = {name: measure(name, 'infer', args) for name in ROWS}
    base = rows[BASELINE]
    for name, r in rows.items():
        if r is None:
            print(f'{name:<11}  failed')
            continue
        print(f'{name:<11}{args.batch / r["fwd"]:9.1f}{_ratio(base and base["fwd"], r["fwd"]):>8}'
              f'{r["peak_bytes"] / 2**20:10.0f}{_ratio(base and base["peak_bytes"], r["peak_bytes"]):>8}', flush=True)


if __name__ == '__main__':
    main()
