"""benchmarks/: the shared helper module, and a smoke run of every benchmark script at minimal sizes.

The smoke runs start each script as a user would (``python benchmarks/<script> ...``) and read its printed table:
the baseline's row must show a ratio of exactly 1 against itself and the other rows finite, positive ratios.
Timings themselves are not checked (they depend on the machine); the helpers' arithmetic and bookkeeping are.
"""
import importlib.util
import math
import os
import re
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, 'benchmarks')


def _load_common():
    spec = importlib.util.spec_from_file_location('benchmarks_common', os.path.join(BENCHMARKS, '_common.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load_common()


# ------------------------------------------------------------------------------------------------- the helpers
def test_ratio_formats_num_over_den_and_dashes_missing_values():
    assert common.ratio(3.0, 2.0) == '1.50x'
    assert common.ratio(3.0, 2.0, digits=1) == '1.5x'
    assert common.ratio(1.0, 3.0) == '0.33x'
    assert common.ratio(None, 2.0) == common.ratio(2.0, None) == common.ratio(2.0, 0) == '-'
    assert common.scaled(None, 1e3) is None and common.scaled(0.5, 1e3) == 500.0


def test_table_matches_the_equivalent_format_strings(capsys):
    table = common.Table([('path', 8, '<'), ('fwd ms', 9, '.2f'), ('ratio', 7), ('peak MiB', 10, '.1f')])
    table.header()
    table.row('torch', 1.23456, common.ratio(2.0, 1.0), None)
    table.row('gather', 'failed')
    spaced = common.Table([('size', 5), ('model', 8)], sep=' ')
    spaced.row(32, 'vim')
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f'{"path":<8}{"fwd ms":>9}{"ratio":>7}{"peak MiB":>10}',
                     f'{"torch":<8}{1.23456:9.2f}{"2.00x":>7}{"-":>10}',
                     f'{"gather":<8}{"failed":>9}',
                     f'{32:>5} {"vim":>8}']
    with pytest.raises(ValueError, match='3 cells for 2 columns'):
        spaced.row(1, 2, 3)


def test_time_runs_warms_up_then_times_each_call():
    calls = []

    def fn():
        calls.append(time.perf_counter())
        time.sleep(0.01)

    times = common.time_runs(fn, repeats=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3
    assert all(0.01 <= t < 1.0 for t in times)


def test_time_interleaved_rounds_order_and_untimed_preparation():
    log = []
    fns = {name: (lambda name=name: log.append(('call', name))) for name in ('a', 'b', 'c')}
    times = common.time_interleaved(fns, repeats=3, warmup=1, alternate=True,
                                    before=lambda name: log.append(('before', name)))
    calls = [name for kind, name in log if kind == 'call']
    # warm-up round in order, then timed rounds: in order, reversed, in order
    assert calls == list('abc') + list('abc') + list('cba') + list('abc')
    assert all(log[i] == ('before', log[i + 1][1]) for i in range(0, len(log), 2))
    assert {k: len(v) for k, v in times.items()} == {'a': 3, 'b': 3, 'c': 3}
    plain = common.time_interleaved(fns, repeats=2, warmup=0)
    assert [name for kind, name in log[len(calls) * 2:]] == list('abcabc') and len(plain['a']) == 2


_PEAK_CHECK = '''
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import _common as common
mib = 2**20
n = 64 * mib // 4  # 64 MiB of float32: above glibc's largest mmap threshold, so always fresh pages
fresh = common.peak_memory(lambda: torch.ones(n), device='cpu', backward=False)
x = torch.zeros(n, requires_grad=True)
backward = common.peak_memory(lambda: x * 2, [x], device='cpu', backward=True)
print(json.dumps(dict(fresh=fresh, backward=backward, grad_dropped=x.grad is None)))
'''


@pytest.mark.skipif(not os.path.exists('/proc/self/clear_refs'), reason='needs Linux /proc')
def test_peak_memory_counts_a_fresh_allocation_and_the_backward():
    """In a fresh interpreter, as the benchmarks measure (a test process's heap depends on the tests before it)."""
    import json
    env = {k: v for k, v in os.environ.items() if k != 'MALLOC_MMAP_THRESHOLD_'}
    proc = subprocess.run([sys.executable, '-c', _PEAK_CHECK, BENCHMARKS], capture_output=True, text=True, env=env,
                          timeout=300, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    mib = 2**20
    assert 64 * mib <= got['fresh'] < 96 * mib, got
    assert got['backward'] >= 128 * mib, got  # the output and x's gradient at least
    assert got['grad_dropped']  # dropped after the measurement


def test_run_worker_reads_the_last_json_line_and_fixes_the_mmap_threshold_for_memory_runs(tmp_path, capsys):
    script = tmp_path / 'worker.py'
    script.write_text('import json, os, sys\n'
                      'print("some log line")\n'
                      'threshold = os.environ.get("MALLOC_MMAP_THRESHOLD_")\n'
                      'print(json.dumps({"threshold": threshold, "argv": sys.argv[1:]}))\n')
    assert common.run_worker(str(script), ['--size', 64], 'w', memory=True) == {'threshold': '65536',
                                                                                'argv': ['--size', '64']}
    if 'MALLOC_MMAP_THRESHOLD_' not in os.environ:
        assert common.run_worker(str(script), [], 'w')['threshold'] is None
    broken = tmp_path / 'broken.py'
    broken.write_text('raise SystemExit("no such model")\n')
    assert common.run_worker(str(broken), [], 'vim-tiny at 32 (time)') is None
    err = capsys.readouterr().err
    assert 'vim-tiny at 32 (time) failed' in err and 'no such model' in err


def test_no_benchmark_edits_sys_path_or_imports_another_benchmark():
    for name in os.listdir(BENCHMARKS):
        if name.endswith('.py'):
            with open(os.path.join(BENCHMARKS, name)) as f:
                text = f.read()
            assert not re.search(r'sys\.path\s*(\.(insert|append|extend)|\[|\+?=)', text), name
            assert not re.search(r'^\s*(from|import) benchmark_', text, re.M), name


# ------------------------------------------------------------------------------------------------- smoke runs
RATIO = re.compile(r'^(-?\d+(?:\.\d+)?|-?inf|nan)x$')


def _ratio_value(cell):
    match = RATIO.match(cell)
    assert match, f'not a ratio: {cell!r}'
    return float(match.group(1))


def _table(out, first_title, index=0):
    """The ``index``-th table whose header starts with ``first_title``: (header, its row lines)."""
    lines = out.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().startswith(first_title + ' ')]
    assert len(starts) > index, f'no table {index} with header {first_title!r} in:\n{out}'
    start = starts[index]
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line)
    return lines[start], rows


def _cell(header, rows, row_name, title, nth=0):
    """The text of column ``title`` (its ``nth`` occurrence) in the row naming ``row_name``: right-aligned cells end
    where their column's title ends."""
    (row,) = [r for r in rows if row_name in r.split()] or [None]
    assert row is not None, f'no row {row_name!r} in {rows}'
    at = -1
    for _ in range(nth + 1):
        at = header.index(title, at + 1)
    return row[:at + len(title)].split()[-1]


def _run(script, *args, timeout=600):
    start = time.perf_counter()
    result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *map(str, args)],
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f'{script} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}'
    assert 'failed' not in result.stdout and 'failed' not in result.stderr, result.stdout + result.stderr
    print(f'{script} {" ".join(map(str, args))}: {time.perf_counter() - start:.1f} s')
    return result.stdout


def _check(header, rows, baseline, others, titles):
    """Every (title, nth) column: 1 in the baseline's row (it is its own baseline), a finite non-negative number in
    the other rows (a row 40x slower than its baseline prints as 0.0x with one decimal)."""
    for title, nth in titles:
        assert _ratio_value(_cell(header, rows, baseline, title, nth)) == 1.0, (title, nth, rows)
        for name in others:
            value = _ratio_value(_cell(header, rows, name, title, nth))
            assert math.isfinite(value) and value >= 0, (name, title, nth, rows)


@pytest.mark.slow
@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs CUDA'))])
def test_benchmark_ops_scan_smoke(device):
    out = _run('benchmark_ops.py', 'scan', '--device', device, '--shape', '1,4,8,2', '--paths', 'torch',
               '--repeats', 1)
    header, rows = _table(out, 'path')
    _check(header, rows, 'sequential', ['torch'], [('ratio', 0), ('ratio', 1)])
    # peak memory is measured (in the same worker process): a number, not '-'
    assert float(_cell(header, rows, 'torch', 'peak MiB')) >= 0


@pytest.mark.slow
@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs CUDA'))])
def test_benchmark_ops_na_smoke(device):
    out = _run('benchmark_ops.py', 'na', '--device', device, '--shape', '1,2,4,3,8', '--paths', 'torch',
               '--repeats', 1, '--no-memory')
    header, rows = _table(out, 'path')
    _check(header, rows, 'sdpa-masked', ['torch'], [('vs sdpa', 0), ('vs sdpa', 1)])


@pytest.mark.slow
def test_benchmark_biformer_smoke():
    out = _run('benchmark_biformer.py', '--rows', 'bra-op', '--no-memory', '--no-inference', '--size', 64,
               '--batch', 1, '--repeats', 1)
    header, rows = _table(out, 'row')
    _check(header, rows, 'bra-gather', ['bra-op'], [('ratio', 0), ('ratio', 1), ('ratio', 2)])


@pytest.mark.slow
def test_benchmark_vim_smoke():
    out = _run('benchmark_vim.py', '--sizes', 32, '--models', 'vim-tiny', 'deit-explicit', '--repeats', 1,
               '--no-memory')
    header, rows = _table(out, 'size')
    _check(header, rows, 'deit-explicit', ['vim-tiny'], [('faster than explicit', 0)])
    assert _cell(header, rows, 'vim-tiny', 'faster than sdpa') == '-'  # deit-sdpa not run


@pytest.mark.slow
def test_benchmark_models_smoke():
    out = _run('benchmark_models.py', '--models', 'efficientvit_m0', '--no-pairs', '--batch', 1, '--repeats', 1,
               '--no-memory')
    header, rows = _table(out, 'model')
    value = _ratio_value(_cell(header, rows, 'efficientvit_m0', 'fused/unfused'))  # the unfused model is the base
    assert math.isfinite(value) and value > 0
    assert float(_cell(header, rows, 'efficientvit_m0', 'unfused img/s')) > 0


@pytest.mark.slow
def test_benchmark_detection_smoke():
    out = _run('benchmark_detection.py', '--models', 'efficientvit-m4', '--iters', 1, '--size', 64)
    header, rows = _table(out, 'model')
    _check(header, rows, 'resnet50', ['efficientvit-m4'], [('train / base', 0), ('infer / base', 0)])


@pytest.mark.slow
def test_benchmark_segmentation_smoke():
    out = _run('benchmark_segmentation.py', '--size', 64, '--iters', 1, '--images', 20, '--metric-batch', 4,
               '--checkpoints', 4, 12, 20)
    header, rows = _table(out, 'model')
    _check(header, rows, 'resnet50', ['van-b2'], [('time / base', 0)])
    # mmseg's upernet_r50 heads on both backbones: ResNet-50c (23.5M) and VAN-B2 (26.2M) plus UPerHead/FCNHead
    params = {name: float(_cell(header, rows, name, 'params (M)')) for name in ('resnet50', 'van-b2')}
    assert 60 < params['resnet50'] < 70 and 50 < params['van-b2'] < 60, params
    header, rows = _table(out, 'images')
    assert [r.split()[0] for r in rows] == ['4', '12', '20']  # 20 images in batches of 4, read at 4, 12 and 20
    # one running (4, 150) int64 histogram: the state neither grows nor multiplies with the images fed
    assert {_cell(header, rows, n, 'entries') for n in ('4', '12', '20')} == {'1'}
    assert {_cell(header, rows, n, 'state B') for n in ('4', '12', '20')} == {str(4 * 150 * 8)}
    _check(header, rows, '4', ['12', '20'], [('state / base', 0), ('RSS / base', 0), ('peak+ / base', 0)])
    assert _ratio_value(_cell(header, rows, '20', 'state / base')) == 1.0
    assert re.search(r'compute_metrics \d+\.\d ms \(mIoU \d+\.\d\d, aAcc \d+\.\d\d\)', out), out


@pytest.mark.slow
def test_benchmark_coco_eval_smoke():
    out = _run('benchmark_coco_eval.py', '--images', 20, '--classes', 5, '--repeats', 2, '--segm',
               '--segm-images', 5)
    for index in (0, 1):  # bbox, then segm
        header, rows = _table(out, 'backend', index)
        _check(header, rows, 'pycocotools', ['faster_coco_eval'], [('speed-up', 0)])
    # both libraries give the same 12 summary numbers, for boxes and masks
    assert out.count('equal to 1e-12: yes') == 2, out


def test_benchmark_scripts_reject_bad_sizes():
    result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, 'benchmark_vim.py'), '--sizes', '30'],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and '--sizes' in result.stderr and 'multiple of the patch size 16' in result.stderr


@pytest.mark.slow
def test_benchmark_nat_smoke():
    out = _run('benchmark_nat.py', '--rows', 'na-op', '--no-memory', '--no-inference', '--size', 32, '--batch', 1,
               '--repeats', 1)
    header, rows = _table(out, 'row')
    _check(header, rows, 'masked-sdpa', ['na-op'], [('ratio', 0), ('ratio', 1), ('ratio', 2)])
