"""CPU inference throughput of visionzoo's backbones, fused vs unfused, and the papers' CPU comparisons (not a test).

Usage::

    python tools/benchmark_models.py                           # default models and the three paper comparisons
    python tools/benchmark_models.py --models efficientvit_m5 van_b0 --batch 16 --threads 1 --repeats 5
    python tools/benchmark_models.py --no-pairs                # fusion table only

Two tables, every number measured in this run:

* **fusion**: each model at its default resolution, throughput (images/s) unfused (``model.eval()``) and fused
  (:func:`visionzoo.fuse`), the fused/unfused speed-up, and peak memory of one forward pass for both;
* **papers' CPU comparisons**, against timm's rivals (unfused; :func:`visionzoo.fuse` finds nothing to fold in
  timm's MobileNetV3/MobileViT blocks): EfficientViT-M5 vs ``mobilenetv3_large_100`` (paper: +45%), EfficientViT-M2
  vs ``mobilevit_xxs`` (paper: 3.7x), SHViT-S4 vs ``mobilevitv2_100`` at 256x256 (paper: 8.1x). The ratio is our
  throughput over the rival's, for our model unfused and fused; the papers' numbers come from their own CPUs.

Every (model, fused, measurement) runs in a fresh subprocess (``benchmark_ops.run_worker``): time is the best of
``--repeats`` forward passes after a warm-up pass; peak memory is the growth of the peak resident set over one
forward pass, measured in a separate process with a fixed mmap threshold. Random weights: BatchNorm statistics are
made non-trivial first (fusion does the same work either way). Run it on an idle machine; a second process
competing for the cores changes CPU timings by 2x or more.
"""
import argparse
import json
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmark_ops import peak_memory, run_worker, time_path  # noqa: E402  (tools/ is on sys.path when this script runs)

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


def worker(name: str, size: int, batch: int, fused: bool, repeats: int, mode: str) -> dict:
    """(In a fresh subprocess) ``mode='memory'``: peak memory of one forward pass; ``'time'``: best forward time."""
    model = build(name, fused)
    x = torch.randn(batch, 3, size, size)

    def run():
        return model(x)

    if mode == 'memory':
        return {'peak_bytes': peak_memory(run, [], 'cpu', backward=False)}
    best, _ = time_path(run, [], 'cpu', repeats, warmup=True, backward=False)
    return {'images_per_s': batch / best}


def measure(name: str, size: int, fused: bool, args, memory: bool = True):
    result = {}
    for mode in ('memory', 'time') if memory else ('time',):
        cmd = [sys.executable, os.path.abspath(__file__), '--worker', name, '--mode', mode, '--size', str(size),
               '--batch', str(args.batch), '--repeats', str(args.repeats), '--threads', str(args.threads)] + \
            (['--fused'] if fused else [])
        part = run_worker(cmd, f'{name} at {size} ({"fused" if fused else "unfused"}, {mode})',
                          fixed_mmap_threshold=mode == 'memory')
        if part is None:
            return None
        result.update(part)
    return result


def _fmt(value, spec):
    return format(value, spec) if value is not None else '-'


def fusion_table(models, args, cache):
    print(f'\n## fusion: images/s and peak MB of one forward pass, batch {args.batch}')
    print(f'{"model":>18} {"size":>5} {"unfused img/s":>14} {"fused img/s":>12} {"fused/unfused":>14} '
          f'{"unfused MB":>11} {"fused MB":>9}')
    for name in models:
        size = default_size(name)
        plain = cache.setdefault((name, size, False), measure(name, size, False, args))
        fused = cache.setdefault((name, size, True), measure(name, size, True, args))
        if plain is None or fused is None:
            print(f'{name:>18} {size:>5} {"failed":>14}')
            continue
        print(f'{name:>18} {size:>5} {plain["images_per_s"]:>14.1f} {fused["images_per_s"]:>12.1f} '
              f'{fused["images_per_s"] / plain["images_per_s"]:>13.2f}x {plain["peak_bytes"] / 2**20:>11.0f} '
              f'{fused["peak_bytes"] / 2**20:>9.0f}')


def pairs_table(args, cache):
    print(f'\n## papers\' CPU comparisons: our throughput / the rival\'s, batch {args.batch}')
    print(f'{"ours":>16} {"rival":>22} {"size":>5} {"ours img/s":>11} {"fused img/s":>12} {"rival img/s":>12} '
          f'{"ratio":>7} {"fused ratio":>12} {"paper":>6}')
    for ours, rival, size, paper in PAIRS:
        plain = cache.setdefault((ours, size, False), measure(ours, size, False, args))
        fused = cache.setdefault((ours, size, True), measure(ours, size, True, args))
        other = cache.setdefault((rival, size, False), measure(rival, size, False, args))
        if None in (plain, fused, other):
            print(f'{ours:>16} {rival:>22} {size:>5} {"failed":>11}')
            continue
        base = other['images_per_s']
        print(f'{ours:>16} {rival:>22} {size:>5} {plain["images_per_s"]:>11.1f} {fused["images_per_s"]:>12.1f} '
              f'{base:>12.1f} {plain["images_per_s"] / base:>6.2f}x {fused["images_per_s"] / base:>11.2f}x '
              f'{paper:>5.2f}x')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=None, help='timm model names (default: one per family)')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--no-pairs', action='store_true', help='skip the papers\' comparisons')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--mode', choices=('memory', 'time'), default='time', help=argparse.SUPPRESS)
    parser.add_argument('--size', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--fused', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.batch, args.fused, args.repeats, args.mode)))
        return

    import timm

    import visionzoo  # noqa: F401
    models = args.models or [m for m in DEFAULT_MODELS if timm.is_model(m)]
    unknown = [m for m in models if not timm.is_model(m)]
    if unknown:
        parser.error(f'--models: unknown timm models: {", ".join(unknown)}')
    print(f'# CPU inference, {args.threads} threads, best of {args.repeats}; torch {torch.__version__}, '
          f'timm {timm.__version__}')
    cache = {}
    fusion_table(models, args, cache)
    if not args.no_pairs:
        pairs_table(args, cache)


if __name__ == '__main__':
    main()
