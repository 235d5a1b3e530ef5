"""Generate (or find) the embedded shapes dataset and print its paths.

Example::

    python tools/make_shapes.py                      # defaults, into $VISIONZOO_DATA/shapes or ~/.cache/visionzoo
    python tools/make_shapes.py --root data/shapes --det-train 200 --det-val 50
"""
import argparse
import sys

from visionzoo.datasets.shapes import make_shapes, shapes_root
from visionzoo.engine.cli import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root', default=None, help=f'cache folder (default: {shapes_root()})')
    p.add_argument('--seed', type=int, default=0, help='base random seed (default: 0)')
    p.add_argument('--cls-image-size', type=int, default=64, help='classification image side in px (default: 64)')
    p.add_argument('--cls-train-per-class', type=int, default=300, help='training images per class (default: 300)')
    p.add_argument('--cls-val-per-class', type=int, default=60, help='validation images per class (default: 60)')
    p.add_argument('--det-image-size', type=int, default=128, help='detection image side in px (default: 128)')
    p.add_argument('--det-train', type=int, default=1500, help='detection training images (default: 1500)')
    p.add_argument('--det-val', type=int, default=200, help='detection validation images (default: 200)')
    p.add_argument('--workers', type=int, default=None, help='rendering threads (default: CPU cores, at most 8)')
    p.add_argument('--force', action='store_true', help='regenerate even if the data already exists')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def body() -> int:
        paths = make_shapes(args.root, seed=args.seed, cls_image_size=args.cls_image_size,
                            cls_train_per_class=args.cls_train_per_class, cls_val_per_class=args.cls_val_per_class,
                            det_image_size=args.det_image_size, det_train=args.det_train, det_val=args.det_val,
                            force=args.force, workers=args.workers)
        for key, value in paths.items():
            print(f'{key}: {",".join(value) if key == "classes" else value}')
        return 0

    return run_cli(body)


if __name__ == '__main__':
    sys.exit(main())
