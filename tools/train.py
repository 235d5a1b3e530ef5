#!/usr/bin/env python
"""Train a model from a config file.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch
"""
import argparse
import os
import sys

from visionzoo.engine.config import CfgOptionsAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a visionzoo model from a config file.')
    parser.add_argument('config', help='config file (.py)')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help='resume from CKPT, or from the latest checkpoint of the work dir if no CKPT is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 with loss scaling on CUDA, bf16 autocast on CPU')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, default={}, metavar='KEY=VALUE',
                        help='override config entries, e.g. train_cfg.max_epochs=2 optim_wrapper.optimizer.lr=1e-3 '
                             '"model.head.num_classes=5"; lists as key=[a,b], tuples as key="(a,b)"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher; use "pytorch" under torchrun')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import visionzoo  # noqa: F401  (registers models, datasets, hooks)
    from mmengine.runner import Runner

    from visionzoo.engine.config import check_types, load_config
    from visionzoo.engine.runner_utils import format_error, init_cpu_distributed, setup_train_cfg
    from visionzoo.utils.errors import VisionzooError

    try:
        cfg = load_config(args.config, args.cfg_options)
        setup_train_cfg(cfg, args.work_dir, args.resume, args.amp, args.launcher, args.config)
        check_types(cfg, args.config)
        init_cpu_distributed(cfg)
        runner = Runner.from_cfg(cfg)
        runner.train()
    except VisionzooError as e:
        print(f'error: {format_error(e)}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
