from .errors import CheckpointError, ConfigError, DatasetError, VisionzooError

__all__ = ['VisionzooError', 'ConfigError', 'DatasetError', 'CheckpointError']
