"""Shared helpers of the backbone tests: the tiny configuration of every visionzoo timm model (what the contract
test in test_contract.py runs) and the missing-key checkpoint check.

A new family gets the whole timm contract by adding its line(s) to ``CONTRACT_CASES``.
"""
import re
from typing import NamedTuple, Tuple

import pytest
import torch


class ContractCase(NamedTuple):
    name: str                      # registered timm model name
    kwargs: dict                   # overrides that make it tiny (same code paths as the full model)
    size: Tuple[int, int]          # input size of the forward checks
    other_size: Tuple[int, int]    # a second, non-square input size
    deep: bool = True              # every check; False: the cheap ones (a variant whose code paths another covers)


_VIM = dict(depth=2, embed_dim=32, img_size=64)
_VAN = dict(embed_dims=(8, 16, 24, 32), depths=(1, 2, 1, 1))
# 3 x 3 regions: topk 1 and 2 run the routed op's chunked formulation, topk 4 its dense one
_BIFORMER = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 32), head_dim=8, n_win=3, topks=(1, 2, 4, -2))
_SLAB_HIER = dict(num_heads=(2, 2, 2, 2), img_size=64)
# kernel 3; DiNAT's dilations 8/4/2/1 pad every level of a 64² input (maps 16 ... 2 against windows 24 ... 3)
_NAT = dict(embed_dim=8, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 2), kernel_size=3)

CONTRACT_CASES = {
    'vim': [ContractCase(name, _VIM, (64, 64), (48, 80), name in ('vim_tiny', 'vim_tiny_stride8')) for name in
            ('vim_tiny', 'vim_small', 'vim_base', 'vim_tiny_stride8', 'vim_small_stride8')],
    'van': [ContractCase(f'van_b{i}', _VAN, (64, 64), (67, 45), i == 0) for i in range(7)],
    'biformer': [ContractCase(name, _BIFORMER, (64, 64), (40, 56), name == 'biformer_tiny') for name in
                 ('biformer_tiny', 'biformer_small', 'biformer_base')],
    'slab': [ContractCase(name, dict(embed_dim=16, depth=2, num_heads=2, img_size=64), (64, 48), (32, 80),
                          name == 'slab_deit_tiny') for name in ('slab_deit_tiny', 'slab_deit_small')] + [
        ContractCase('slab_pvt_tiny', dict(embed_dims=(8, 16, 16, 32), num_heads=(1, 2, 2, 4), depths=(1, 1, 1, 1),
                                           img_size=64), (64, 96), (96, 64)),
        ContractCase('slab_swin_tiny', dict(_SLAB_HIER, embed_dim=8, depths=(2, 1, 2, 1)), (164, 130), (64, 64)),
        ContractCase('slab_swin_small', dict(_SLAB_HIER, embed_dim=8, depths=(2, 1, 2, 1)), (64, 64), (72, 40), False),
        ContractCase('slab_cswin_tiny', dict(_SLAB_HIER, embed_dim=8, depths=(1, 1, 2, 1)), (96, 160), (64, 64)),
    ],
    'nat': [ContractCase(name, _NAT, (64, 64), (56, 72), name in ('nat_small', 'dinat_mini')) for name in
            ('nat_mini', 'nat_tiny', 'nat_small', 'nat_base', 'dinat_mini', 'dinat_tiny', 'dinat_small', 'dinat_base',
             'dinat_large', 'dinat_large_384')],
}


def all_cases():
    return [case for cases in CONTRACT_CASES.values() for case in cases]


def assert_missing_key_is_reported(tmp_path, create, state_dict: dict, key: str, wrap: str = 'model'):
    """Delete ``key`` from an official-layout ``state_dict``, save it (under ``wrap``) and check that
    ``create(path)`` fails with an error whose message (or cause) names the key."""
    state_dict = dict(state_dict)
    del state_dict[key]
    path = tmp_path / 'missing_key.pth'
    torch.save({wrap: state_dict} if wrap else state_dict, path)
    with pytest.raises(Exception) as info:
        create(str(path))
    messages = [str(info.value), str(info.value.__cause__ or '')]
    assert any(re.search(re.escape(key), m) for m in messages), messages
