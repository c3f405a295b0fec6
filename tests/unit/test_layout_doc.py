"""docs/architecture.md's code-layout table matches the tree under src/edgesched.

The table's rows are ``| `edgesched.X` | what |``. The rules (generated ``v1/`` code,
``__init__`` and ``__main__`` aside):

- every package has its own row, or is named ``name/`` in its parent package's row;
- every top-level module (``edgesched/*.py``) has its own row or is named in the ``edgesched`` row;
- a row that names one of its package's modules names all of them (so a package listed module
  by module stays listed in full);
- every row's package exists, and every ``name/`` or plain lower-case ``name`` a row quotes is a
  module or package of that row's package (or of a subpackage it names); a function is
  written ``name()``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"
ROW = re.compile(r"^\|\s*`(edgesched(?:\.[a-z_0-9]+)*)`\s*\|(.*)\|\s*$")
TOKEN = re.compile(r"`([^`]+)`")
PLAIN = re.compile(r"^[a-z_][a-z0-9_]*/?$")


def _table() -> dict[str, list[str]]:
    """Row package → the backticked tokens of its description."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Code layout", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = TOKEN.findall(match.group(2))
    return rows


def _path(package: str) -> Path:
    return SRC.joinpath(*package.split("."))


def _is_package(path: Path) -> bool:
    return (path / "__init__.py").is_file()


def _children(package: str) -> tuple[set[str], set[str]]:
    """A package's modules and subpackages (by name)."""
    path = _path(package)
    modules = {p.stem for p in path.glob("*.py") if p.stem not in ("__init__", "__main__")}
    packages = {p.name for p in path.iterdir() if p.is_dir() and _is_package(p)}
    packages.discard("v1")  # generated gRPC code
    return modules, packages


def _packages() -> list[str]:
    found = []
    for init in sorted((SRC / "edgesched").rglob("__init__.py")):
        parts = init.parent.relative_to(SRC).parts
        if "v1" not in parts:
            found.append(".".join(parts))
    return found


def test_the_table_is_found() -> None:
    rows = _table()
    assert "edgesched" in rows and "edgesched.master" in rows, sorted(rows)


def test_every_package_is_in_the_table() -> None:
    rows = _table()
    missing = []
    for package in _packages():
        if package in rows or package == "edgesched":
            continue
        parent, name = package.rsplit(".", 1)
        if f"{name}/" not in rows.get(parent, []):
            missing.append(package)
    assert not missing, f"packages with no row nor named `name/` in their parent's: {missing}"


def test_every_top_level_module_is_in_the_table() -> None:
    rows = _table()
    modules, _ = _children("edgesched")
    missing = sorted(
        m for m in modules if f"edgesched.{m}" not in rows and m not in rows["edgesched"]
    )
    assert not missing, f"top-level modules not named in the table: {missing}"


def test_a_row_listing_modules_lists_all_of_them() -> None:
    rows = _table()
    incomplete = {}
    for package, tokens in rows.items():
        if package == "edgesched" or not _is_package(_path(package)):
            continue
        modules, packages = _children(package)
        named = set(tokens)
        for sub in packages:  # a subpackage named in this row: its modules are listed here
            if f"{sub}/" in named and f"{package}.{sub}" not in rows:
                sub_modules, _ = _children(f"{package}.{sub}")
                if sub_modules & named:
                    left = sorted(sub_modules - named)
                    if left:
                        incomplete[f"{package}.{sub}"] = left
        if modules & named:
            left = sorted(modules - named)
            if left:
                incomplete[package] = left
    assert not incomplete, f"rows naming some of their modules but not these: {incomplete}"


def test_every_name_in_the_table_exists() -> None:
    rows = _table()
    wrong = {}
    for package, tokens in rows.items():
        if not _is_package(_path(package)) and not _path(package).with_suffix(".py").is_file():
            wrong[package] = ["(no such package or module)"]
            continue
        if not _is_package(_path(package)):
            continue
        modules, packages = _children(package)
        known = modules | {f"{p}/" for p in packages}
        for sub in packages:
            if f"{sub}/" in tokens:
                sub_modules, sub_packages = _children(f"{package}.{sub}")
                known |= sub_modules | {f"{p}/" for p in sub_packages}
        bad = [t for t in tokens if PLAIN.match(t) and t not in known]
        if bad:
            wrong[package] = bad
    assert not wrong, f"the table names modules or packages that do not exist: {wrong}"
