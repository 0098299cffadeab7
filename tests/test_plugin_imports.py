"""The built-in plugins, which users copy, reach the guest only through the public API.

A module under ``qppsuite/plugins/`` may import from the core only the plugin API: ``qppsuite.core.qpp`` (QPP),
``qppsuite.core.guest`` (the machine facade) and ``qppsuite.core.events`` (the core's event types); never
``unicorn`` or any other core module (``engine``, ``machine``, ``cpu``, ``memory``, ``mmu``...).  What they
do with ``self.machine`` is checked by mypy: ``Plugin.machine`` is typed as the facade.
"""

import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "qppsuite" / "plugins"
PUBLIC_CORE = ("qppsuite.core.qpp", "qppsuite.core.guest", "qppsuite.core.events")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, relative imports resolved against its package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(PLUGINS.parents[1]).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
            found.append((node.lineno, base))
    return found


def forbidden(module: str) -> bool:
    if module == "unicorn" or module.startswith("unicorn."):
        return True
    if module in ("qppsuite.core", "qppsuite") or not module.startswith("qppsuite.core."):
        return False
    return not any(module == public or module.startswith(public + ".") for public in PUBLIC_CORE)


def test_the_rule_tells_public_from_private() -> None:
    assert forbidden("unicorn.arm_const") and forbidden("unicorn")
    assert forbidden("qppsuite.core.engine") and forbidden("qppsuite.core.machine.Machine")
    assert forbidden("qppsuite.core.memory.introspect") and forbidden("qppsuite.core.mmu")
    assert not forbidden("qppsuite.core.qpp") and not forbidden("qppsuite.core.guest.GuestMemoryError")
    assert not forbidden("qppsuite.core.events.SvcEvent") and not forbidden("qppsuite.profiles.profile")


@pytest.mark.parametrize("path", sorted(PLUGINS.rglob("*.py")), ids=lambda p: str(p.relative_to(PLUGINS)))
def test_a_builtin_plugin_imports_only_the_public_api(path: Path) -> None:
    bad = [f"line {line}: {module}" for line, module in imported_modules(path) if forbidden(module)]
    assert not bad, f"{path.relative_to(PLUGINS)} reaches into the core: {', '.join(bad)}"
