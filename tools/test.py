#!/usr/bin/env python
"""Evaluate a checkpoint on the test split a config names.

    python tools/test.py CONFIG CHECKPOINT [--out FILE.json | --out DIR] [--show-dir DIR] [--cfg-options k=v ...]
"""
import argparse
import sys

from visionzoo.engine.cli import add_common_args, parse_common, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a visionzoo checkpoint.')
    parser.add_argument('config', help='config file (.py)')
    parser.add_argument('checkpoint', help='checkpoint file (Runner checkpoint or plain state_dict)')
    parser.add_argument('--out', help='write every prediction to this JSON file (must not exist yet); for '
                                      'segmentation, the label maps as PNGs into this folder (new or empty)')
    parser.add_argument('--show-dir', help='draw predictions onto the images and save them here as PNG '
                                           '(must be empty or not exist yet)')
    parser.add_argument('--show-max', type=int, default=None, help='draw at most this many images')
    add_common_args(parser, 'test_dataloader.batch_size=8')
    return parse_common(parser, argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from mmengine.model import is_model_wrapper
        from mmengine.runner import Runner

        from visionzoo.engine.checkpoint import load_model_weights, load_state_dict_file
        from visionzoo.engine.config import check_types, load_config
        from visionzoo.engine.hooks import format_metric_table
        from visionzoo.engine.reporting import config_paths_in_errors
        from visionzoo.engine.runner_utils import finish_distributed, init_cpu_distributed, setup_test_cfg

        # missing file, not a checkpoint, no weights inside: fail before building anything, and load only once
        state = load_state_dict_file(args.checkpoint)
        cfg = load_config(args.config, args.cfg_options)
        setup_test_cfg(cfg, args.work_dir, args.launcher, args.config, out=args.out, show_dir=args.show_dir,
                       show_max=args.show_max)
        check_types(cfg, args.config)
        init_cpu_distributed(cfg)
        with config_paths_in_errors(cfg, args.config):
            runner = Runner.from_cfg(cfg)
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            load_model_weights(model, state, args.checkpoint)
            del state
            runner.logger.info(f'loaded weights from {args.checkpoint}')
            metrics = runner.test()
        finish_distributed()
        if runner.rank == 0:
            print(format_metric_table(metrics, f'test metrics of {args.checkpoint}'))
            if args.out:
                print(f'predictions written to {args.out}')
            if args.show_dir:
                print(f'drawn predictions in {args.show_dir}')
        return 0

    return run_cli(body)


if __name__ == '__main__':
    sys.exit(main())
