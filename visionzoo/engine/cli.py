"""Pieces the command-line tools share: common arguments and one-line errors.

What the tools do to a config (work dir, resume, device, runner parts) is in :mod:`.runner_utils`; how errors are
worded in :mod:`.reporting`. Neither imports this module.
"""
import argparse
import os
import sys
from typing import Callable

from ..utils.errors import VisionzooError
from .config import CfgOptionsAction
from .reporting import format_error

__all__ = ['add_common_args', 'parse_common', 'run_cli']


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


def run_cli(body: Callable[[], int]) -> int:
    """Run a tool's body; a user-input error becomes one ``error: ...`` line on stderr and exit status 2."""
    try:
        return body()
    except VisionzooError as e:
        print(f'error: {format_error(e)}', file=sys.stderr)
        return 2
