"""Semantic segmentation on CPU (not a test): UperNet inference time with VAN-B2 against the classic ResNet-50
UperNet, measured in the same run, and the memory of ``IoUMetric`` over thousands of predictions.

Usage::

    python benchmarks/benchmark_segmentation.py                  # 512x512, 5 rounds, 2 threads; 2,000 metric images
    python benchmarks/benchmark_segmentation.py --iters 10 --threads 1 --no-metric
    python benchmarks/benchmark_segmentation.py --size 64 --iters 1 --images 20 --checkpoints 5 10 20   # smoke

**Forward**: two ``EncoderDecoder`` UperNets with mmseg's ``upernet_r50`` heads (``UPerHead`` channels 512, pool
scales (1, 2, 3, 6), dropout 0.1; auxiliary ``FCNHead`` on the third map, channels 256, one conv, no concat; BN;
150 classes as ADE20K), random weights, on

* ``resnet50`` (the baseline): timm's ``resnet50c``, the deep-stem ResNet-50 that mmseg's ``ResNetV1c`` is, maps of
  strides 4-32 with channels [256, 512, 1024, 2048]; auxiliary head on the 1024-channel map;
* ``van-b2``: visionzoo's ``van_b2``, channels [64, 128, 320, 512] (mmseg's ``van-b2_pre1k_upernet`` heads);
  auxiliary head on the 320-channel map.

Each model runs batch 1 in ``eval()`` under ``torch.no_grad()`` as a test step does: a random uint8 ``--size``
square image through the model's ``SegDataPreprocessor`` (normalisation, no padding), then ``mode='predict'`` (whole
-image logits, bilinear resize to the original size, argmax; the auxiliary head is not run at test time but its
parameters count in ``params``). Runs are interleaved: a warm-up round, then ``--iters`` rounds each timing both
models, the order reversed every second round; the table shows the median and the best ms/image and the ratio of the
medians to the baseline's (below 1: faster than ResNet-50).

**IoUMetric memory**: in a fresh interpreter (glibc's mmap threshold fixed, see ``_common.run_worker``) ``--images``
synthetic ``--size`` predictions with 150 classes (int64 label maps: ground truth uniform over the classes with
about 5% of the pixels 255, the ignored label; predictions equal to the ground truth on about half of the pixels,
random elsewhere) go through ``IoUMetric.process`` in batches of ``--metric-batch``, each batch generated just
before its call. After each ``--checkpoints`` count of images it records the metric's state (entries of
``metric.results`` and their bytes), the process's resident set and its peak (reset when feeding starts), and
prints them with ratios against the first checkpoint (flat: 1.00x): the state, the resident set, and the growth of
the peak above the resident set before feeding (the interpreter with torch and visionzoo holds most of the resident
set, which would hide a growth in the plain ratio; the peak growth is the batch being processed). Then
``compute_metrics`` is timed once (the per-class table it logs is silenced).

On a shared machine the absolute times move from run to run; the interleaving keeps slow stretches from favouring
one model. Compare numbers of one run only.
"""
import argparse
import time

import torch

from _common import Table, _status_kib, emit, median, ratio, run_worker, scaled, time_interleaved

BASELINE = 'resnet50'
BACKBONES = {  # name: (timm model, out_indices, channels of the maps)
    'resnet50': ('resnet50c', (1, 2, 3, 4), [256, 512, 1024, 2048]),
    'van-b2': ('van_b2', (0, 1, 2, 3), [64, 128, 320, 512]),
}
NUM_CLASSES = 150
DEFAULT_CHECKPOINTS = (100, 500, 1000, 2000)


# ------------------------------------------------------------------------------------------------------- forward
def upernet_config(name: str) -> dict:
    """mmseg's ``upernet_r50`` model (BN for SyncBN, 150 classes) on the backbone ``name``."""
    model_name, out_indices, channels = BACKBONES[name]
    norm_cfg = dict(type='BN', requires_grad=True)
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], pad_val=0, seg_pad_val=255),
        backbone=dict(type='TimmBackbone', model_name=model_name, out_indices=out_indices),
        decode_head=dict(type='UPerHead', in_channels=channels, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                         channels=512, dropout_ratio=0.1, num_classes=NUM_CLASSES, norm_cfg=norm_cfg,
                         align_corners=False),
        auxiliary_head=dict(type='FCNHead', in_channels=channels[2], in_index=2, channels=256, num_convs=1,
                            concat_input=False, dropout_ratio=0.1, num_classes=NUM_CLASSES, norm_cfg=norm_cfg,
                            align_corners=False, loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))


def build(name: str) -> torch.nn.Module:
    import visionzoo  # noqa: F401  (registers the models, van_b2 among them)
    from visionzoo.registry import MODELS
    torch.manual_seed(0)
    return MODELS.build(upernet_config(name)).eval()


def make_batch(size: int, seed: int) -> dict:
    """One contract item: a random uint8 image at its original size."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
    sample = dict(img_path='0.jpg', ori_shape=(size, size), img_shape=(size, size), flip=False)
    return dict(inputs=[image], data_samples=[sample])


def infer(model, batch) -> None:
    # fresh sample dicts: the preprocessor writes batch_input_shape and padding into them
    data = dict(inputs=batch['inputs'], data_samples=[dict(s) for s in batch['data_samples']])
    with torch.no_grad():
        model(**model.data_preprocessor(data, False), mode='predict')


def run_forward(size: int, iters: int, threads: int) -> None:
    models = {name: build(name) for name in BACKBONES}  # the baseline first
    batch = make_batch(size, seed=0)
    times = time_interleaved({name: (lambda m=m: infer(m, batch)) for name, m in models.items()}, iters, warmup=1,
                             alternate=True)
    print(f'# UperNet forward on CPU, {size}x{size}, batch 1, eval + no_grad, preprocessing + predict '
          f'(whole image, {NUM_CLASSES} classes); {iters} interleaved rounds after one warm-up; {threads} threads, '
          f'torch {torch.__version__}')
    table = Table([('model', 10, '<'), ('params (M)', 11, '.1f'), ('median ms', 10, '.0f'),
                   ('best ms', 9, '.0f'), ('time / base', 12)], sep=' ')
    table.header()
    base = median(times[BASELINE])
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        t = median(times[name])
        table.row(name, params, t * 1e3, min(times[name]) * 1e3, ratio(t, base))


# ------------------------------------------------------------------------------------------------------- metric
def synthetic_samples(n: int, size: int, num_classes: int, generator: torch.Generator) -> list:
    """``n`` predicted samples: (size, size) int64 ``gt_sem_seg`` (~5% ignored 255) and ``pred_sem_seg``."""
    shape = (n, size, size)
    gt = torch.randint(0, num_classes, shape, generator=generator)
    gt[torch.randint(0, 20, shape, generator=generator, dtype=torch.uint8) == 0] = 255
    noise = torch.randint(0, num_classes, shape, generator=generator)
    keep = torch.randint(0, 2, shape, generator=generator, dtype=torch.uint8).bool() & (gt != 255)
    pred = torch.where(keep, gt, noise)
    return [dict(img_path=f'{i}.png', pred_sem_seg=p, gt_sem_seg=g) for i, (p, g) in enumerate(zip(pred, gt))]


def _state_bytes(results: list) -> int:
    return sum(r.numel() * r.element_size() if torch.is_tensor(r) else 0 for r in results)


def _reset_peak_rss() -> None:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # the peak resident set becomes the current one
    except OSError:
        pass


def metric_worker(size: int, images: int, batch: int, checkpoints, seed: int = 0) -> dict:
    """(In a fresh interpreter) feed ``images`` synthetic predictions through ``IoUMetric.process``; the state and
    memory after each checkpoint, and the seconds of the feeding and of ``compute_metrics``."""
    from mmengine.logging import MMLogger
    from visionzoo.evaluation.iou_metric import IoUMetric
    MMLogger.get_instance('benchmark_segmentation', log_level='WARNING')  # compute_metrics logs its table to it
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=[f'class{i}' for i in range(NUM_CLASSES)])
    g = torch.Generator().manual_seed(seed)
    targets = sorted(set(checkpoints))
    rows, fed, process_s = [], 0, 0.0
    _reset_peak_rss()
    start_bytes = _status_kib('VmRSS') * 1024
    while fed < images:
        n = min(batch, images - fed, next((c for c in targets if c > fed), images) - fed)
        samples = synthetic_samples(n, size, NUM_CLASSES, g)
        start = time.perf_counter()
        metric.process({}, samples)
        process_s += time.perf_counter() - start
        del samples
        fed += n
        if fed in targets:
            rows.append(dict(images=fed, entries=len(metric.results), state_bytes=_state_bytes(metric.results),
                             rss_bytes=_status_kib('VmRSS') * 1024, peak_bytes=_status_kib('VmHWM') * 1024))
    start = time.perf_counter()
    out = metric.compute_metrics(metric.results)
    compute_s = time.perf_counter() - start
    return dict(rows=rows, start_bytes=start_bytes, process_s=process_s, compute_s=compute_s, mIoU=out['mIoU'],
                aAcc=out['aAcc'])


def run_metric(size: int, images: int, batch: int, checkpoints, threads: int) -> bool:
    argv = ['--worker', 'metric', '--size', size, '--images', images, '--metric-batch', batch,
            '--checkpoints', *checkpoints, '--threads', threads]
    result = run_worker(__file__, argv, 'IoUMetric worker', memory=True)
    print(f'\n# IoUMetric over {images} synthetic {size}x{size} predictions, {NUM_CLASSES} classes (~5% ignored '
          f'pixels), process() in batches of {batch}, {threads} threads, fresh interpreter with a fixed mmap '
          f'threshold; baseline: after {min(checkpoints)} images')
    if result is None:
        print('IoUMetric worker failed')
        return False
    start = result['start_bytes']
    print(f'resident set before the first process() call: {start / 2**20:.1f} MiB (interpreter, torch, visionzoo); '
          f'"+" columns: growth above it')
    table = Table([('images', 7), ('entries', 8), ('state B', 9), ('RSS MiB', 9, '.1f'), ('RSS +MiB', 9, '.1f'),
                   ('peak +MiB', 10, '.1f'), ('state / base', 13), ('RSS / base', 11), ('peak+ / base', 13)],
                  sep=' ')
    table.header()
    base = result['rows'][0]
    for row in result['rows']:
        table.row(row['images'], row['entries'], row['state_bytes'], scaled(row['rss_bytes'], 2**-20),
                  scaled(row['rss_bytes'] - start, 2**-20), scaled(row['peak_bytes'] - start, 2**-20),
                  ratio(row['state_bytes'], base['state_bytes']), ratio(row['rss_bytes'], base['rss_bytes']),
                  ratio(row['peak_bytes'] - start, base['peak_bytes'] - start))
    print(f'\nprocess() total {result["process_s"]:.2f} s ({1e3 * result["process_s"] / images:.2f} ms/image); '
          f'compute_metrics {1e3 * result["compute_s"]:.1f} ms (mIoU {result["mIoU"]:.2f}, aAcc {result["aAcc"]:.2f})')
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=512, help='square image / prediction side (default 512)')
    parser.add_argument('--iters', type=int, default=5, help='timed forward rounds after the warm-up (default 5)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--images', type=int, default=2000, help='predictions fed to IoUMetric (default 2000)')
    parser.add_argument('--metric-batch', type=int, default=10, help='predictions per process() call (default 10)')
    parser.add_argument('--checkpoints', type=int, nargs='+', default=list(DEFAULT_CHECKPOINTS),
                        help='image counts at which the metric memory is read; the first is the baseline')
    parser.add_argument('--no-forward', action='store_true', help='skip the UperNet forward timing')
    parser.add_argument('--no-metric', action='store_true', help='skip the IoUMetric memory run')
    parser.add_argument('--worker', choices=('metric',), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size < 32 or args.iters < 1 or args.threads < 1 or args.metric_batch < 1:
        parser.error('--iters, --threads and --metric-batch must be at least 1 and --size at least 32')
    checkpoints = sorted(set(args.checkpoints))
    if checkpoints[0] < 1 or checkpoints[-1] > args.images:
        parser.error(f'--checkpoints: expected image counts from 1 to --images={args.images}, got {args.checkpoints}')
    torch.set_num_threads(args.threads)
    if args.worker:
        emit(metric_worker(args.size, args.images, args.metric_batch, checkpoints))
        return 0
    ok = True
    if not args.no_forward:
        run_forward(args.size, args.iters, args.threads)
    if not args.no_metric:
        ok = run_metric(args.size, args.images, args.metric_batch, checkpoints, args.threads)
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
