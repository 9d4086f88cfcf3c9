"""Public import path. The configuration schema and helpers for driver settings (``convert``, ``Strict``).

The definitions live in :mod:`chorus.contract.config`; plugins import them from here."""

from chorus.contract.config import (
    BotConfig,
    BotParams,
    CitationsConfig,
    Config,
    DatasetConfig,
    KnowledgeConfig,
    RetrievalConfig,
    SearchOptions,
    ServerConfig,
    SkillsetConfig,
    Strict,
    WorkspaceConfig,
    convert,
    expand_env,
    load_config,
    parse_config,
)

__all__ = [
    "BotConfig",
    "BotParams",
    "CitationsConfig",
    "Config",
    "DatasetConfig",
    "KnowledgeConfig",
    "RetrievalConfig",
    "SearchOptions",
    "ServerConfig",
    "SkillsetConfig",
    "Strict",
    "WorkspaceConfig",
    "convert",
    "expand_env",
    "load_config",
    "parse_config",
]
