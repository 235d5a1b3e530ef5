"""Shared fixtures: a tiny generated shapes dataset and helpers to run the tools in a subprocess."""
import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import types

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Never write generated data into the user's cache from tests.
os.environ.setdefault('VISIONZOO_DATA', os.path.join(ROOT, '.cache', 'test-data'))

TINY_SHAPES = dict(cls_image_size=32, cls_train_per_class=12, cls_val_per_class=6, det_image_size=64, det_train=4,
                   det_val=2, seed=0)


@pytest.fixture(scope='session')
def tiny_shapes(tmp_path_factory):
    """Paths of a tiny shapes dataset generated once per test session."""
    from visionzoo.datasets import make_shapes
    root = str(tmp_path_factory.mktemp('shapes'))
    paths = make_shapes(root, **TINY_SHAPES)
    paths['data_root'] = root
    return paths


def run_tool(script, *args, timeout=600, env=None, check=False):
    """Run ``tools/<script>`` with the test interpreter; returns the CompletedProcess (text output)."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, 'tests', 'helpers')]),
                    OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    full_env.update(env or {})
    cmd = [sys.executable, os.path.join(ROOT, 'tools', script), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f'{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def write_config(path, body: str) -> str:
    with open(path, 'w', encoding='utf-8') as f:
        f.write(body)
    return str(path)


def tiny_cls_config(tmp_path, tiny_shapes, extra: str = '', name='tiny_cls.py', max_epochs=6) -> str:
    """A config file for a fast, deterministic classification run on the tiny shapes data."""
    base = os.path.join(ROOT, 'configs', 'classification', 'demo_shapes_resnet10t.py')
    return write_config(tmp_path / name, f'''
_base_ = [{base!r}]
shapes = dict(type='ShapesClsDataset', data_root={tiny_shapes['data_root']!r}, shapes_cfg={TINY_SHAPES!r})
pipe = dict(type='TimmTransform', input_size=32, is_training=False, crop_pct=1.0)
train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                        dataset=dict(shapes, split='train', pipeline=pipe, _delete_=True))
val_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False,
                      dataset=dict(shapes, split='val', pipeline=pipe, _delete_=True))
test_dataloader = val_dataloader
max_epochs = {max_epochs}
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
# warm-up still running at the kill point of the resume test (epoch 2), so the scheduler state matters
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=True, begin=0, end=3,
                        convert_to_iter_based=True)]
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.0))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
custom_hooks = [dict(type='MetricTableHook')]
{extra}
''')


# ------------------------------------------------------------------------------------------- reference packages
# A test that compares against a reference (mamba-ssm, natten, mmpretrain, faster-coco-eval, the labelme COCO file)
# FAILS when the reference is missing, saying what to install: a missing reference must not turn the comparison into
# a quiet skip. `make test` installs them all. The explicit escape hatch below turns those failures into skips.
ALLOW_MISSING_REFERENCES = 'VISIONZOO_ALLOW_MISSING_REFERENCES'


def missing_reference(what: str, how_to_install: str):
    """Fail the current test (or module) because the reference ``what`` is missing; a skip only with
    ``VISIONZOO_ALLOW_MISSING_REFERENCES=1``."""
    message = f'{what} is missing: {how_to_install} (`make test` installs every reference the tests compare against)'
    if os.environ.get(ALLOW_MISSING_REFERENCES) == '1':
        pytest.skip(f'{message}; skipped because {ALLOW_MISSING_REFERENCES}=1', allow_module_level=True)
    pytest.fail(f'{message}. Set {ALLOW_MISSING_REFERENCES}=1 to skip these tests instead.', pytrace=False)


def require(module_name: str, how_to_install: str):
    """Import and return the reference module ``module_name``; if it cannot be imported, fail with
    ``how_to_install`` (see :func:`missing_reference`)."""
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        missing_reference(f'{module_name} ({type(e).__name__}: {e})', how_to_install)


@pytest.fixture(scope='session')
def mamba_ref():
    """mamba-ssm's ``selective_scan_ref``, imported from its module file without the CUDA extension."""
    spec = importlib.util.find_spec('mamba_ssm')
    if spec is None or not spec.submodule_search_locations:
        missing_reference('mamba_ssm', "pip install --no-build-isolation --no-deps 'mamba-ssm==2.3.2.post1' "
                                       'einops with MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE')
    root = list(spec.submodule_search_locations)[0]
    saved = {k: v for k, v in sys.modules.items() if k == 'mamba_ssm' or k.startswith('mamba_ssm.')}
    had_cuda_ext = 'selective_scan_cuda' in sys.modules
    # `import mamba_ssm` pulls in transformers and the compiled kernels; a bare package object lets the one module
    # we need import, and an empty stand-in satisfies its unguarded `import selective_scan_cuda`.
    package = types.ModuleType('mamba_ssm')
    package.__path__ = [root]
    sys.modules['mamba_ssm'] = package
    sys.modules.setdefault('selective_scan_cuda', types.ModuleType('selective_scan_cuda'))
    try:
        module = importlib.import_module('mamba_ssm.ops.selective_scan_interface')
    finally:
        for key in [k for k in sys.modules if k == 'mamba_ssm' or k.startswith('mamba_ssm.')]:
            del sys.modules[key]
        sys.modules.update(saved)
        if not had_cuda_ext:
            sys.modules.pop('selective_scan_cuda', None)
    return module.selective_scan_ref


# ------------------------------------------------------------------------------------ official checkpoint layouts
def official_layout(name: str) -> dict:
    """A recorded official state-dict layout (``tests/data/official_layouts/<name>.json``): ``keys`` as
    ``[name, shape]`` pairs in the official order, the ``source`` it was recorded from and, for some, the official
    model's ``logits`` on a seeded input with :func:`synthetic_state_dict` weights."""
    with open(os.path.join(ROOT, 'tests', 'data', 'official_layouts', name + '.json')) as f:
        return json.load(f)


def synthetic_state_dict(keys, seed: int = 0) -> dict:
    """Deterministic, well-scaled weights for a recorded layout: norm weights near 0.3 (residual sums stay small,
    so outputs compare tightly), positive running variances, fan-in scaled matrices. Integer buffers
    (``num_batches_tracked``, ``attention_bias_idxs``) are left out: they are recomputed on both sides."""
    g = torch.Generator().manual_seed(seed)
    state_dict = {}
    for key, shape in keys:
        if key.endswith(('num_batches_tracked', 'attention_bias_idxs')):
            continue
        t = torch.randn(shape, generator=g)
        if key.endswith('running_var'):
            t = 0.5 + t.abs() * 0.5
        elif len(shape) == 1 and key.endswith('weight'):
            t = 0.3 + 0.03 * t
        elif len(shape) >= 2:
            t = t / math.sqrt(math.prod(shape[1:]))
        else:
            t = 0.1 * t
        state_dict[key] = t
    return state_dict


# ------------------------------------------------------------------------------------------- Triton interpreter
def run_triton_worker(test_file: str, out_dir, backend_env: str):
    """Run ``test_file --triton-worker OUT`` in a subprocess with ``TRITON_INTERPRET=1`` (the interpreter must be on
    before Triton is first imported) and the op's backend override ``backend_env`` unset; returns what the worker
    saved (inputs and results of every Triton case, written by that test file itself)."""
    pytest.importorskip('triton', reason='triton is not installed')
    path = os.path.join(str(out_dir), 'results.pt')
    # the worker is a test file run as a script: it needs the repository and tests/ (for conftest) on its path
    path_entries = [ROOT, os.path.join(ROOT, 'tests'), os.environ.get('PYTHONPATH', '')]
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=os.pathsep.join(path_entries))
    env.pop(backend_env, None)
    result = subprocess.run([sys.executable, os.path.abspath(test_file), '--triton-worker', path],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return torch.load(path, weights_only=False)  # written by our own worker just now


def compile_triton_kernel_for_cuda(module: str, kernel: str, constexprs: dict, ptr_type, scalar_type=lambda p: 'i32'):
    """Compile ``module.kernel`` ahead of time for sm_90 (no GPU needed) and check a CUDA binary came out: catches what
    the interpreter accepts but the compiler rejects. ``ptr_type(name)`` and ``scalar_type(name)`` give the Triton
    type of each ``*_ptr`` and other non-constexpr argument (e.g. ``'*bf16'``, ``'i32'``)."""
    pytest.importorskip('triton', reason='triton is not installed')
    path = importlib.import_module(module)
    if path.interpreting():
        pytest.skip('this process runs Triton in interpreter mode')
    try:
        import inspect

        from triton import compile as triton_compile
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as e:
        pytest.skip(f'this Triton has no ahead-of-time compile API: {e}')
    fn = getattr(path, kernel)
    params = list(inspect.signature(fn.fn).parameters)
    signature = {p: 'constexpr' if p in constexprs else ptr_type(p) if p.endswith('_ptr') else scalar_type(p)
                 for p in params}
    source = ASTSource(fn=fn, signature=signature, constexprs={(params.index(k),): v for k, v in constexprs.items()})
    try:
        compiled = triton_compile(source, target=GPUTarget('cuda', 90, 32), options={'num_warps': 4})
    except FileNotFoundError as e:  # a Triton build without the bundled ptxas
        pytest.skip(f'no CUDA assembler: {e}')
    assert len(compiled.asm['cubin']) > 0 and '.entry' in compiled.asm['ptx']


# ------------------------------------------------------------------------------------------------- real COCO data
LABELME_COCO_DIR = os.path.join(ROOT, '.cache', 'labelme-6.3.1', 'examples', 'instance_segmentation',
                                'data_dataset_coco')


@pytest.fixture(scope='session')
def labelme_coco():
    """The COCO instances file of the labelme 6.3.1 sdist (3 VOC photos, 12 polygon instances; image, category and
    annotation ids start at 0): ``dict(ann_file=..., img_dir=...)``. ``make test`` downloads and unpacks it."""
    ann_file = os.path.join(LABELME_COCO_DIR, 'annotations.json')
    if not os.path.isfile(ann_file):
        missing_reference(ann_file, 'run `make test`, which downloads the labelme 6.3.1 sdist (pip download '
                                    '--no-binary :all: labelme==6.3.1) and unpacks this file from it')
    return dict(ann_file=ann_file, img_dir=LABELME_COCO_DIR)
