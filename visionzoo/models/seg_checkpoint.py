"""Official mmseg segmentor checkpoints (0.x and 1.x layouts) -> visionzoo's ``EncoderDecoder`` keys.

An mmseg checkpoint of an ``EncoderDecoder`` holds ``backbone.*`` in the backbone family's own layout (the official
dense code of VAN, BiFormer, Vim: the classification model without its classifier, plus per-output norms),
``neck.*`` and ``decode_head.*``/``auxiliary_head.*`` under mmseg's names. visionzoo's ``FPN`` neck and
``UPerHead``/``FPNHead``/``FCNHead`` use those names and shapes (mmseg 0.30.0 and 1.x agree for these modules; the
recorded layouts in ``tests/data/official_layouts/seg_*.json`` pin them), so only the backbone needs mapping:
:func:`convert_segmentor_state_dict` hands the ``backbone.*`` weights to the backbone's ``convert_state_dict``
(:meth:`visionzoo.backbones.TimmBackbone.convert_state_dict`) and moves the pyramid layers that official
plain-backbone code keeps inside its backbone (Vim, BEiT: ``backbone.fpn1..fpn4``) to the neck when the model's neck
has them under those names.

Nothing is checked here: the strict load that follows (``load_from``, ``tools/test.py CONFIG CKPT``) names every key
that is missing or left over.
"""
import re
from typing import Dict

import torch
import torch.nn as nn

__all__ = ['convert_segmentor_state_dict']

_BACKBONE = 'backbone.'

# weights that official code keeps in its backbone and visionzoo in a separate module: (pattern, replacement), used
# only where the model has the replacement key
_MOVED = (
    # BEiT-style multi-level pyramid (Vim seg, BEiT): mmseg's Feature2Pyramid names, or a neck keeping the official ones
    (re.compile(r'^backbone\.fpn1\.(.*)$'), r'neck.upsample_4x.\1'),
    (re.compile(r'^backbone\.fpn2\.(.*)$'), r'neck.upsample_2x.\1'),
    (re.compile(r'^backbone\.(fpn[1-4]\..*)$'), r'neck.\1'),
)


def convert_segmentor_state_dict(model: nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state`` (an mmseg or visionzoo segmentor checkpoint's weights) -> the keys of ``model`` (an
    ``EncoderDecoder``).

    The model's own checkpoints come back unchanged (the same dict). Otherwise: pyramid layers of the official
    backbone move to the neck where the neck has them (``_MOVED``); the remaining ``backbone.*`` weights go through
    ``model.backbone.convert_state_dict`` when the backbone has one; every other key keeps its name.
    """
    own = model.state_dict()
    if all(k in own for k in state):
        return state
    out, backbone = {}, {}
    for key, value in state.items():
        for pattern, replacement in _MOVED:
            moved = pattern.sub(replacement, key)
            if moved != key and moved in own:
                key = moved
                break
        if key.startswith(_BACKBONE):
            backbone[key[len(_BACKBONE):]] = value
        else:
            out[key] = value
    convert = getattr(model.backbone, 'convert_state_dict', None)
    if callable(convert):
        backbone = convert(backbone)
    return {**{_BACKBONE + k: v for k, v in backbone.items()}, **out}
