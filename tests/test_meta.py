"""Meta-tests: every hook has a test and a documentation entry; the hook docs are not stale; plugin
suites reach Chorus through chorus.testing and its plugin-facing modules only."""

from __future__ import annotations

import ast
import re
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


# -- chorus.testing is the only way in for plugin suites, and product code never uses it ----------

#: What a plugin's tests may import from Chorus: chorus.testing and the plugin-facing modules.
PLUGIN_FACING = {
    "chorus", "chorus.config", "chorus.errors", "chorus.secrets", "chorus.tools", "chorus.search",
    "chorus.vectorstores", "chorus.providers", "chorus.context", "chorus.schemas", "chorus.egress", "chorus.targets",
    "chorus.fields", "chorus.registry", "chorus.documents", "chorus.sqlitedb", "chorus.http1", "chorus.sse",
}
CODE_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.MULTILINE)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Absolute imports anywhere in ``path`` (functions included), and in code held in strings."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value:
            found += [(node.lineno, a or b) for a, b in CODE_IMPORT.findall(node.value)]
    return found


def test_contrib_suites_import_only_chorus_testing_and_plugin_facing_modules() -> None:
    def allowed(module: str) -> bool:
        top = module.split(".")[0]
        if top in ("tests", "chorus_plugins"):  # the repository's own suite, built-in plugins' internals
            return False
        return top != "chorus" or module in PLUGIN_FACING or module.split(".")[:2] == ["chorus", "testing"]

    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted(ROOT.glob("contrib/*/tests/**/*.py"))
        for line, module in imported_modules(path) if not allowed(module)
    ]
    assert not offenders, "contrib suites must use chorus.testing instead of:\n" + "\n".join(offenders)


def test_product_code_never_imports_chorus_testing() -> None:
    product = [p for p in ROOT.glob("core/chorus/**/*.py") if "testing" not in p.relative_to(ROOT / "core/chorus").parts]
    product += [*ROOT.glob("plugins/chorus_plugins/**/*.py"), *ROOT.glob("contrib/*/src/**/*.py")]
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted(product)
        for line, module in imported_modules(path) if module == "chorus.testing" or module.startswith("chorus.testing.")
    ]
    assert not offenders, "chorus.testing is for tests only:\n" + "\n".join(offenders)
