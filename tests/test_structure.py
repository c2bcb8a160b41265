"""The package's shape: no package reaches into another's private modules, the revocation
modules form no import cycle, the issuer loads no verifier or asyncio, and modules and
classes stay small unless their docstring says why."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rotator"
# Past these sizes, a module or class says why in its docstring ("on purpose").
MODULE_LINES, CLASS_LINES = 320, 230


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, name: str, *, runtime_only: bool) -> list[str]:
    """Absolute names of the rotator modules ``path`` imports (at module level and, unless
    ``runtime_only``, inside functions too); ``from X import y`` counts as X and X.y."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and (top or not runtime_only):
                base = package
                for _ in range(child.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{child.module}" if child.level and child.module else (child.module or base)
                found.append(module)
                found.extend(f"{module}.{a.name}" for a in child.names)
            elif isinstance(child, ast.Import) and (top or not runtime_only):
                found.extend(a.name for a in child.names)
            visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    visit(tree, True)
    return [m for m in found if m.startswith("rotator")]


def test_no_package_imports_another_packages_private_module() -> None:
    """A private module (``_name``) is imported only from inside its own package."""
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        for target in _imports(path, name, runtime_only=False):
            parts = target.split(".")
            for i, part in enumerate(parts[1:], start=1):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])
                    own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                    if owner != "rotator" and owner != own_package:
                        offenders.append(f"{name} imports {target}")
                    break
    assert offenders == []


def test_the_revocation_modules_form_no_import_cycle() -> None:
    """rotator.revocation's modules import one another without a cycle, at import time or later."""
    modules = {n: p for n, p in _modules().items() if n.startswith("rotator.revocation.")}
    graph = {n: {t for t in _imports(p, n, runtime_only=False) if t in modules and t != n} for n, p in modules.items()}
    done: set[str] = set()

    def walk(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join((*stack, node))}"
        if node not in done:
            for nxt in graph[node]:
                walk(nxt, (*stack, node))
            done.add(node)

    for node in graph:
        walk(node, ())
    assert graph["rotator.revocation._replica"].isdisjoint({"rotator.revocation._store"})


def _loaded_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(result.stdout.split())


def test_the_issuer_loads_no_verifier_and_no_asyncio() -> None:
    """import rotator.issuer loads neither the verifier nor asyncio nor an HTTP client."""
    loaded = _loaded_after("import rotator.issuer")
    assert "rotator.issuer" in loaded
    assert not {m for m in loaded if m.startswith(("rotator.verifier", "asyncio", "http.client"))}


def test_revoke_subject_loads_neither_the_replica_nor_the_verifier() -> None:
    """The CLI's revocation writes load the store only: no replica, no verifier."""
    loaded = _loaded_after(
        "from click.testing import CliRunner\n"
        "from rotator.cli import main\n"
        "result = CliRunner().invoke(main, ['revoke-subject', 'x', '--revocation-url', 'redis://127.0.0.1:1/0'])\n"
        "assert result.exit_code == 7, result.output"
    )
    assert "rotator.revocation._store" in loaded
    assert not {m for m in loaded if m.startswith(("rotator.verifier", "rotator.revocation._replica"))}


def test_modules_and_classes_are_small_or_say_why() -> None:
    """Modules over ~300 lines and classes over ~200 say in their docstring why they are one piece."""
    too_big = []
    for name, path in _modules().items():
        text = path.read_text()
        tree = ast.parse(text)
        if text.count("\n") > MODULE_LINES and "on purpose" not in (ast.get_docstring(tree) or ""):
            too_big.append(f"module {name}: {text.count(chr(10))} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                reason = (ast.get_docstring(node) or "") + (ast.get_docstring(tree) or "")
                if size > CLASS_LINES and "on purpose" not in reason:
                    too_big.append(f"class {name}.{node.name}: {size} lines")
    assert too_big == []


def test_the_readme_module_map_matches_the_tree() -> None:
    """Every module and package of rotator is in the README's module map, and the map names
    nothing that does not exist."""
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Module map", 1)[1].split("\n## ", 1)[0]
    named = {n.rstrip("/") for row in re.findall(r"^\| (`.+?) \|", section, re.M) for n in re.findall(r"`([a-z0-9_/]+)`", row)}
    present = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    present |= {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert named == present, (sorted(present - named), sorted(named - present))
