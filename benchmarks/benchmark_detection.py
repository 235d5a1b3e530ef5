"""RetinaNet on CPU (not a test): training-step and inference time of visionzoo's backbones against the classic
ResNet-50 RetinaNet, measured in the same run.

Usage::

    python benchmarks/benchmark_detection.py                              # 640x640, 5 rounds, 2 threads
    python benchmarks/benchmark_detection.py --models efficientvit-m4 biformer-small --iters 3 --size 512 --threads 1
    python benchmarks/benchmark_detection.py --models efficientvit-m4 --iters 1 --size 64     # smoke

Each model is built from its config, ``configs/retinanet/retinanet_<model>_fpn_1x_coco.py`` (random weights,
80 classes); the baseline ``resnet50`` from ``configs/_base_/models/retinanet_fpn.py`` (timm's ResNet-50, stem and
first stage frozen, BatchNorm in eval mode: mmdet's classic ``retinanet_r50_fpn``). The configs' 1333x800 resize is
replaced by square ``--size`` inputs (random uint8 images, three boxes each), fed through each model's
``data_preprocessor`` as the data contract says.

* **train step**: batch 2, ``mode='loss'`` forward, backward and one AdamW step (lr 1e-4, weight decay 0.05,
  the same for every model);
* **infer**: batch 1, ``model.eval()``, ``mode='predict'`` under ``torch.no_grad()`` (with untrained heads few
  boxes pass the 0.05 score threshold, so post-processing costs little for every model alike).

All models live in one process and their runs are interleaved: a warm-up round, then ``--iters`` rounds that each
time every model once (train step, then inference); the table shows medians and the ratio of each model's time to
the baseline's (below 1: faster than ResNet-50). On a shared machine the absolute times move from run to run; the
interleaving keeps slow stretches from favouring one model.
"""
import argparse
import os

import torch

from _common import Table, median, ratio, time_interleaved

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # configs/ lives at the repository root

BASELINE = 'resnet50'
DEFAULT_MODELS = ('efficientvit-m4', 'van-b2', 'mambaout-tiny')


def config_path(name: str) -> str:
    if name == BASELINE:
        return os.path.join(REPO, 'configs', '_base_', 'models', 'retinanet_fpn.py')
    return os.path.join(REPO, 'configs', 'retinanet', f'retinanet_{name}_fpn_1x_coco.py')


def available_models():
    folder = os.path.join(REPO, 'configs', 'retinanet')
    names = [f[len('retinanet_'):-len('_fpn_1x_coco.py')] for f in os.listdir(folder)
             if f.startswith('retinanet_') and f.endswith('_fpn_1x_coco.py')]
    return sorted(names)


def build(name: str) -> torch.nn.Module:
    from visionzoo.engine.config import load_config
    from visionzoo.registry import MODELS
    cfg = load_config(config_path(name))
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def make_batch(n: int, size: int, seed: int) -> dict:
    """``n`` contract items: random uint8 images with three boxes each (and their labels)."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(n):
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8))
        xy = torch.randint(0, size // 2, (3, 2), generator=g).float()
        wh = torch.randint(size // 16, size // 2, (3, 2), generator=g).float()
        samples.append(dict(img_id=i, img_path=f'{i}.jpg', ori_shape=(size, size), img_shape=(size, size),
                            scale_factor=(1.0, 1.0), flip=False, gt_bboxes=torch.cat([xy, xy + wh], 1),
                            gt_labels=torch.randint(0, 80, (3,), generator=g)))
    return dict(inputs=inputs, data_samples=samples)


def _copy(batch: dict) -> dict:
    # the preprocessor writes batch_input_shape into the sample dicts: give each run its own
    return dict(inputs=batch['inputs'], data_samples=[dict(s) for s in batch['data_samples']])


def train_step(model, optimizer, batch) -> None:
    model.train()
    data = model.data_preprocessor(_copy(batch), True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def infer(model, batch) -> None:
    model.eval()
    with torch.no_grad():
        model(**model.data_preprocessor(_copy(batch), False), mode='predict')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                        help=f'RetinaNet configs by model name (default: {" ".join(DEFAULT_MODELS)})')
    parser.add_argument('--iters', type=int, default=5, help='timed rounds after the warm-up round (default 5)')
    parser.add_argument('--size', type=int, default=640, help='square input side in pixels (default 640)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    args = parser.parse_args(argv)
    known = available_models()
    unknown = [m for m in args.models if m not in known]
    if unknown:
        parser.error(f'--models: no configs/retinanet/retinanet_<model>_fpn_1x_coco.py for {", ".join(unknown)}; '
                     f'available: {", ".join(known)}')
    if args.iters < 1 or args.size < 64 or args.threads < 1:
        parser.error('--iters and --threads must be at least 1 and --size at least 64')
    torch.set_num_threads(args.threads)

    import visionzoo  # noqa: F401  (registers the models)
    names = [BASELINE] + [m for m in args.models if m != BASELINE]
    models = {name: build(name) for name in names}
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4,
                                          weight_decay=0.05) for name, m in models.items()}
    train_batch, infer_batch = make_batch(2, args.size, seed=0), make_batch(1, args.size, seed=1)
    steps = {}
    for name, model in models.items():  # every round: each model's train step, then its inference
        steps[name, 'train'] = lambda model=model, name=name: train_step(model, optimizers[name], train_batch)
        steps[name, 'infer'] = lambda model=model: infer(model, infer_batch)
    times = time_interleaved(steps, args.iters, warmup=1)  # round 0 warms up

    print(f'# RetinaNet on CPU, {args.size}x{args.size}, train batch 2 (forward + backward + AdamW step), '
          f'inference batch 1; median of {args.iters} interleaved rounds; {args.threads} threads, '
          f'torch {torch.__version__}')
    table = Table([('model', 16), ('params (M)', 11, '.1f'), ('train step s', 13, '.2f'), ('infer s', 8, '.3f'),
                   ('train / base', 13), ('infer / base', 13)], sep=' ')
    table.header()
    base_train, base_infer = median(times[BASELINE, 'train']), median(times[BASELINE, 'infer'])
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        t_train, t_infer = median(times[name, 'train']), median(times[name, 'infer'])
        table.row(name, params, t_train, t_infer, ratio(t_train, base_train), ratio(t_infer, base_infer))


if __name__ == '__main__':
    main()
