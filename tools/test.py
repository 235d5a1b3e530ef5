#!/usr/bin/env python
"""Evaluate a checkpoint on the test split a config names.

    python tools/test.py CONFIG CHECKPOINT [--out FILE.json] [--show-dir DIR] [--cfg-options k=v ...]
"""
import argparse
import os
import sys

from visionzoo.engine.config import CfgOptionsAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a visionzoo checkpoint.')
    parser.add_argument('config', help='config file (.py)')
    parser.add_argument('checkpoint', help='checkpoint file (Runner checkpoint or plain state_dict)')
    parser.add_argument('--work-dir', help='where the test log goes (default: work_dirs/<config name>)')
    parser.add_argument('--out', help='write every prediction to this JSON file (must not exist yet)')
    parser.add_argument('--show-dir', help='draw predictions onto the images and save them here as PNG '
                                           '(must be empty or not exist yet)')
    parser.add_argument('--show-max', type=int, default=None, help='draw at most this many images')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, default={}, metavar='KEY=VALUE',
                        help='override config entries, e.g. test_dataloader.batch_size=8')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import visionzoo  # noqa: F401
    from mmengine.model import is_model_wrapper
    from mmengine.runner import Runner

    from visionzoo.engine.checkpoint import load_model_weights, safe_load
    from visionzoo.engine.config import check_types, load_config
    from visionzoo.engine.hooks import format_metric_table
    from visionzoo.engine.runner_utils import adapt_to_device, format_error, init_cpu_distributed
    from visionzoo.utils.errors import ConfigError, VisionzooError

    try:
        safe_load(args.checkpoint)  # missing / not a checkpoint: fail before building anything
        cfg = load_config(args.config, args.cfg_options)
        if args.work_dir:
            cfg.work_dir = args.work_dir
        elif not cfg.get('work_dir'):
            cfg.work_dir = os.path.join('work_dirs', os.path.splitext(os.path.basename(args.config))[0])
        cfg.launcher = args.launcher
        cfg.load_from, cfg.resume = None, False  # weights are loaded strictly below
        for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
            cfg.pop(key, None)
        if not cfg.get('test_dataloader'):
            raise ConfigError(f'{args.config}: no test_dataloader in the config')
        if args.out:
            if os.path.exists(args.out):
                raise ConfigError(f'--out: {args.out} already exists; remove it or choose another file')
            evaluator = cfg.test_evaluator
            evaluator = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
            cfg.test_evaluator = evaluator + [dict(type='DumpPredictions', out_file=args.out)]
        if args.show_dir:
            if os.path.isdir(args.show_dir) and os.listdir(args.show_dir):
                raise ConfigError(f'--show-dir: {args.show_dir} is not empty; choose a new or empty folder')
            hooks = list(cfg.get('custom_hooks') or [])
            hooks.append(dict(type='PredictionDrawHook', show_dir=args.show_dir, max_images=args.show_max))
            cfg.custom_hooks = hooks
        adapt_to_device(cfg)
        check_types(cfg, args.config)
        init_cpu_distributed(cfg)
        runner = Runner.from_cfg(cfg)
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        load_model_weights(model, args.checkpoint)
        runner.logger.info(f'loaded weights from {args.checkpoint}')
        metrics = runner.test()
    except VisionzooError as e:
        print(f'error: {format_error(e)}', file=sys.stderr)
        return 2
    if runner.rank == 0:
        print(format_metric_table(metrics, f'test metrics of {args.checkpoint}'))
        if args.out:
            print(f'predictions written to {args.out}')
        if args.show_dir:
            print(f'drawn predictions in {args.show_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
