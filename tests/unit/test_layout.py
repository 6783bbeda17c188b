"""Guardrails for the package layout (docs/DECISIONS.md, "Layout"): imports point one way along the
data path, development tooling stays out of production code, and tests stand alone.

Read from the source (every import, function-local ones included), nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "iq_etl"
TESTS = REPO / "tests"

# What each top-level part of iq_etl may import from the others. The data path is
# solana/protocol → ingest → warehouse → transform → export; reconcile and status sit beside it,
# orchestration (Prefect) and cli on top, devchain (synthetic chain, loopback servers) only for cli.
# net (the HTTP clients' deadline, error wording, retry timing, URL redaction) is a bottom floor like
# errors: it imports nothing of iq_etl, and the parts with an HTTP client (ingest, export) use it.
PATH = {"errors", "settings", "solana", "protocol", "ingest", "warehouse", "transform", "export"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "net": set(),
    "settings": {"errors"},
    "output": set(),
    "solana": {"errors"},
    "protocol": {"errors"},
    "warehouse": {"errors", "settings", "solana"},
    "ingest": {"errors", "net", "settings", "solana", "protocol", "warehouse"},
    "transform": {"errors", "settings", "warehouse"},
    "export": {"errors", "net", "settings", "warehouse"},
    "reconcile": {"errors", "settings", "solana", "warehouse"},
    "status": {"errors", "settings", "warehouse", "output"},
    "report": {"errors", "settings", "solana", "warehouse", "output"},
    "orchestration": PATH | {"net", "reconcile", "status", "report", "output"},
    "devchain": PATH | {"net", "reconcile", "status", "output", "orchestration"},
    "cli": PATH | {"net", "reconcile", "status", "report", "output", "orchestration", "devchain"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import (the package uses absolute imports)"
            out.append((node.lineno, node.module or ""))
            # `from iq_etl import warehouse` names a part too
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module == "iq_etl"]
    return out


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "iq_etl" and len(parts) > 1 else None


def _package_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, f"package not found at {PACKAGE}"
    return files


def test_every_part_has_a_rule():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts == set(ALLOWED), f"new or removed top-level parts: add them to ALLOWED: {parts ^ set(ALLOWED)}"


def test_imports_point_one_way():
    wrong = []
    for path in _package_files():
        me = _part(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if me is None:
            continue  # iq_etl/__init__.py
        for line, module in _imports(path):
            other = _part(module)
            if other and other != me and other not in ALLOWED[me]:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {me} imports {module}")
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def test_only_cli_and_devchain_import_devchain():
    # The rule the table above implies, said on its own because it is the one that matters most:
    # development tooling (fake servers, a synthetic chain) never runs in production code.
    users = {_part(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts))
             for p in _package_files() for _, m in _imports(p) if _part(m) == "devchain"}
    assert users <= {"cli", "devchain"}, users


def test_path_packages_never_import_orchestration_or_cli():
    for path in _package_files():
        me = _part(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if me in PATH:
            bad = [m for _, m in _imports(path) if _part(m) in ("orchestration", "cli")]
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"


@pytest.mark.parametrize("folder", ["unit", "integration", "e2e", "support"])
def test_no_test_module_imports_another(folder):
    for path in sorted((TESTS / folder).glob("*.py")):
        for line, module in _imports(path):
            last = module.rsplit(".", 1)[-1]
            assert not (module.startswith("tests.") and last.startswith("test_")), \
                f"{path.relative_to(REPO)}:{line} imports the test module {module}: move shared builders to tests/support"


def test_unit_tests_need_no_warehouse_and_no_prefect():
    for path in sorted((TESTS / "unit").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        modules = {m for _, m in _imports(path)}
        assert not {m for m in modules if m.split(".")[0] == "prefect"}, f"{path.relative_to(REPO)} imports Prefect"
        assert "iq_etl.warehouse.client" not in modules, f"{path.relative_to(REPO)} opens a warehouse"
        fixtures = {a.arg for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) for a in n.args.args}
        assert not fixtures & {"warehouse", "prefect_api"}, \
            f"{path.relative_to(REPO)} uses {fixtures & {'warehouse', 'prefect_api'}}: it belongs in tests/integration"


def test_fixtures_are_inside_the_repository():
    assert (TESTS / "fixtures" / "old-faithful" / "SHA256SUMS").is_file()
    for path in sorted(TESTS.rglob("*.py")):
        if path != Path(__file__).resolve():
            assert "../" + "shared" not in path.read_text(), f"{path.relative_to(REPO)} reads files outside the repository"
