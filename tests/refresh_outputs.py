"""Refresh the outputs kept in the library notebooks (maintainers; `make outputs`).

Each notebook runs as `nbdev_test` runs it -- working directory `nbs/`, `IN_TEST=1` (the notebooks switch to
`data/sample`), `HF_HUB_OFFLINE=1`, cells flagged `#| slow`/`#| cuda` or `#| eval: false` skipped, the closing
`nbdev_export()` cell not run -- in its own process, through execnb's `CaptureShell` with matplotlib's inline
backend, so every figure comes back as a PNG. Then only what a reader wants is kept:

- images (`image/png`), re-encoded small: figures are drawn at `--dpi` (80) and a PNG over `--max_kb` (60 KB) is
  quantised to a palette, then shrunk, keeping the size it is shown at;
- tables (`text/html`, `text/markdown`) and short text results (`text/plain`);
- short printed results, line by line: progress bars, warnings, temporary and home paths, timings and addresses
  are dropped, and stderr is dropped whole;
- never errors (a notebook that fails is left as it was and the script exits non-zero), never execution counts.

Only outputs change: the cells' sources and metadata are copied from the notebook on disk, and the script refuses
to write a notebook whose sources changed while it ran. The notebook is written the way `nbdev_clean` writes it, so
`nbdev_clean` leaves it as it is (checked with `--check`, which also fails on an image over the limit).

    .venv/bin/python tests/refresh_outputs.py                       # every library notebook in nbs/
    .venv/bin/python tests/refresh_outputs.py nbs/05_mapping.ipynb  # some
    .venv/bin/python tests/refresh_outputs.py --check               # nothing run: sizes and nbdev_clean stability
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
KEEP_DATA = ("image/png", "text/html", "text/markdown", "text/plain")
MAX_TEXT_LINES = 40  # a text/plain result or a printed block longer than this is not a result a reader wants
MAX_LINE = 400  # a longer printed line is a dump, not a result

# A printed line that is machine-specific or noise: progress bars, warnings, paths of this machine, timings.
_NOISE = re.compile(
    r"\r|it/s\]|s/it\]|\d+%\|"  # tqdm
    r"|warn|deprecat|traceback"  # warnings (any case, see the flag below)
    r"|/tmp/|/var/folders/|/home/|/root/|/work/|/Users/|[A-Za-z]:\\\\"  # temporary and home paths
    r"|\bpid\b|https?://(127\.0\.0\.1|localhost)|0x[0-9a-f]{6,}"  # processes, local servers, addresses
    r"|\d+(\.\d+)?\s*(s|sec|seconds|ms|min)\b(?!\w)|\btook\b|\belapsed\b|\d+:\d\d:\d\d"  # timings
    r"|\w/s\b|\d(\.\d+)?\s?x\b(?! ?\d)|\bspeed\b"  # throughputs and speed-ups
    r"|\bcuda:\d|device\(type=|\bGiB\b|\bMiB\b",  # devices, memory
    re.IGNORECASE,
)


def _text(v) -> str:
    return "".join(v) if isinstance(v, list) else (v or "")


def _lines(s: str) -> list[str]:
    "A string as the list of lines a notebook stores (each but the last ending in a newline)."
    return s.splitlines(keepends=True)


def clean_stream(text: str) -> str:
    "The lines of a printed block a reader wants ('' when none is left or the block is a dump)."
    keep = [ln for ln in text.splitlines() if ln.strip() and not _NOISE.search(ln) and len(ln) <= MAX_LINE]
    return "\n".join(keep) + "\n" if keep and len(keep) <= MAX_TEXT_LINES else ""


def shrink_png(b64: str, max_kb: float, meta: dict) -> tuple[str, dict]:
    "A PNG (base64) over `max_kb` re-encoded with a palette, then shrunk; shown at the same size (metadata width)."
    from PIL import Image

    raw = base64.b64decode(b64)
    if len(raw) <= max_kb * 1024:
        return b64, meta
    im = Image.open(io.BytesIO(raw))
    im.load()
    shown_w = int(meta.get("width", im.width))
    shown_h = int(meta.get("height", im.height)) if "height" in meta else None
    best, scale = raw, 1.0
    while True:
        cur = im if scale == 1.0 else im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                                               Image.LANCZOS)
        flat = Image.new("RGB", cur.size, "white")  # figures are drawn on white: no alpha to keep
        flat.paste(cur, mask=cur.convert("RGBA").getchannel("A"))
        q = flat.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        q.save(buf, format="PNG", optimize=True)
        if len(buf.getvalue()) < len(best):
            best = buf.getvalue()
        if len(best) <= max_kb * 1024 or scale < 0.3:
            break
        scale *= 0.85
    meta = dict(meta)
    if scale != 1.0 or shown_w != im.width:
        meta["width"] = shown_w  # shown at the size it had, not at the smaller pixel size
        if shown_h:
            meta["height"] = shown_h
    return base64.b64encode(best).decode(), meta


def keep_outputs(outputs: list[dict], max_kb: float) -> list[dict]:
    "The outputs of one cell a reader wants, small and free of machine-specific text."
    kept = []
    for o in outputs:
        t = o.get("output_type")
        if t == "stream":
            if o.get("name") != "stdout":
                continue
            s = clean_stream(_text(o.get("text")))
            if s:
                if kept and kept[-1]["output_type"] == "stream":  # one printed block, as Jupyter shows it
                    kept[-1]["text"] = _lines(_text(kept[-1]["text"]) + s)
                else:
                    kept.append({"name": "stdout", "output_type": "stream", "text": _lines(s)})
        elif t in ("display_data", "execute_result"):
            data = {k: v for k, v in o.get("data", {}).items() if k in KEEP_DATA}
            meta = {k: v for k, v in (o.get("metadata") or {}).items() if k in data}
            if "image/png" in data:
                b64, m = shrink_png(_text(data["image/png"]).strip(), max_kb, meta.get("image/png", {}))
                data["image/png"] = b64
                if m:
                    meta["image/png"] = m
            plain = _text(data.get("text/plain"))
            if plain and (len(plain.splitlines()) > MAX_TEXT_LINES or _NOISE.search(plain)) and len(data) == 1:
                continue  # a long or machine-specific repr and nothing else
            if plain and _NOISE.search(plain) and len(data) > 1:
                data.pop("text/plain")
            if not data:
                continue
            for k in list(data):
                if k.startswith("text/"):
                    data[k] = _lines(_text(data[k]))
            out = {"data": data, "metadata": meta, "output_type": t}
            if t == "execute_result":
                out["execution_count"] = None
            kept.append(out)
    return kept


def _worker(src: str, dest: str, dpi: int, timeout: int) -> int:
    "Run one notebook as nbdev_test does (in this process) and write it, with every output, to `dest`."
    os.environ.update(IN_TEST="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    from nbdev.process import NBProcessor

    fn = Path(src).resolve()
    flags = set(get_config().tst_flags.split())
    nb = NBProcessor(fn, process=True).nb

    def _no_eval(cell):  # nbdev.test.test_nb's rule
        if cell.cell_type != "code" or "nbdev_export" + "(" in cell.source:
            return True
        direc = getattr(cell, "directives_", {}) or {}
        if direc.get("eval:", [""])[0].lower() == "false":
            return True
        return bool(flags & direc.keys())

    shell = CaptureShell(fn, mpl_format="png")
    shell.run_cell(f"from matplotlib_inline.backend_inline import set_matplotlib_formats\n"
                   f"set_matplotlib_formats('png', dpi={dpi})\n"
                   f"import matplotlib as _mpl; _mpl.rcParams['savefig.dpi'] = {dpi}\n"
                   f"import warnings as _w; _w.simplefilter('ignore')")
    try:
        with working_directory(fn.parent):
            shell.run_all(nb, exc_stop=True, preproc=_no_eval)
    except BaseException:
        sys.stderr.write(shell.prettytb(fname=fn) + "\n")
        return 1
    ran = [dict(c) for c in nb.cells]
    Path(dest).write_text(json.dumps([{"idx": c.get("idx_"), "cell_type": c.get("cell_type"),
                                       "outputs": json.loads(json.dumps(c.get("outputs", []), default=dict))}
                                      for c in ran]))
    return 0


def _write_clean(nb: dict, path: Path) -> None:
    "Write `nb` as nbdev_clean would (its settings from settings.ini)."
    from execnb.nbio import dict2nb, write_nb
    from nbdev.clean import _nbdev_clean

    nb = dict2nb(nb)
    _nbdev_clean(nb)
    write_nb(nb, path)


def refresh(path: Path, dpi: int, max_kb: float, timeout: int, dest: Path | None = None) -> tuple[bool, str]:
    "Run one notebook in a fresh process and replace its outputs by the ones a reader wants (in `dest`/ if given)."
    path = path.resolve()
    before = path.read_text(encoding="utf-8")
    tmp = path.with_name(f".{path.stem}.outputs.json")
    t0 = time.time()
    try:
        r = subprocess.run([sys.executable, __file__, "--_worker", str(path), str(tmp), "--dpi", str(dpi)],
                           cwd=path.parent, timeout=timeout, capture_output=True, text=True)
        if r.returncode:
            return False, f"failed ({time.time() - t0:.0f} s), outputs left as they were:\n{r.stderr[-3000:]}"
        ran = json.loads(tmp.read_text())
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s, outputs left as they were"
    finally:
        tmp.unlink(missing_ok=True)
    if path.read_text(encoding="utf-8") != before:
        return False, "changed on disk while it ran: not written"
    nb = json.loads(before)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    ran_code = [r for r, c in zip(ran, nb["cells"]) if c["cell_type"] == "code"]
    if [r["cell_type"] for r in ran] != [c["cell_type"] for c in nb["cells"]]:
        return False, "the executed copy does not match the notebook's cells: not written"
    n_img = 0
    for c, r in zip(code, ran_code):
        c["outputs"] = keep_outputs(r["outputs"], max_kb)
        c["execution_count"] = None
        n_img += sum("image/png" in o.get("data", {}) for o in c["outputs"])
    out = Path(dest) / path.name if dest else path
    _write_clean(nb, out)
    return True, f"{time.time() - t0:.0f} s, {n_img} images, {out.stat().st_size / 1024:.0f} KB"


def check(path: Path, max_kb: float) -> list[str]:
    "Problems of a notebook's kept outputs: an image over the limit, or a file nbdev_clean would change."
    from execnb.nbio import dict2nb, nb2str
    from nbdev.clean import _nbdev_clean

    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    bad = []
    for i, c in enumerate(nb["cells"]):
        for o in c.get("outputs", []):
            png = o.get("data", {}).get("image/png")
            if png and len(base64.b64decode(_text(png))) > max_kb * 1024 * 1.5:
                bad.append(f"cell {i}: a {len(base64.b64decode(_text(png))) // 1024} KB image")
            if o.get("output_type") == "error":
                bad.append(f"cell {i}: an error output")
    cleaned = dict2nb(json.loads(text))
    _nbdev_clean(cleaned)
    if nb2str(cleaned) != text:
        bad.append("nbdev_clean would change it")
    return bad


def library_notebooks() -> list[Path]:
    "The library notebooks: nbs/*.ipynb (the papermill figure notebooks in nbs/paper/ keep their runs in runs/)."
    return sorted(NBS.glob("*.ipynb"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: nbs/*.ipynb)")
    ap.add_argument("--dpi", type=int, default=80, help="dots per inch of the inline figures")
    ap.add_argument("--max_kb", type=float, default=60, help="a PNG over this is quantised, then shrunk")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per notebook")
    ap.add_argument("--dest", type=Path, help="write the refreshed notebooks into this folder (default: in place)")
    ap.add_argument("--check", action="store_true", help="run nothing: image sizes and nbdev_clean stability")
    ap.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._worker:
        return _worker(*a._worker, dpi=a.dpi, timeout=a.timeout)
    nbs = a.notebooks or library_notebooks()
    failed = 0
    for p in nbs:
        if a.check:
            bad = check(p, a.max_kb)
            print(f"{p}: {'ok' if not bad else '; '.join(bad)}", flush=True)
        else:
            ok, msg = refresh(p, a.dpi, a.max_kb, a.timeout, a.dest)
            bad = [] if ok else [msg]
            print(f"{p}: {msg}", flush=True)
        failed += bool(bad)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
