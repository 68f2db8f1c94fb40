"""The shape of the code (issue 12): exported notebook cells (lines, top-level definitions) and functions over a
length limit in the package. `python tests/code_shape.py [-v]` prints the figures; tests/test_code_shape.py keeps them."""
import ast
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def exported_cells(nbs: Path = ROOT / "nbs") -> list[dict]:
    "Every `#| export` cell of the library notebooks: notebook, index, lines (directives aside), top-level definitions."
    out = []
    for nb in sorted(nbs.glob("*.ipynb")):
        for i, c in enumerate(json.loads(nb.read_text())["cells"]):
            src = "".join(c["source"])
            if c["cell_type"] != "code" or not re.search(r"^#\|\s*export", src, re.M):
                continue
            lines = [ln for ln in src.splitlines() if not ln.startswith("#|")]
            defs = sum(isinstance(n, DEFS) for n in ast.parse(src).body)
            out.append(dict(notebook=nb.name, cell=i, lines=len(lines), defs=defs))
    return out


def long_functions(limit: int = 80, pkg: Path = ROOT / "senclip") -> list[tuple[int, str, str]]:
    "(lines, file, name) of every function or method in the package longer than `limit` lines (generated _modidx aside)."
    out = []
    for f in sorted(pkg.rglob("*.py")):
        if f.name == "_modidx.py":
            continue
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > limit:
                out.append((n.end_lineno - n.lineno + 1, str(f.relative_to(ROOT)), n.name))
    return sorted(out, reverse=True)


if __name__ == "__main__":
    cells = exported_cells()
    print(f"exported cells {len(cells)}, median lines {statistics.median(c['lines'] for c in cells)}, "
          f"definitions per cell {sum(c['defs'] for c in cells) / len(cells):.2f} (max {max(c['defs'] for c in cells)})")
    print(f"functions over 80 lines: {long_functions()}")
    if "-v" in sys.argv:
        for c in sorted(cells, key=lambda c: -c["lines"])[:20]:
            print(f"  {c['lines']:4d} lines  {c['defs']} defs  {c['notebook']} cell {c['cell']}")
