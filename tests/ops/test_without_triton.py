"""Every op imports and runs without Triton; asking for the Triton path then is a clear error."""
import os
import subprocess
import sys

from conftest import ROOT

_CODE = '''
import sys; sys.modules["triton"] = None
import torch
from visionzoo.ops import causal_conv1d, neighborhood_attention, routing_attention, selective_scan
u = torch.randn(1, 2, 5); A = -torch.rand(2, 3); B = torch.randn(1, 3, 5)
assert selective_scan(u, u.abs(), A, B, B).shape == (1, 2, 5)
assert causal_conv1d(u, torch.randn(2, 4)).shape == (1, 2, 5)
q = torch.randn(1, 6, 7, 2, 4, requires_grad=True)
neighborhood_attention(q, q, q, 3).sum().backward()
r = torch.randn(1, 6, 7, 2, 4, requires_grad=True)
routing_attention(r, r, r, 3, 2).sum().backward()
for name, call in (("selective_scan", lambda: selective_scan(u, u.abs(), A, B, B, backend="triton")),
                   ("neighborhood_attention", lambda: neighborhood_attention(q, q, q, 3, backend="triton")),
                   ("routing_attention", lambda: routing_attention(r, r, r, 3, 2, backend="triton"))):
    try:
        call()
    except RuntimeError as e:
        assert "triton" in str(e), (name, str(e))
    else:
        raise AssertionError(name + ": backend='triton' without triton did not raise")
print("ok")
'''


def test_ops_import_and_run_without_triton():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    for var in ('VISIONZOO_SCAN_BACKEND', 'VISIONZOO_NA_BACKEND', 'VISIONZOO_CONV1D_BACKEND', 'VISIONZOO_BRA_BACKEND'):
        env.pop(var, None)
    result = subprocess.run([sys.executable, '-c', _CODE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith('ok'), result.stderr[-3000:]
