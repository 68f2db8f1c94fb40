"""Drive a real JupyterLab in headless Chromium, as a reader would: open a notebook, run every cell from the menu,
and read back what the page shows (error outputs, images, widgets).

Used by `tests/test_jupyterlab.py`; reusable for widget tests (type a sentence into a text box, wait for an
image to change). Nothing here touches the network: JupyterLab runs on 127.0.0.1 with its news feed and update
check turned off, and Chromium is Debian's `/usr/bin/chromium` driven by playwright (`playwright install` and its
browser download are never used).

    with LabServer(copy_tree(ROOT / "nbs", tmp / "nbs"), env={"IN_TEST": "1"}) as lab, lab_browser() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        run = run_notebook(page, lab, "nbs/04_eval.ipynb")
        assert not run.errors and not run.missing_figures
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Debian's chromium under playwright: no sandbox (containers), no GPU, nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook panel on screen
# A cell "makes a figure" when its source plots (pyplot, a `plot_*`/`.plot(` helper, a `fig`) or displays an image.
FIGURE_RE = re.compile(r"\bplt\.|\bplot_\w*\(|\.plot\(|\bfig\b|\bfigs?\s*=|display\(\s*Image\(")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ---------------------------------------------------------------------------------------------------------------
# What is needed, and where it is
def find_chromium() -> str | None:
    "Debian's chromium (or `$SENCLIP_CHROMIUM`), or None."
    env = os.environ.get("SENCLIP_CHROMIUM")
    for c in ([env] if env else []) + list(CHROMIUM_CANDIDATES):
        if c and Path(c).exists():
            return c
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing_requirements() -> str | None:
    "Why a JupyterLab browser test cannot run here (chromium, playwright or jupyterlab missing), or None."
    missing = []
    if find_chromium() is None:
        missing.append("chromium (Debian package `chromium`, /usr/bin/chromium)")
    for mod, pkg in (("playwright.sync_api", "playwright"), ("jupyterlab", "jupyterlab>=4"),
                     ("ipykernel", "ipykernel")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(f"{pkg} (pip install -e '.[dev,lab]')")
    return ("JupyterLab browser test needs " + ", ".join(missing)) if missing else None


def free_port() -> int:
    "A TCP port on 127.0.0.1 that is free right now."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_tree(src: Path, dst: Path, extra: tuple = ()) -> Path:
    """Copy `src` (e.g. the repository's `nbs/`) to `dst`, without checkpoints and caches, plus `extra` files
    (e.g. `settings.ini`, so a notebook's closing `nbdev_export()` cell finds its configuration) into `dst.parent`.
    Returns `dst.parent`, the folder to serve. Running a copy keeps the working tree untouched whatever the page does."""
    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "_proc"))
    for f in extra:
        shutil.copy2(f, dst.parent / Path(f).name)
    return dst.parent


# ---------------------------------------------------------------------------------------------------------------
# The server
LAB_SETTINGS = {  # user settings written into the server's private settings folder
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},  # never write a notebook back
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},  # every cell in the DOM, scrolled or not
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


class LabServer:
    """A real `jupyter lab` on 127.0.0.1 (a free port, no token, no browser) serving `root`, with its own settings,
    workspaces and runtime folders; `env` is added to the environment its kernels inherit, and names mapped to
    None are removed from it (MPLBACKEND is always removed: figures must reach the page). A context manager; `stop`
    shuts it down through its API, then by signal."""

    def __init__(self, root: Path, env: dict | None = None, startup_timeout: float = 180, settings: dict | None = None):
        self.root = Path(root).resolve()
        self.env_extra = {"MPLBACKEND": None, **(env or {})}
        self.startup_timeout = startup_timeout
        self.settings = {**LAB_SETTINGS, **(settings or {})}
        self.port = None
        self.proc = None
        self.state = Path(tempfile.mkdtemp(prefix="senclip-lab-"))
        self.log_path = self.state / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, rel: str | Path) -> str:
        "The JupyterLab URL that opens notebook `rel` (relative to root) alone (`?reset`: no tabs restored)."
        return f"{self.url}/lab/tree/{Path(rel).as_posix()}?reset"

    def _write_config(self) -> Path:
        for plugin, values in self.settings.items():
            f = self.state / "settings" / f"{plugin}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(values))
        cfg = self.state / "lab_config.py"
        cfg.write_text(
            "c.ServerApp.ip = '127.0.0.1'\n"
            f"c.ServerApp.port = {self.port}\n"
            "c.ServerApp.port_retries = 0\n"
            "c.ServerApp.open_browser = False\n"
            "c.ServerApp.allow_root = True\n"  # containers and CI run as root
            f"c.ServerApp.root_dir = {str(self.root)!r}\n"
            "c.IdentityProvider.token = ''\n"
            "c.PasswordIdentityProvider.hashed_password = ''\n"
            "c.PasswordIdentityProvider.password_required = False\n"
            "c.LabApp.expose_app_in_browser = True\n"  # window.jupyterapp: kernel status, cell models
            "c.LabApp.news_url = None\n"
            "c.LabApp.extension_manager = 'readonly'\n"  # no PyPI queries
            "c.LabApp.check_for_updates_class = 'jupyterlab.handlers.announcements.NeverCheckForUpdate'\n"
            f"c.LabApp.user_settings_dir = {str(self.state / 'settings')!r}\n"
            f"c.LabApp.workspaces_dir = {str(self.state / 'workspaces')!r}\n"
        )
        return cfg

    def start(self) -> "LabServer":
        self.port = free_port()
        cfg = self._write_config()
        env = dict(os.environ)
        for k, v in self.env_extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        env["JUPYTER_RUNTIME_DIR"] = str(self.state / "runtime")
        cmd = [sys.executable, "-m", "jupyterlab", f"--config={cfg}", "--no-browser"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"jupyter lab did not answer on {self.url} within {self.startup_timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> int | None:
        """Shut down the server and its kernels: SIGTERM to the server (it stops its kernels and exits), then
        SIGTERM and SIGKILL to whatever is left of its process group. The server's exit code."""
        if self.proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                self.proc.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
        with contextlib.suppress(ProcessLookupError):  # a kernel that outlived the server
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.state, ignore_errors=True)


@contextlib.contextmanager
def lab_browser(executable: str | None = None):
    "Headless Debian chromium driven by playwright (sync API); yields the Browser."
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable or find_chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------------------------
# The page: JupyterLab's application object (exposed by the server config) and its DOM
_STATE_JS = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell && app.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext || !panel.content.widgets) return null;
  const sc = panel.sessionContext, kernel = sc.session && sc.session.kernel;
  const cells = panel.content.widgets.map((w, i) => {
    const m = w.model;
    if (m.type !== 'code') return {index: i, type: m.type};
    const p = w.node.querySelector('.jp-InputPrompt');
    let errors = 0;
    for (let j = 0; j < m.outputs.length; j++) if (m.outputs.get(j).type === 'error') errors++;
    return {index: i, type: 'code', count: m.executionCount, prompt: p ? p.textContent.trim() : '', errors};
  });
  return {ready: sc.isReady, status: kernel ? kernel.status : null, kernel: kernel ? kernel.name : null,
          path: panel.context.path, dirty: panel.context.model.dirty, cells};
}"""

_COLLECT_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  return panel.content.widgets.map((w, i) => {
    const m = w.model;
    const r = {index: i, type: m.type, source: m.sharedModel.getSource()};
    if (m.type !== 'code') return r;
    r.count = m.executionCount;
    r.outputs = [];
    for (let j = 0; j < m.outputs.length; j++) {
      const o = m.outputs.get(j).toJSON();
      const text = o.text === undefined ? undefined : (Array.isArray(o.text) ? o.text.join('') : o.text);
      const plain = o.data && o.data['text/plain'];
      r.outputs.push({output_type: o.output_type, name: o.name, ename: o.ename, evalue: o.evalue,
                      traceback: o.traceback ? o.traceback.join('\\n') : undefined,
                      text: text !== undefined ? text : (Array.isArray(plain) ? plain.join('') : plain),
                      mimes: o.data ? Object.keys(o.data) : []});
    }
    r.images = [...w.node.querySelectorAll('.jp-Cell-outputWrapper img')].map(img => ({
      src: img.currentSrc || img.src, width: img.naturalWidth, height: img.naturalHeight, complete: img.complete,
      shown: img.getBoundingClientRect().width}));
    r.stderr = [...w.node.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(e => e.textContent);
    return r;
  });
}"""


def lab_state(page) -> dict | None:
    "Kernel status, whether the document is modified, and each cell's execution count and prompt."
    return page.evaluate(_STATE_JS)


def _kernel_dialog(page):
    d = page.locator(".jp-Dialog")
    return d if d.count() and d.first.is_visible() else None


def choose_kernel(page, dialog, want: str = "Python 3") -> str:
    "Answer JupyterLab's 'Select Kernel' dialog with the kernel whose label contains `want`; its title."
    title = dialog.locator(".jp-Dialog-header").inner_text().strip()
    if "kernel" not in title.lower():
        raise AssertionError(f"unexpected JupyterLab dialog {title!r}: {dialog.inner_text()[:500]}")
    select = dialog.locator("select")
    if select.count():
        labels = select.first.locator("option").all_inner_texts()
        pick = next((t for t in labels if want.lower() in t.lower()), None)
        if pick is None:
            raise AssertionError(f"dialog {title!r} offers no {want!r} kernel: {labels}")
        select.first.select_option(label=pick)
    dialog.locator(".jp-Dialog-button.jp-mod-accept").first.click()
    return title


def open_notebook(page, lab: LabServer, rel: str | Path, timeout: float = 180) -> dict:
    """Open notebook `rel` and wait for its kernel to be idle, answering a 'Select Kernel' dialog with Python 3 if
    one appears. Returns {'kernel_dialog': title or None, 'dirty_on_open': bool, 'kernel': name, 'seconds': ...}."""
    t0 = time.time()
    page.goto(lab.notebook_url(rel), wait_until="domcontentloaded")
    dialog_title = None
    deadline = t0 + timeout
    while time.time() < deadline:
        d = _kernel_dialog(page)
        if d is not None:
            dialog_title = choose_kernel(page, d)
            continue
        st = lab_state(page)
        if st and st["path"].endswith(Path(rel).name) and st["ready"] and st["status"] == "idle":
            page.wait_for_timeout(500)  # a dialog may still follow the first idle
            if _kernel_dialog(page) is None:
                return {"kernel_dialog": dialog_title, "dirty_on_open": st["dirty"], "kernel": st["kernel"],
                        "seconds": time.time() - t0}
        page.wait_for_timeout(250)
    raise TimeoutError(f"{rel}: no idle kernel after {timeout} s (state {lab_state(page)})")


def menu(page, menu_label: str, command: str):
    "Click a menu-bar menu (e.g. 'Run') and its item for a JupyterLab command id (e.g. 'notebook:run-all-cells')."
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^\s*{re.escape(menu_label)}\s*$")).first.click()
    item = page.locator(f'.lm-Menu-item[data-command="{command}"]').first
    item.wait_for(state="visible", timeout=10_000)
    item.click()


def run_all_cells(page):
    "Clear every output (Edit menu), then Run > Run All Cells, as a reader would."
    menu(page, "Edit", "editmenu:clear-all")
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.widgets"
        ".every(w => w.model.type !== 'code' || w.model.executionCount === null)", timeout=10_000)
    menu(page, "Run", "runmenu:run-all")


def wait_until_done(page, timeout: float = 1200, settle: float = 2.0) -> dict:
    """Wait until the kernel is idle, no cell is queued or running ('[*]'), and every code cell has an execution
    count (or a cell failed, which stops Run All): stable for `settle` seconds. Returns the final lab_state."""
    deadline = time.time() + timeout
    stable_since = None
    st = None
    while time.time() < deadline:
        st = lab_state(page)
        if st and st["status"] == "dead":
            raise RuntimeError(f"{st['path']}: the kernel died (out of memory?) while running the cells")
        code = [c for c in st["cells"] if c["type"] == "code"] if st else []
        done = bool(st) and st["status"] == "idle" and not any("*" in c["prompt"] for c in code) and (
            all(c["count"] is not None for c in code) or any(c["errors"] for c in code))
        if done:
            stable_since = stable_since or time.time()
            if time.time() - stable_since >= settle:
                return st
        else:
            stable_since = None
        page.wait_for_timeout(500)
    raise TimeoutError(f"cells still running after {timeout} s: {st}")


def wait_images_loaded(page, timeout: float = 30):
    "Wait until every image in the notebook's outputs has finished loading (or failed)."
    with contextlib.suppress(Exception):
        page.wait_for_function(
            f"() => [...document.querySelectorAll('{NOTEBOOK} .jp-Cell-outputWrapper img')].every(i => i.complete)",
            timeout=timeout * 1000)


@dataclass
class CellResult:
    index: int
    source: str
    count: int | None
    errors: list = field(default_factory=list)  # 'ename: evalue' + traceback text, for each error output
    stderr_tracebacks: list = field(default_factory=list)  # stderr outputs containing a traceback
    images: list = field(default_factory=list)  # {'src', 'width', 'height', ...} of each <img> in the outputs
    makes_figure: bool = False
    text: str = ""  # the stream and text/plain outputs, concatenated

    @property
    def loaded_images(self) -> list:
        return [i for i in self.images if i["width"] > 0 and i["height"] > 0]


@dataclass
class NotebookRun:
    path: str
    kernel_dialog: str | None  # the dialog's title if JupyterLab asked for a kernel (the notebook has no kernelspec)
    dirty_on_open: bool  # JupyterLab marked the notebook modified as soon as it opened it
    seconds: float  # Run All to idle
    cells: list  # CellResult per code cell
    screenshot: Path | None = None
    figure_shots: list = field(default_factory=list)
    console_errors: list = field(default_factory=list)

    @property
    def errors(self) -> list:
        "[(cell index, text)] for each error output and each stderr traceback."
        return [(c.index, e) for c in self.cells for e in c.errors + c.stderr_tracebacks]

    @property
    def not_run(self) -> list:
        return [c.index for c in self.cells if c.count is None]

    @property
    def missing_figures(self) -> list:
        "[(cell index, first source line)] of figure cells without a loaded image."
        return [(c.index, c.source.strip().splitlines()[0] if c.source.strip() else "")
                for c in self.cells if c.makes_figure and not c.loaded_images]

    def summary(self) -> str:
        figs = [c for c in self.cells if c.makes_figure]
        lines = [f"{self.path}: {self.seconds:.0f} s to run all, {len(self.cells)} code cells, "
                 f"kernel dialog: {self.kernel_dialog or 'no'}, modified on open: {self.dirty_on_open}, "
                 f"figure cells {[c.index for c in figs]} with images "
                 f"{[len(c.loaded_images) for c in figs]}, screenshot {self.screenshot}"]
        for i, e in self.errors:
            lines.append(f"  cell {i} ERROR: {e[:1500]}")
        for i, s in self.missing_figures:
            lines.append(f"  cell {i} makes a figure but shows no image: {s}")
        if self.not_run:
            lines.append(f"  cells not run: {self.not_run}")
        return "\n".join(lines)


def is_figure_cell(source: str) -> bool:
    "Source that should leave a picture under the cell: plotting or displaying an image, not defining a function."
    first = source.lstrip().splitlines()[0] if source.strip() else ""
    if re.match(r"#\|\s*exports?\b", first):  # exported cells define plotting code, they do not run it
        return False
    return bool(FIGURE_RE.search(source))


def collect_cells(page) -> list[CellResult]:
    "Each code cell's error outputs, stderr tracebacks and <img> outputs as the page shows them."
    wait_images_loaded(page)
    out = []
    for c in page.evaluate(_COLLECT_JS):
        if c["type"] != "code":
            continue
        errs = [ANSI_RE.sub("", f"{o.get('ename')}: {o.get('evalue')}\n{o.get('traceback') or ''}")
                for o in c["outputs"] if o["output_type"] == "error"]
        tbs = [ANSI_RE.sub("", s) for s in c["stderr"] if "Traceback" in s]
        tbs = [t for t in tbs if not any(t.strip()[:200] in e for e in errs)]  # an error output renders as stderr too
        text = "".join(o["text"] or "" for o in c["outputs"] if o["output_type"] != "error")
        out.append(CellResult(c["index"], c["source"], c["count"], errs, tbs, c["images"],
                              is_figure_cell(c["source"]), text))
    return out


def cell_locator(page, index: int):
    "The cell at notebook index `index` (all cells are in the DOM: windowing mode 'none')."
    return page.locator(f"{NOTEBOOK} .jp-Notebook .jp-Cell").nth(index)


def find_cell(page, contains: str) -> int:
    "Index of the first cell whose source contains `contains`."
    i = page.evaluate("(s) => window.jupyterapp.shell.currentWidget.content.widgets"
                      ".findIndex(w => w.model.sharedModel.getSource().includes(s))", contains)
    if i < 0:
        raise LookupError(f"no cell contains {contains!r}")
    return i


def shutdown_kernel(page):
    "Shut down the current notebook's kernel (JupyterLab keeps it running after the page closes otherwise)."
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")


def run_notebook(page, lab: LabServer, rel: str | Path, shots: Path | None = None, timeout: float = 1200,
                 shutdown: bool = True) -> NotebookRun:
    """Open `rel` in JupyterLab, clear and run all cells from the menus, wait for the kernel, and collect what each
    code cell shows. With `shots`, save `<stem>.png` (the window scrolled to the first figure, as a reader sees it)
    and `<stem>_cell<i>.png` for each figure cell. With `shutdown`, stop the kernel at the end (keep it for widget
    tests that interact with the executed notebook)."""
    console = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    opened = open_notebook(page, lab, rel)
    t0 = time.time()
    run_all_cells(page)
    wait_until_done(page, timeout=timeout)
    seconds = time.time() - t0
    cells = collect_cells(page)
    run = NotebookRun(str(rel), opened["kernel_dialog"], opened["dirty_on_open"], seconds, cells,
                      console_errors=console)
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        stem = Path(rel).stem
        figs = [c for c in cells if c.makes_figure and c.loaded_images]
        for c in figs:
            loc = cell_locator(page, c.index)
            loc.scroll_into_view_if_needed()
            p = shots / f"{stem}_cell{c.index}.png"
            loc.screenshot(path=str(p))
            run.figure_shots.append(p)
        if figs:
            cell_locator(page, figs[0].index).evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)
        run.screenshot = shots / f"{stem}.png"
        page.screenshot(path=str(run.screenshot))
    if shutdown:
        shutdown_kernel(page)
    return run


# ---------------------------------------------------------------------------------------------------------------
# Widgets (ipywidgets): type into a text box, read an output image
WIDGET_TEXT = ".widget-text input, .widget-textarea textarea, .jupyter-widgets input[type='text'], .jupyter-widgets textarea"


def type_into_widget(page, text: str, cell: int | None = None, index: int = 0, submit: bool = True):
    """Type `text` into the `index`-th ipywidgets text box (Text/Textarea), in cell `cell` or anywhere in the
    notebook; with `submit`, press Enter (Text's on_submit, and `continuous_update=False` boxes) and leave the box."""
    scope = cell_locator(page, cell) if cell is not None else page.locator(NOTEBOOK)
    box = scope.locator(WIDGET_TEXT).nth(index)
    box.wait_for(state="visible", timeout=30_000)
    box.fill("")
    box.type(text)  # key by key: every input event, as a person typing
    if submit:
        box.press("Enter")
        box.evaluate("e => e.blur()")
    return box


def output_image_srcs(page, cell: int) -> list[str]:
    "The `src` of every image in cell `cell`'s outputs (rich outputs, widget Output areas and Image widgets)."
    return cell_locator(page, cell).locator(".jp-Cell-outputWrapper img").evaluate_all(
        "imgs => imgs.map(i => i.currentSrc || i.src)")


def output_image_src(page, cell: int, index: int = 0) -> str | None:
    "The `src` of the `index`-th image in cell `cell`'s outputs, or None."
    srcs = output_image_srcs(page, cell)
    return srcs[index] if len(srcs) > index else None


def wait_for_image_change(page, cell: int, old: str | None, index: int = 0, timeout: float = 60) -> str:
    "Wait until the `index`-th output image of `cell` has a loaded src different from `old`; the new src."
    deadline = time.time() + timeout
    while time.time() < deadline:
        src = output_image_src(page, cell, index)
        if src and src != old:
            ok = cell_locator(page, cell).locator(".jp-Cell-outputWrapper img").nth(index).evaluate(
                "i => i.complete && i.naturalWidth > 0")
            if ok:
                return src
        page.wait_for_timeout(250)
    raise TimeoutError(f"cell {cell}: output image {index} did not change within {timeout} s")


def wait_kernel_idle(page, timeout: float = 120, settle: float = 1.0):
    "Wait until the current notebook's kernel is idle for `settle` seconds (e.g. after a widget callback)."
    deadline = time.time() + timeout
    since = None
    while time.time() < deadline:
        st = lab_state(page)
        if st and st["status"] == "idle":
            since = since or time.time()
            if time.time() - since >= settle:
                return st
        else:
            since = None
        page.wait_for_timeout(200)
    raise TimeoutError(f"kernel not idle after {timeout} s")
