"""The import graph of the ``appo`` package has no cycles, between modules or between packages.

Every ``import`` statement counts, including the ones inside functions: a lazy import still ties the two
modules together, it only hides the cycle until run time. Edges to a package's own ``__init__`` (which a
submodule import runs implicitly) are not counted; ``from pkg import name`` counts as an edge to
``pkg.name`` when that is a module, else to ``pkg``. Packages are the first level under ``appo``
(``appo.train``, ``appo.agent`` ...; top-level modules such as ``appo.cli`` are their own node).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import appo

ROOT = Path(appo.__file__).parent

README = ROOT.parent / "README.md"


def readme_import_map(text: str | None = None) -> dict[str, set[str]]:
    """The import map of README.md's "Architecture" section (the table between the ``import-map`` markers):
    ``appo.<package>`` -> the ``appo.<package>`` set it imports."""
    text = README.read_text() if text is None else text
    block = text.split("<!-- import-map:start -->")[1].split("<!-- import-map:end -->")[0]
    out: dict[str, set[str]] = {}
    for line in block.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([\w.]+)`", cells[0]).group(1)
        out[f"appo.{name}"] = {f"appo.{m}" for m in re.findall(r"`([\w.]+)`", cells[1])}
    return out


# Layering README.md's table and the package __init__ docstrings promise: a package imports exactly these.
ALLOWED = readme_import_map()


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (the ``appo`` package folder)."""
    out = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The ``appo`` modules that module ``name`` (at ``path``) imports anywhere in its body."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = package[: len(package) - (node.level - 1)]
                base = ".".join(prefix + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return {t for t in out if t in known and t != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the ``appo`` modules it imports."""
    known = module_files(root)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def package_of(module: str) -> str:
    """``appo.train.trainer`` -> ``appo.train``; ``appo.cli`` -> ``appo.cli``."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Package -> the other packages its modules import (``appo`` itself, which only holds the version, is not
    counted as a package)."""
    out: dict[str, set[str]] = {}
    for m, targets in graph.items():
        out.setdefault(package_of(m), set()).update(
            package_of(t) for t in targets if package_of(t) not in (package_of(m), "appo"))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_detector_finds_a_cycle_and_a_lazy_import(tmp_path):
    pkg = tmp_path / "appo"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from appo.a.x import f\n")
    (pkg / "a" / "x.py").write_text("def f():\n    from appo.b import g\n    return g\n")
    (pkg / "b.py").write_text("from appo.a import x\n")
    graph = import_graph(pkg)
    assert graph["appo.b"] == {"appo.a.x"} and graph["appo.a.x"] == {"appo.b"}
    assert cycles(graph) == [["appo.a.x", "appo.b"]]
    assert cycles(package_graph(graph)) == [["appo.a", "appo.b"]]


def test_no_module_import_cycles():
    assert cycles(import_graph()) == []


def test_no_package_import_cycles():
    assert cycles(package_graph(import_graph())) == []


def test_layering_of_the_lower_packages():
    graph = package_graph(import_graph())
    for package, allowed in ALLOWED.items():
        assert graph.get(package, set()) <= allowed, f"{package} imports {sorted(graph[package] - allowed)}"


def test_every_package_says_what_it_is_for_and_what_it_may_import():
    for init in sorted(ROOT.rglob("__init__.py")):
        if init.parent == ROOT:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc.split()) >= 10, f"{init}: no docstring saying what the package is for"
        if init.parent.parent == ROOT:  # a first-level package
            assert "May import" in doc or "imports nothing" in doc, f"{init}: say what it may import"


def test_the_readme_import_map_is_the_code():
    """Every package is in README.md's table, and each imports exactly what its row lists (nothing more, and
    no listed import it does not make), so the Architecture paragraph cannot drift."""
    graph = package_graph(import_graph())
    graph.pop("appo", None)  # the package's own __init__: the version string
    assert sorted(set(graph) - set(ALLOWED)) == [], "packages missing from README.md's import map"
    assert sorted(set(ALLOWED) - set(graph)) == [], "README.md's import map lists packages that do not exist"
    wrong = {p: (sorted(graph[p] - ALLOWED[p]), sorted(ALLOWED[p] - graph[p])) for p in graph if graph[p] != ALLOWED[p]}
    assert not wrong, f"package: (imports the table does not list, listed imports it does not make): {wrong}"


def test_each_package_docstring_repeats_its_row():
    """A first-level package's ``__init__`` docstring names, in the sentence opening "May import:", exactly its
    row's packages (``:mod:`appo.x``` references), or says it "imports nothing" when the row is empty."""
    for init in sorted(ROOT.glob("*/__init__.py")):
        name = f"appo.{init.parent.name}"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if not ALLOWED[name]:
            assert "imports nothing" in doc, f"{init}: say that it imports nothing of appo"
            continue
        said = re.split(r"\.\s", doc.split("May import:")[1], maxsplit=1)[0]  # its first sentence
        named = {".".join(m.split(".")[:2]) for m in re.findall(r":mod:`(appo\.[\w.]+)`", said)}
        assert named == ALLOWED[name], f"{init}: 'May import:' names {sorted(named)}, README.md {sorted(ALLOWED[name])}"


def test_the_map_parser_reads_a_row():
    text = ("x\n<!-- import-map:start -->\n| a | b | c |\n| `core` | `plugins`, `types` | maths |\n"
            "<!-- import-map:end -->")
    assert readme_import_map(text) == {"appo.core": {"appo.plugins", "appo.types"}}
