"""What every benchmark in this folder shares: timing, peak memory in a fresh subprocess, ratio tables.

The scripts import it as ``from _common import ...``: Python puts a script's own folder first on ``sys.path``, and
visionzoo itself is installed (``pip install -e .``), so no path set-up is needed.

* **timing**: :func:`timed` (one call, the device synchronised on both sides), :func:`time_runs` (warm-up calls,
  then ``repeats`` timed calls) and :func:`time_interleaved` (several callables, one call of each per round, so that
  a slow stretch of a shared machine hits all of them alike). They return every time; a script reports the best
  (:func:`min`) or the :func:`median` of them and says which in its header.
* **peak memory**: :func:`peak_memory` measures one call inside the current process; :func:`run_worker` runs a
  script's worker mode in a fresh interpreter (for memory runs with glibc's mmap threshold fixed) and returns the
  JSON object that :func:`emit` printed there, so that allocator state left by one row does not skew the next.
* **ratio tables**: :func:`ratio` formats ``num / den`` as ``1.23x``, :class:`Table` prints fixed-width rows as
  they are measured.
"""
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

import torch

median = statistics.median


# --------------------------------------------------------------------------------------------------------- timing
def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device == 'cuda':
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str = 'cpu') -> Tuple[float, object]:
    """(seconds, result) of one call of ``fn``, with the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def time_runs(fn: Callable[[], object], repeats: int, warmup: int = 1, device: str = 'cpu') -> List[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
        sync(device)
    return [timed(fn, device)[0] for _ in range(repeats)]


def time_interleaved(fns: Dict[Hashable, Callable[[], object]], repeats: int, warmup: int = 1, device: str = 'cpu',
                     alternate: bool = False, before: Optional[Callable[[Hashable], object]] = None
                     ) -> Dict[Hashable, List[float]]:
    """Seconds of every call of each of ``fns``: ``warmup`` untimed rounds, then ``repeats`` timed rounds, each
    round calling every function once in the dict's order (reversed in every second timed round with
    ``alternate``, so that no function always runs right after the same neighbour). ``before(name)``, when
    given, runs ahead of each call, outside the timer (fresh copies of inputs a call consumes)."""
    times = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        timed_round = round_ - warmup
        order = list(fns)[::-1] if alternate and timed_round >= 0 and timed_round % 2 == 1 else list(fns)
        for name in order:
            if before is not None:
                before(name)
            seconds, _ = timed(fns[name], device)
            if timed_round >= 0:
                times[name].append(seconds)
    return times


# --------------------------------------------------------------------------------------------------- peak memory
def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def peak_memory(run: Callable[[], torch.Tensor], leaves: Iterable[torch.Tensor] = (), device: str = 'cpu',
                backward: bool = True) -> int:
    """Peak memory of one forward(+backward) of ``run()`` above what the process held before, in bytes.

    CPU: growth of the process's peak resident set (reset to the current one through /proc/self/clear_refs
    first); CUDA: ``torch.cuda.max_memory_allocated`` above the memory allocated before the call. With
    ``backward`` the output is differentiated with a gradient of ones; the gradients of ``leaves`` are dropped
    afterwards.
    """
    leaves = list(leaves)
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset the peak resident set to the current one
        except OSError:
            pass
        before = _status_kib('VmRSS')
    grad_mode = torch.enable_grad() if backward else torch.no_grad()
    with grad_mode:
        out = run()
        if backward:
            out.backward(torch.ones_like(out))
    if device == 'cuda':
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = (_status_kib('VmHWM') - before) * 1024
    del out
    for t in leaves:
        t.grad = None
    return peak


def emit(result: dict) -> None:
    """Print a worker's result as the last line of its output, for :func:`run_worker` to read."""
    print(json.dumps(result), flush=True)


def run_worker(script: str, argv: Sequence[str], label: str, memory: bool = False) -> Optional[dict]:
    """Run ``python script *argv`` in a fresh interpreter and return the JSON object it printed last (see
    :func:`emit`); None, with the end of its error output on stderr, if it fails.

    ``memory``: a peak-memory run, with glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``):
    large buffers then come straight from mmap and go back on free, so memory freed by one step is not reused
    unseen by the next. Timed runs keep the default allocator (returning every buffer to the system costs page
    faults on each allocation).
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536') if memory else None
    cmd = [sys.executable, os.path.abspath(script), *map(str, argv)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.stderr.write(f'{label} failed:\n{result.stderr[-2000:]}\n')
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_memory_and_time(script: str, argv: Sequence[str], label: str, memory: bool = True) -> Optional[dict]:
    """One benchmark row measured by ``script``'s worker mode: ``--mode memory`` (skipped without ``memory``; the
    result's ``peak_bytes`` is then None) and ``--mode time``, each in a fresh interpreter (:func:`run_worker`),
    merged into one dict; None if either run fails."""
    result = {'peak_bytes': None}
    for mode in ('memory', 'time') if memory else ('time',):
        part = run_worker(script, [*argv, '--mode', mode], f'{label} ({mode})', memory=mode == 'memory')
        if part is None:
            return None
        result.update(part)
    return result


# --------------------------------------------------------------------------------------------------- ratio tables
def ratio(num: Optional[float], den: Optional[float], digits: int = 2) -> str:
    """``num / den`` as ``'1.23x'``; ``'-'`` when either is missing or zero (a row that failed or was skipped).

    For times, ``ratio(baseline, value)`` reads "faster than the baseline" (higher is better)."""
    return f'{num / den:.{digits}f}x' if num and den else '-'


def scaled(value: Optional[float], factor: float) -> Optional[float]:
    """``value * factor``, None kept (seconds to milliseconds, bytes to MiB)."""
    return None if value is None else value * factor


class Table:
    """A fixed-width text table printed row by row, so that rows appear as they are measured.

    Args:
        columns: ``(title, width)`` or ``(title, width, spec)`` per column. ``spec`` is a format spec for numbers
            (``'.2f'``); a leading ``'<'`` left-aligns the column, otherwise it is right-aligned.
        sep: text between columns.
    """

    def __init__(self, columns: Sequence[tuple], sep: str = ''):
        self.columns = []
        for column in columns:
            title, width, spec = (tuple(column) + ('',))[:3]
            align = spec[0] if spec[:1] in ('<', '>', '^') else '>'
            self.columns.append((title, width, align, spec.lstrip('<>^')))
        self.sep = sep

    def _line(self, cells) -> str:
        if len(cells) > len(self.columns):
            raise ValueError(f'Table.row: {len(cells)} cells for {len(self.columns)} columns')
        parts = []
        for cell, (_, width, align, spec) in zip(cells, self.columns):
            if cell is None:
                text = '-'
            elif isinstance(cell, str):
                text = cell
            else:
                text = format(cell, spec)
            parts.append(f'{text:{align}{width}}')
        return self.sep.join(parts)

    def header(self) -> None:
        print(self._line([title for title, *_ in self.columns]))

    def row(self, *cells) -> None:
        """Print one row; numbers take their column's spec, strings print as they are, None as ``-``. A row may
        have fewer cells than the table has columns (``table.row(name, 'failed')``)."""
        print(self._line(cells), flush=True)
