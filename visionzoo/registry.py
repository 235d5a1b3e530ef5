"""mmengine registries of visionzoo.

Every registry is a child of mmengine's root registry of the same kind with scope ``visionzoo``, so a config
with ``default_scope='visionzoo'`` finds our classes first and falls back to mmengine's (optimizers,
schedulers, hooks, samplers, ...). ``locations`` lets mmengine import the defining modules on first use; a
plain ``import visionzoo`` registers everything as well.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

SCOPE = 'visionzoo'
_MODEL_LOCATIONS = ['visionzoo.backbones', 'visionzoo.necks', 'visionzoo.heads', 'visionzoo.models']

RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, scope=SCOPE, locations=['visionzoo.engine'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope=SCOPE, locations=['visionzoo.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope=SCOPE, locations=['visionzoo.engine'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope=SCOPE, locations=['visionzoo.datasets'])
DATA_SAMPLERS = Registry('data sampler', parent=MMENGINE_DATA_SAMPLERS, scope=SCOPE, locations=['visionzoo.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope=SCOPE, locations=['visionzoo.datasets'])
FUNCTIONS = Registry('function', parent=MMENGINE_FUNCTIONS, scope=SCOPE, locations=['visionzoo.datasets'])
MODELS = Registry('model', parent=MMENGINE_MODELS, scope=SCOPE, locations=_MODEL_LOCATIONS)
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope=SCOPE, locations=['visionzoo.engine'])
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, scope=SCOPE, locations=['visionzoo.engine'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope=SCOPE, locations=['visionzoo.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope=SCOPE,
    locations=['visionzoo.engine'])
PARAM_SCHEDULERS = Registry(
    'parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS, scope=SCOPE, locations=['visionzoo.engine'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope=SCOPE, locations=['visionzoo.evaluation'])
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR, scope=SCOPE, locations=['visionzoo.evaluation'])
TASK_UTILS = Registry('task util', parent=MMENGINE_TASK_UTILS, scope=SCOPE, locations=['visionzoo.models'])
VISUALIZERS = Registry('visualizer', parent=MMENGINE_VISUALIZERS, scope=SCOPE, locations=['visionzoo.engine'])
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS, scope=SCOPE, locations=['visionzoo.engine'])
LOG_PROCESSORS = Registry('log_processor', parent=MMENGINE_LOG_PROCESSORS, scope=SCOPE, locations=['visionzoo.engine'])

ALL_REGISTRIES = {
    'runner': RUNNERS, 'loop': LOOPS, 'hook': HOOKS, 'dataset': DATASETS, 'data sampler': DATA_SAMPLERS,
    'transform': TRANSFORMS, 'function': FUNCTIONS, 'model': MODELS, 'model_wrapper': MODEL_WRAPPERS,
    'optimizer': OPTIMIZERS, 'optim_wrapper': OPTIM_WRAPPERS,
    'optimizer wrapper constructor': OPTIM_WRAPPER_CONSTRUCTORS,
    'parameter scheduler': PARAM_SCHEDULERS, 'metric': METRICS, 'evaluator': EVALUATOR, 'task util': TASK_UTILS,
    'visualizer': VISUALIZERS, 'vis_backend': VISBACKENDS, 'log_processor': LOG_PROCESSORS,
}
