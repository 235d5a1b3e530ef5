"""visionzoo: efficient vision backbones for timm, with config-driven classification and detection.

``import visionzoo`` registers every visionzoo backbone in timm (``timm.create_model``) and every module in
the visionzoo mmengine registries (configs with ``default_scope='visionzoo'``).
"""
__version__ = '0.1.0'

from . import ops  # noqa: F401  (kernels first: backbones build on them)
from . import layers  # noqa: F401  (layers shared by model families)
from . import backbones  # noqa: F401  (registers timm models)
from . import necks, heads, models  # noqa: F401,E401
from . import datasets, evaluation, engine  # noqa: F401,E401
from .layers.fuse import fuse  # noqa: F401  (visionzoo.fuse(model): fold norms for inference)
from .registry import MODELS  # noqa: F401
