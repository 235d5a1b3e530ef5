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


# ------------------------------------------------------------------------ a classifier's training step, row by row
def classifier_step_worker(build: Callable[[str, int, str], torch.nn.Module], name: str, task: str, mode: str,
                           size: int, batch: int, device: str, repeats: int) -> dict:
    """(In a fresh subprocess) the model ``build(name, size, device)`` on a random batch: ``mode='memory'``: peak
    memory of one step (after a warm-up step on one image); ``'time'``: best forward and backward times over
    ``repeats`` steps after a warm-up step. ``task``: ``'train'`` (cross-entropy, backward) or ``'infer'``."""
    model = build(name, size, device)
    model.train(task == 'train')
    x = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, 1000, (batch,), device=device)

    def forward(inputs):
        if task == 'train':
            return torch.nn.functional.cross_entropy(model(inputs), target[:inputs.shape[0]])
        with torch.no_grad():
            return model(inputs)

    if mode == 'memory':
        warm = forward(x[:1])  # builds lazily made tables (e.g. attention masks) before the measured step
        if task == 'train':
            warm.backward()
        model.zero_grad(set_to_none=True)
        del warm
        return {'peak_bytes': peak_memory(lambda: forward(x), [], device, backward=task == 'train')}
    best_fwd = best_bwd = float('inf')
    for step in range(repeats + 1):
        t_fwd, out = timed(lambda: forward(x), device)
        t_bwd, _ = timed(out.backward if task == 'train' else lambda: None, device)
        model.zero_grad(set_to_none=True)
        del out
        if step:  # the first step warms up
            best_fwd, best_bwd = min(best_fwd, t_fwd), min(best_bwd, t_bwd)
    return {'fwd': best_fwd, 'bwd': best_bwd if task == 'train' else None}


def classifier_step_main(script: str, description: str, title: str, build: Callable[[str, int, str], torch.nn.Module],
                         rows: Sequence[str], trainable: Sequence[str], baseline: str, argv=None) -> None:
    """Command line of a benchmark that compares models (``rows``, built by ``build``) against ``baseline``: a
    training-step table (the ``trainable`` rows) and an inference table, each row measured in fresh interpreters
    (:func:`run_memory_and_time`); ``script`` is the benchmark's own file, re-run with ``--worker``."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--repeats', type=int, default=3, help='timed steps after the warm-up step (best is kept)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--no-inference', action='store_true', help='skip the inference rows')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory runs')
    parser.add_argument('--rows', nargs='+', choices=rows, default=list(rows),
                        help=f'rows to run (the baseline {baseline} always runs; default: all)')
    parser.add_argument('--worker', choices=rows, help=argparse.SUPPRESS)
    parser.add_argument('--task', choices=('train', 'infer'), default='train', help=argparse.SUPPRESS)
    parser.add_argument('--mode', choices=('memory', 'time'), default='time', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size < 1 or args.batch < 1 or args.repeats < 1 or args.threads < 1:
        parser.error('--size, --batch, --repeats and --threads must be at least 1')
    torch.set_num_threads(args.threads)
    if args.worker:
        emit(classifier_step_worker(build, args.worker, args.task, args.mode, args.size, args.batch, args.device,
                                    args.repeats))
        return

    def measure(name: str, task: str) -> Optional[dict]:
        worker_argv = ['--worker', name, '--task', task, '--size', args.size, '--batch', args.batch, '--device',
                       args.device, '--repeats', args.repeats, '--threads', args.threads]
        return run_memory_and_time(script, worker_argv, f'{name} {task}', memory=not args.no_memory)

    def get(row, key):
        return row[key] if row else None

    width = max(len(r) for r in rows) + 1
    print(f'# {title}, {args.size}², batch {args.batch}, {args.device}, {args.threads} threads, best of '
          f'{args.repeats} after a warm-up; torch {torch.__version__}')
    print(f'# ratios = {baseline} / row, measured in this run (higher is better); peak = growth of peak memory '
          f'during one step')
    print('\ntraining step (forward + cross-entropy + backward)')
    table = Table([('row', width, '<'), ('fwd ms', 9, '.0f'), ('ratio', 8), ('bwd ms', 9, '.0f'), ('ratio', 8),
                   ('step ms', 9, '.0f'), ('ratio', 8), ('peak MiB', 10, '.0f'), ('ratio', 8)])
    table.header()
    results = {name: measure(name, 'train') for name in trainable if name in args.rows or name == baseline}
    base = results[baseline]
    base_step = base and base['fwd'] + base['bwd']
    for name, r in results.items():
        if r is None:
            table.row(name, 'failed')
            continue
        step = r['fwd'] + r['bwd']
        table.row(name, r['fwd'] * 1e3, ratio(get(base, 'fwd'), r['fwd']), r['bwd'] * 1e3,
                  ratio(get(base, 'bwd'), r['bwd']), step * 1e3, ratio(base_step, step),
                  scaled(r['peak_bytes'], 2**-20), ratio(get(base, 'peak_bytes'), r['peak_bytes']))
    if args.no_inference:
        return
    print('\ninference (eval, no_grad)')
    table = Table([('row', width, '<'), ('img/s', 9, '.1f'), ('ratio', 8), ('peak MiB', 10, '.0f'), ('ratio', 8)])
    table.header()
    results = {name: measure(name, 'infer') for name in rows if name in args.rows or name == baseline}
    base = results[baseline]
    for name, r in results.items():
        if r is None:
            table.row(name, 'failed')
            continue
        table.row(name, args.batch / r['fwd'], ratio(get(base, 'fwd'), r['fwd']), scaled(r['peak_bytes'], 2**-20),
                  ratio(get(base, 'peak_bytes'), r['peak_bytes']))
