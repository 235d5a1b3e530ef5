"""Image classifier: a timm model (any registered name, ours or timm's) as backbone plus a head."""
from typing import Dict, Optional, Union

import torch
from mmengine.model import BaseModel

from ..backbones import create_timm_model
from ..backbones.timm_backbone import _classifier_names, apply_family_filter
from ..registry import MODELS
from ..utils.options import argument_error

__all__ = ['ImageClassifier']


@MODELS.register_module()
class ImageClassifier(BaseModel):
    """Backbone by timm name + classification head.

    Args:
        backbone: ``dict(model_name='resnet18', pretrained=False | path, drop_path_rate=..., ...)``; every key
            but ``model_name`` goes to ``timm.create_model``. The backbone is built with ``num_classes=0`` and
            yields pooled features.
        head: head config, e.g. ``dict(type='LinearClsHead', num_classes=10)``; ``in_channels`` defaults to the
            backbone's pre-logits width.
        data_preprocessor: mmengine data preprocessor config (moves the batch to the model's device).
    """

    def __init__(self, backbone: Union[dict, str], head: dict, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        given = backbone
        backbone = dict(model_name=backbone) if isinstance(backbone, str) else dict(backbone or {})
        if 'model_name' not in backbone:
            raise argument_error('ImageClassifier', 'backbone', given,
                                 "expected a timm model name or dict(model_name='<timm model name>', ...)")
        self.model_name = backbone.pop('model_name')
        self.backbone = create_timm_model(self.model_name, num_classes=0, owner='ImageClassifier',
                                          arg_prefix='backbone.', **backbone)
        head = dict(head)
        # timm models with num_classes=0 return pre-logits of width head_hidden_size (num_features unless the
        # model has a conv/MLP head before its classifier, as MobileNetV3 and EfficientViT-M do)
        head.setdefault('in_channels', getattr(self.backbone, 'head_hidden_size', None) or self.backbone.num_features)
        self.head = MODELS.build(head)

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.backbone(inputs)

    def convert_checkpoint(self, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Weights of the whole classifier in the model family's layouts -> this model's keys (``backbone.*``,
        ``head.fc.*``), for ``tools/test.py CONFIG CKPT`` and ``load_from``.

        Our own checkpoints come back unchanged. Others (timm's full model, the official repository's, mmpretrain's
        where the family's filter reads it) go through the family's ``checkpoint_filter_fn`` (as ``pretrained=PATH``
        does); the classifier (timm's pretrained-cfg ``classifier`` name) becomes ``head.fc``, the backbone's weights
        ``backbone.*``; other keys keep their names. Nothing is checked here: the strict load that follows names what
        does not fit.
        """
        own = self.state_dict()
        if all(k in own for k in state):
            return state
        state = apply_family_filter(self.model_name, state, self.backbone,
                                    f'ImageClassifier(backbone.model_name={self.model_name!r})')
        heads = tuple(name + '.' for name in _classifier_names(self.model_name))
        out = {}
        for key, value in state.items():
            if key in own:
                out[key] = value
            elif key.startswith(heads):
                out['head.fc.' + key.rsplit('.', 1)[-1]] = value
            elif 'backbone.' + key in own:
                out['backbone.' + key] = value
            else:
                out[key] = value  # foreign: kept as named in the file, for the strict load to report
        return out

    def forward(self, inputs: torch.Tensor, data_samples: Optional[dict] = None, mode: str = 'tensor'):
        logits = self.head(self.extract_feat(inputs))
        if mode == 'tensor':
            return logits
        if mode == 'loss':
            return self.head.loss(logits, data_samples['gt_label'])
        if mode == 'predict':
            scores = logits.float().softmax(dim=1)
            preds = []
            for i in range(scores.shape[0]):
                pred = dict(pred_score=scores[i], pred_label=int(scores[i].argmax()))
                if data_samples is not None:
                    if 'gt_label' in data_samples:
                        pred['gt_label'] = int(data_samples['gt_label'][i])
                    if 'img_path' in data_samples:
                        pred['img_path'] = data_samples['img_path'][i]
                preds.append(pred)
            return preds
        raise ValueError(f"mode: expected 'tensor', 'loss' or 'predict', got {mode!r}")
