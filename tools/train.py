#!/usr/bin/env python
"""Train a model from a config file.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch
"""
import argparse
import sys

from visionzoo.engine.cli import add_common_args, parse_common, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a visionzoo model from a config file.')
    parser.add_argument('config', help='config file (.py)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help='resume from CKPT, or from the latest checkpoint of the work dir if no CKPT is given')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 with loss scaling on CUDA, bf16 autocast on CPU')
    add_common_args(parser, 'train_cfg.max_epochs=2 optim_wrapper.optimizer.lr=1e-3')
    return parse_common(parser, argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from mmengine.runner import Runner

        from visionzoo.engine.config import check_types, load_config
        from visionzoo.engine.reporting import config_paths_in_errors
        from visionzoo.engine.runner_utils import finish_distributed, init_cpu_distributed, setup_train_cfg

        cfg = load_config(args.config, args.cfg_options)
        setup_train_cfg(cfg, args.work_dir, args.resume, args.amp, args.launcher, args.config)
        check_types(cfg, args.config)
        init_cpu_distributed(cfg)
        with config_paths_in_errors(cfg, args.config):
            Runner.from_cfg(cfg).train()
        finish_distributed()
        return 0

    return run_cli(body)


if __name__ == '__main__':
    sys.exit(main())
