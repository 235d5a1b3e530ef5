"""CPU inference throughput of visionzoo's backbones, fused vs unfused, and the papers' CPU comparisons (not a test).

Usage::

    python benchmarks/benchmark_models.py                      # default models and the three paper comparisons
    python benchmarks/benchmark_models.py --models efficientvit_m5 van_b0 --batch 16 --threads 1 --repeats 5
    python benchmarks/benchmark_models.py --no-pairs           # fusion table only
    python benchmarks/benchmark_models.py --models efficientvit_m0 --no-pairs --batch 1 --repeats 1 --no-memory

Two tables, every number measured in this run:

* **fusion**: each model at its default resolution, throughput (images/s) unfused (``model.eval()``) and fused
  (:func:`visionzoo.fuse`), the fused/unfused speed-up, and peak memory of one forward pass for both;
* **papers' CPU comparisons**, against timm's rivals (unfused; :func:`visionzoo.fuse` finds nothing to fold in
  timm's MobileNetV3/MobileViT blocks): EfficientViT-M5 vs ``mobilenetv3_large_100`` (paper: +45%), EfficientViT-M2
  vs ``mobilevit_xxs`` (paper: 3.7x), SHViT-S4 vs ``mobilevitv2_100`` at 256x256 (paper: 8.1x). The ratio is our
  throughput over the rival's, for our model unfused and fused; the papers' numbers come from their own CPUs.

Times come from one fresh subprocess per row (``_common.run_worker``) that builds every model of the row and
interleaves their forward passes (a warm-up round, then ``--repeats`` rounds; the best pass of each counts), so
that the machine's slow stretches hit all of them alike: on a shared 2-core VM, separate processes timed minutes
apart disagree by 30% or more. Peak memory is the growth of the peak resident set over one forward pass, each
model in its own process with a fixed mmap threshold. Random weights: BatchNorm statistics are
made non-trivial first (fusion does the same work either way). Run it on an idle machine; a second process
competing for the cores changes CPU timings by 2x or more.
"""
import argparse

import torch

from _common import Table, emit, peak_memory, ratio, run_worker, scaled, time_interleaved

DEFAULT_MODELS = ('efficientvit_m2', 'efficientvit_m5', 'shvit_s4', 'mambaout_femto', 'van_b0', 'slab_deit_tiny',
                  'slab_swin_tiny', 'biformer_tiny', 'vim_tiny')
# (ours, rival, input side, paper's throughput ratio ours / rival on CPU)
PAIRS = (('efficientvit_m5', 'mobilenetv3_large_100', 224, 1.45),
         ('efficientvit_m2', 'mobilevit_xxs', 224, 3.7),
         ('shvit_s4', 'mobilevitv2_100', 256, 8.1))


def build(name: str, fused: bool) -> torch.nn.Module:
    import timm

    import visionzoo
    model = timm.create_model(name)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    model.eval()
    return visionzoo.fuse(model) if fused else model


def default_size(name: str) -> int:
    import timm

    import visionzoo  # noqa: F401  (registers visionzoo's models)
    return timm.get_pretrained_cfg(name).input_size[-1]


def worker(variants, size: int, batch: int, repeats: int, mode: str) -> dict:
    """(In a fresh subprocess) ``mode='memory'``: peak memory of one forward pass of the single variant;
    ``'time'``: every variant's best forward time, the variants' runs interleaved (one pass of each per round,
    after a warm-up round) so that a slow stretch of the machine hits all of them alike."""
    x = torch.randn(batch, 3, size, size)
    models = {v: build(v.split(':')[0], v.endswith(':fused')) for v in variants}
    if mode == 'memory':
        (model,) = models.values()
        return {'peak_bytes': peak_memory(lambda: model(x), [], 'cpu', backward=False)}
    with torch.no_grad():  # one warm-up round, then ``repeats`` rounds
        times = time_interleaved({v: (lambda model=model: model(x)) for v, model in models.items()}, repeats)
    return {v: batch / min(t) for v, t in times.items()}


def _run(variants, size, args, mode):
    argv = ['--worker', *variants, '--mode', mode, '--size', size, '--batch', args.batch, '--repeats', args.repeats,
            '--threads', args.threads]
    return run_worker(__file__, argv, f'{", ".join(variants)} at {size} ({mode})', memory=mode == 'memory')


def measure(names, size, args):
    """Images/s of each ``name:unfused`` / ``name:fused`` variant, timed interleaved in one process, and the peak
    memory of each in a process of its own (skipped with ``--no-memory``); None where a run failed."""
    speed = _run(names, size, args, 'time')
    if speed is None:
        return None
    out = {}
    for v in names:
        memory = None if args.no_memory else _run([v], size, args, 'memory')
        out[v] = dict(images_per_s=speed[v], peak_bytes=memory['peak_bytes'] if memory else None)
    return out


def fusion_table(models, args):
    print(f'\n## fusion: images/s and peak MB of one forward pass, batch {args.batch}')
    table = Table([('model', 18), ('size', 5), ('unfused img/s', 14, '.1f'), ('fused img/s', 12, '.1f'),
                   ('fused/unfused', 14), ('unfused MB', 11, '.0f'), ('fused MB', 9, '.0f')], sep=' ')
    table.header()
    for name in models:
        size = default_size(name)
        r = measure([f'{name}:unfused', f'{name}:fused'], size, args)
        if r is None:
            table.row(name, size, 'failed')
            continue
        plain, fused = r[f'{name}:unfused'], r[f'{name}:fused']
        table.row(name, size, plain['images_per_s'], fused['images_per_s'],
                  ratio(fused['images_per_s'], plain['images_per_s']), scaled(plain['peak_bytes'], 2**-20),
                  scaled(fused['peak_bytes'], 2**-20))


def pairs_table(args):
    print(f'\n## papers\' CPU comparisons: our throughput / the rival\'s, batch {args.batch}')
    table = Table([('ours', 16), ('rival', 22), ('size', 5), ('ours img/s', 11, '.1f'), ('fused img/s', 12, '.1f'),
                   ('rival img/s', 12, '.1f'), ('ratio', 7), ('fused ratio', 12), ('paper', 6)], sep=' ')
    table.header()
    for ours, rival, size, paper in PAIRS:
        r = measure([f'{ours}:unfused', f'{ours}:fused', f'{rival}:unfused'], size, args)
        if r is None:
            table.row(ours, rival, size, 'failed')
            continue
        plain, fused = r[f'{ours}:unfused']['images_per_s'], r[f'{ours}:fused']['images_per_s']
        base = r[f'{rival}:unfused']['images_per_s']
        table.row(ours, rival, size, plain, fused, base, ratio(plain, base), ratio(fused, base), f'{paper:.2f}x')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=None, help='timm model names (default: one per family)')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--no-pairs', action='store_true', help='skip the papers\' comparisons')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory runs')
    parser.add_argument('--worker', nargs='+', help=argparse.SUPPRESS)
    parser.add_argument('--mode', choices=('memory', 'time'), default='time', help=argparse.SUPPRESS)
    parser.add_argument('--size', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.threads < 1:
        parser.error('--batch, --repeats and --threads must be at least 1')
    torch.set_num_threads(args.threads)
    if args.worker:
        emit(worker(args.worker, args.size, args.batch, args.repeats, args.mode))
        return

    import timm

    import visionzoo  # noqa: F401
    models = args.models or [m for m in DEFAULT_MODELS if timm.is_model(m)]
    unknown = [m for m in models if not timm.is_model(m)]
    if unknown:
        parser.error(f'--models: unknown timm models: {", ".join(unknown)}')
    print(f'# CPU inference, {args.threads} threads, best of {args.repeats}; torch {torch.__version__}, '
          f'timm {timm.__version__}')
    fusion_table(models, args)
    if not args.no_pairs:
        pairs_table(args)


if __name__ == '__main__':
    main()
