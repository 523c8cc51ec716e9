"""Run configuration: the typed, frozen dataclasses of a run (:mod:`~appo.config.schema`), loading them from a
YAML file or a shipped config's name with dotted overrides (:mod:`~appo.config.load`), the cross-field rules
(:mod:`~appo.config.validate`, which also asks the chosen algorithm and engine for theirs), and the generic
typed-YAML machinery (:mod:`~appo.config.typed_yaml`). Errors are :class:`ConfigError` (bad keys, types,
rules) and :class:`~appo.presets.ConfigNotFoundError` (an unknown config name); both are ``ValueError``\\ s
whose message is one line naming the input and the fix.

May import: :mod:`appo.algorithms` (their sections and rules), :mod:`appo.presets` (the shipped YAML files),
:mod:`appo.engine` (engine rules, :mod:`appo.engine.registry`). Not the trainer, the models or the data.
"""

from appo.algorithms.appo import AppoConfig
from appo.algorithms.arpo import ArpoConfig
from appo.algorithms.tree_grpo import TreeConfig
from appo.config.load import config_reference_markdown, config_to_dict, load_config, save_config
from appo.config.schema import (
    ActorConfig,
    AlgorithmConfig,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RewardConfig,
    RolloutConfig,
    SftConfig,
    TrainerConfig,
    ValKwargs,
)
from appo.config.typed_yaml import ConfigError
from appo.config.validate import validate_config
from appo.presets import ConfigNotFoundError

__all__ = [
    "ActorConfig", "AlgorithmConfig", "AppoConfig", "ArpoConfig", "Config", "ConfigError", "ConfigNotFoundError",
    "DataConfig", "ModelConfig", "OptimConfig", "RewardConfig", "RolloutConfig", "SftConfig", "TrainerConfig",
    "TreeConfig", "ValKwargs", "config_reference_markdown", "config_to_dict", "load_config", "save_config",
    "validate_config",
]
