"""The repository's shape: the README is a user's page whose project block is current, no tracked file
narrates how the project was made, and the package stays in rooms of one idea (no module over 500 lines,
no import cycle, imports inside functions included)."""

import ast
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "components" / "conll_crf"
MARKERS = (
    "<!-- WEASEL: AUTO-GENERATED DOCS START (do not remove) -->",
    "<!-- WEASEL: AUTO-GENERATED DOCS END (do not remove) -->",
)
NARRATION = re.compile(
    r"\bsessions?\b|\bsittings?\b|\b(eleventh|twelfth|thirteenth|fourteenth)\b|\buntil this\b", re.IGNORECASE
)


def block(text: str) -> str:
    start, end = (text.index(m) for m in MARKERS)
    return text[start:end]


def test_readme_is_short_and_its_project_block_is_current(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    assert len(readme.splitlines()) <= 300
    out = tmp_path / "document.md"
    subprocess.run(
        [sys.executable, "-m", "spacy", "project", "document", str(ROOT), "--output", str(out)],
        check=True,
        capture_output=True,
    )
    assert block(readme) == block(out.read_text(encoding="utf8")), (
        "README.md's project block differs from project.yml: "
        "run `python -m spacy project document . --output README.md`"
    )


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_no_tracked_file_narrates_its_making():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".cfg", ".yml", ".toml", ".txt", ".sh", "") or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf8", errors="replace").splitlines(), 1):
            if NARRATION.search(line.replace('scope="session"', "")) and name != "tests/test_repository.py":
                found.append(f"{name}:{n}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def module_name(path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, name: str):
    """The package modules that `path` (module `name`) imports, anywhere in it (functions included)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("conll_crf"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("conll_crf"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
    return found


def test_modules_are_small_and_free_of_import_cycles():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    too_long = {m: n for m, p in paths.items() if (n := len(p.read_text(encoding="utf8").splitlines())) > 500}
    assert not too_long
    graph = {m: {t for t in imports_of(p, m) if t in paths and t != m} for m, p in paths.items()}
    # a package's __init__ is imported before its modules: an edge to it from inside is no cycle of its own
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_crf_is_pure_torch():
    for path in (PACKAGE / "crf").glob("*.py"):
        modules = {n.split(".")[0] for n in imports_of(path, module_name(path))}
        text = path.read_text(encoding="utf8")
        assert "import spacy" not in text and "from spacy" not in text and "thinc" not in text, path
        assert modules <= {"conll_crf"}, path
