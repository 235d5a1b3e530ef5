"""Errors for bad user input.

Each carries one message that names the file or argument and what was expected. The tools print the message
alone (no traceback) and exit with status 2. Every class takes a single message argument, because mmengine's
registry re-raises build errors as ``type(e)(message)``.
"""


class VisionzooError(Exception):
    """Base class of errors caused by bad input (files, configs, arguments)."""


class ConfigError(VisionzooError, ValueError):
    """A config file or a config option is missing or malformed."""


class DatasetError(VisionzooError, ValueError):
    """A dataset folder, annotation or image file is missing or unreadable."""


class CheckpointError(VisionzooError, ValueError):
    """A checkpoint file is missing, unreadable or does not fit the model."""


class NonFiniteLossError(VisionzooError, FloatingPointError):
    """A training loss became NaN or infinite; raised before the optimizer step, so the weights stay finite."""


class ArgumentError(VisionzooError, ValueError):
    """A model, layer or op was given an argument it cannot use.

    Raised by model code (backbones, necks, heads, detectors), which knows nothing of configs: the message starts
    with the class and the argument, ``FCOSHead(num_classes=0): expected a positive int``. When the module was
    built from a config, the engine prefixes the config path (``model.bbox_head``) when it reports the error.
    """
