"""COCO evaluation time, pycocotools (the baseline) vs faster-coco-eval, on a generated result set (not a test).

Usage::

    python benchmarks/benchmark_coco_eval.py                 # bbox: 2,000 images, 80 classes, ~15 GT / ~100 dets each
    python benchmarks/benchmark_coco_eval.py --segm          # and mask AP on a smaller set (--segm-images)
    python benchmarks/benchmark_coco_eval.py --images 500 --repeats 5
    python benchmarks/benchmark_coco_eval.py --images 20 --repeats 1 --segm --segm-images 5 --classes 5  # smoke

A fixed-seed ground truth (boxes of COCO-like sizes, 5% crowd) and detections (jittered copies of the ground truth
with the right or a wrong class, plus random false positives, random scores) are evaluated with
:func:`visionzoo.evaluation.coco.coco_evaluate` by both backends in turn, the order alternating between repeats so
that the machine's slow stretches hit both alike. A time covers what ``CocoMetric.compute_metrics`` does per IoU
type: index the ground truth, load the results, evaluate, accumulate, summarize. Each run gets fresh copies of the
inputs (outside the timer): pycocotools writes the masks it rasterises back into the ground truth. The table gives
the median of the repeats and the speed-up against pycocotools, and whether the 12 summary numbers are identical
(bit for bit, or else to 1e-12: the two libraries may sum in a different order).
For masks faster-coco-eval computes IoUs on up to min(CPUs, 8) threads (its default), pycocotools on one.
Timings on a shared machine move with the other processes' load; compare numbers of one run only.
"""
import argparse
import json
import os
import sys

import numpy as np

from _common import Table, median, ratio, time_interleaved

BACKENDS = ('pycocotools', 'faster_coco_eval')  # the first is the baseline


def generate(n_images: int, n_classes: int, gt_per_image: int, dets_per_image: int, seed: int, masks: bool):
    """(ground-truth dict, result entries) of a synthetic set; with ``masks`` every instance also has an octagon
    polygon (ground truth) or its compressed RLE (detections)."""
    from pycocotools import mask as mask_util
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    cat_ids = list(range(1, n_classes + 1))

    def boxes_in(n, w, h):
        size = np.exp(rng.uniform(np.log(6), np.log(0.8 * min(w, h)), size=(n, 2)))
        xy = rng.uniform(0, 1, size=(n, 2)) * ([w, h] - size)
        return np.round(np.concatenate([xy, size], axis=1), 2)

    def octagon(box):
        x, y, bw, bh = box
        cx, cy, t = x + bw / 2, y + bh / 2, np.linspace(0, 2 * np.pi, 9)[:-1]
        return np.round(np.stack([cx + bw / 2 * np.cos(t), cy + bh / 2 * np.sin(t)], axis=1).ravel(), 2).tolist()

    for img_id in range(1, n_images + 1):
        w, h = int(rng.integers(480, 641)), int(rng.integers(360, 481))
        images.append(dict(id=img_id, width=w, height=h, file_name=f'{img_id:012d}.jpg'))
        n_gt = int(rng.integers(gt_per_image // 2, gt_per_image * 3 // 2 + 1))
        gt_boxes = boxes_in(n_gt, w, h)
        gt_labels = rng.integers(0, n_classes, size=n_gt)
        for box, label in zip(gt_boxes.tolist(), gt_labels.tolist()):
            ann = dict(id=len(annotations) + 1, image_id=img_id, category_id=cat_ids[label], bbox=box,
                       area=box[2] * box[3], iscrowd=int(rng.random() < 0.05))
            if masks:
                ann['segmentation'] = [octagon(box)]
            annotations.append(ann)
        # ~60% of the detections jitter a ground-truth box (some with a wrong class), the rest are false positives
        n_tp = min(dets_per_image * 3 // 5, 4 * n_gt)
        src = rng.integers(0, n_gt, size=n_tp)
        noise = rng.normal(0, 1, size=(n_tp, 4)) * rng.uniform(0.02, 0.3, size=(n_tp, 1))
        tp = gt_boxes[src] + noise * gt_boxes[src][:, [2, 3, 2, 3]]
        tp[:, 2:] = np.maximum(tp[:, 2:], 1)
        tp_labels = np.where(rng.random(n_tp) < 0.9, gt_labels[src], rng.integers(0, n_classes, size=n_tp))
        fp = boxes_in(dets_per_image - n_tp, w, h)
        det_boxes = np.round(np.concatenate([tp, fp]), 2)
        det_labels = np.concatenate([tp_labels, rng.integers(0, n_classes, size=len(fp))])
        scores = np.concatenate([rng.uniform(0.2, 1.0, size=n_tp), rng.uniform(0.0, 0.6, size=len(fp))])
        for box, label, score in zip(det_boxes.tolist(), det_labels.tolist(), scores.tolist()):
            entry = dict(image_id=img_id, category_id=cat_ids[label], bbox=box, score=score)
            if masks:
                rle = mask_util.merge(mask_util.frPyObjects([octagon(box)], h, w))
                entry['segmentation'] = dict(size=rle['size'], counts=rle['counts'].decode('ascii'))
            results.append(entry)
    categories = [dict(id=c, name=f'class{c}') for c in cat_ids]
    return dict(images=images, annotations=annotations, categories=categories), results


def benchmark(gt: dict, results: list, iou_type: str, repeats: int) -> dict:
    """Seconds of every run and the summary stats of each backend; runs interleaved (no warm-up), alternating which
    goes first."""
    from visionzoo.evaluation.coco import coco_evaluate
    gt_text, results_text = json.dumps(gt), json.dumps(results)
    inputs, evaluators = {}, {}

    def run(backend):
        fresh_gt, fresh_results = inputs.pop(backend)
        evaluators[backend] = coco_evaluate(fresh_gt, fresh_results, iou_type, backend)

    def prepare(backend):  # fresh copies, made outside the timer
        inputs[backend] = json.loads(gt_text), json.loads(results_text)

    times = time_interleaved({b: (lambda b=b: run(b)) for b in BACKENDS}, repeats, warmup=0, alternate=True,
                             before=prepare)
    stats = {b: np.asarray(e.stats[:12], dtype=np.float64) for b, e in evaluators.items()}
    return dict(times=times, stats=stats)


def report(title: str, gt: dict, results: list, iou_type: str, repeats: int) -> None:
    from visionzoo.evaluation.coco import coco_summary_table
    print(f'\n{title}: {len(gt["images"])} images, {len(gt["categories"])} classes, '
          f'{len(gt["annotations"])} ground-truth instances, {len(results)} detections; '
          f'{repeats} interleaved repeats', flush=True)
    out = benchmark(gt, results, iou_type, repeats)
    base = median(out['times'][BACKENDS[0]])
    table = Table([('backend', 28, '<'), ('median s', 9, '.2f'), ('speed-up', 9), ('  runs (s)', 0, '<')], sep=' ')
    table.header()
    for backend in BACKENDS:
        med = median(out['times'][backend])
        name = f'{backend} (baseline)' if backend == BACKENDS[0] else backend
        table.row(name, med, ratio(base, med), '  ' + ' '.join(f'{t:.2f}' for t in out['times'][backend]))
    ref, other = out['stats'][BACKENDS[0]], out['stats'][BACKENDS[1]]
    diff = np.abs(ref - other).max()
    print(f'12 summary numbers bit-identical: {"yes" if diff == 0 else "no"}; largest difference {diff:.3g}; '
          f'equal to 1e-12: {"yes" if diff <= 1e-12 else "NO"}')
    print(coco_summary_table(ref, iou_type))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=2000, help='images of the bbox set')
    parser.add_argument('--classes', type=int, default=80)
    parser.add_argument('--gt-per-image', type=int, default=15, help='mean ground-truth instances per image')
    parser.add_argument('--dets-per-image', type=int, default=100)
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per backend (median reported)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--segm', action='store_true', help='also time mask AP on a smaller set')
    parser.add_argument('--segm-images', type=int, default=300, help='images of the segm set')
    args = parser.parse_args(argv)
    try:
        import faster_coco_eval
    except ImportError:
        print('faster-coco-eval is not installed: pip install faster-coco-eval', file=sys.stderr)
        return 2
    from importlib.metadata import version
    print(f'pycocotools {version("pycocotools")}, faster-coco-eval {faster_coco_eval.__version__}, '
          f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}, {os.cpu_count()} CPUs')
    gt, results = generate(args.images, args.classes, args.gt_per_image, args.dets_per_image, args.seed, False)
    report('bbox', gt, results, 'bbox', args.repeats)
    if args.segm:
        gt, results = generate(args.segm_images, args.classes, args.gt_per_image, args.dets_per_image, args.seed,
                               True)
        report('segm', gt, results, 'segm', args.repeats)
    return 0


if __name__ == '__main__':
    sys.exit(main())
