"""Importing visionzoo registers models and modules without replacing anything timm already has."""
import json
import subprocess
import sys

from conftest import ROOT

_PROBE = r'''
import json, warnings
import timm
from timm.models import _registry
before = {name: _registry._model_entrypoints[name] for name in timm.list_models()}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    import visionzoo
after = timm.list_models()
replaced = [n for n, fn in before.items() if _registry._model_entrypoints.get(n) is not fn]
added = sorted(set(after) - set(before))
ours = sorted(n for n in after if _registry._model_entrypoints[n].__module__.startswith('visionzoo.'))
print(json.dumps(dict(replaced=replaced, missing=sorted(set(before) - set(after)), added=added, ours=ours,
                      overwrite_warnings=[str(w.message) for w in caught if 'Overwriting' in str(w.message)])))
'''


def test_import_never_shadows_timm_models():
    out = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True, text=True, cwd=ROOT, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['replaced'] == []
    assert result['missing'] == []
    assert result['overwrite_warnings'] == []
    # every model visionzoo adds is defined in visionzoo, and nothing of visionzoo's hides behind a timm name
    assert result['added'] == result['ours']


def test_registries_are_children_of_mmengine_with_visionzoo_scope():
    from mmengine.registry import MODELS as MMENGINE_MODELS

    from visionzoo import registry
    for name, reg in registry.ALL_REGISTRIES.items():
        assert reg.scope == 'visionzoo', name
        assert reg.parent is not None and reg.parent.scope == 'mmengine', name
    assert MMENGINE_MODELS.children['visionzoo'] is registry.MODELS


def test_default_scope_finds_visionzoo_and_falls_back_to_mmengine():
    from mmengine.registry import DefaultScope

    import visionzoo  # noqa: F401
    from visionzoo.registry import MODELS, OPTIM_WRAPPERS
    with DefaultScope.overwrite_default_scope('visionzoo'):
        assert MODELS.get('ImageClassifier').__module__.startswith('visionzoo.')
        assert MODELS.get('BaseDataPreprocessor').__module__.startswith('mmengine.')
        assert OPTIM_WRAPPERS.get('OptimWrapper').__module__.startswith('mmengine.')
