"""Pieces the command-line tools share: common arguments, work-dir default, one-line errors."""
import argparse
import os
import sys
from typing import Callable, Optional

from .config import CfgOptionsAction

__all__ = ['add_common_args', 'parse_common', 'resolve_work_dir', 'run_cli']


def add_common_args(parser: argparse.ArgumentParser, cfg_options_example: str) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher`` and torchrun's ``--local-rank``."""
    parser.add_argument('--work-dir', help='where logs (and checkpoints) go (default: work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, default={}, metavar='KEY=VALUE',
                        help=f'override config entries, e.g. {cfg_options_example}; lists as key=[a,b], tuples as '
                             f'key="(a,b)"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher; use "pytorch" under torchrun')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)


def parse_common(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def resolve_work_dir(cfg, work_dir: Optional[str], config_path: str) -> None:
    """``--work-dir`` wins, then the config's ``work_dir``, then ``work_dirs/<config name>``."""
    if work_dir:
        cfg.work_dir = work_dir
    elif not cfg.get('work_dir'):
        cfg.work_dir = os.path.join('work_dirs', os.path.splitext(os.path.basename(config_path))[0])


def run_cli(body: Callable[[], int]) -> int:
    """Run a tool's body; a user-input error becomes one ``error: ...`` line on stderr and exit status 2."""
    from ..utils.errors import VisionzooError
    from .runner_utils import format_error
    try:
        return body()
    except VisionzooError as e:
        print(f'error: {format_error(e)}', file=sys.stderr)
        return 2
