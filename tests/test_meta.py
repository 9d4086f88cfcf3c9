"""Meta-tests: every hook has a test and a documentation entry; the hook docs are not stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from chorus.contract import hookdocs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = hookdocs.hook_names()


def test_the_pipeline_hooks_exist() -> None:
    assert {"resolve_target", "build_system_prompt", "retrieve_context", "run_tools", "post_process"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    source = (ROOT / "tests" / "test_hooks.py").read_text(encoding="utf-8")
    assert f"def test_hook_{hook}(" in source, f"tests/test_hooks.py needs test_hook_{hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    docs = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert f"## {hookdocs.signature(hook)}" in docs


def test_hook_reference_is_generated_from_docstrings() -> None:
    docs = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert docs == hookdocs.render(), "docs/hooks.md is stale: run `python -m chorus.contract.hookdocs > docs/hooks.md`"
