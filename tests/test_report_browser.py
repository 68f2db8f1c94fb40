"""The `senclip_paper` report opened in a real browser (headless Chromium driven by playwright): every image loads
and the page renders. Skipped, saying why, only where Chromium or playwright is missing (CI installs both:
`apt-get install -y chromium` and `pip install playwright`; playwright's own browser download is not needed).

Set SENCLIP_REPORT=<index.html> to check an existing report (e.g. runs/demo/index.html) instead of the small one
built here, and SENCLIP_REPORT_PNG=<file> to keep the screenshot (the README's nbs/images/report.png)."""
import os
import shutil
from pathlib import Path

import pytest

from senclip.paper import _figure_steps, run_steps, write_report, write_results

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("SENCLIP_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; CI's .ci/run installs it)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set SENCLIP_CHROMIUM)")
    return sync_playwright


def _fixture_report(run: Path) -> Path:
    "A report of the Table 1, Table A.1 and Fig. 2 notebooks run by the runner on tests/data/paper_eval."
    fx = ROOT / "tests" / "data" / "paper_eval"
    ctx = dict(eval=str(fx / "eval"), eval_dirs=[str(fx / d) for d in ("eval", "eval_short", "eval_long")],
               eval_steps=[], demo=True, run=str(run))
    settings = dict(notebooks="table1,tableA1_prompt_length,fig2_prompt_count")
    steps = _figure_steps(run, ROOT / "nbs", settings, {}, ctx)
    for s in steps:
        s.deps = []  # the evaluation is the fixture, not a step of this run
    records = run_steps(steps, run, log=lambda s: None)
    res = write_results(run, "browser-test", "demo", settings, {}, {}, records, 0.0)
    assert not res["failed"], [(r["step"], r["error"]) for r in records]
    return write_report(run, res)


@pytest.mark.slow
def test_report_renders_every_image(tmp_path):
    sync_playwright = _browser_or_skip()
    page_path = Path(os.environ["SENCLIP_REPORT"]).resolve() if os.environ.get("SENCLIP_REPORT") else _fixture_report(tmp_path / "run")
    shot = Path(os.environ.get("SENCLIP_REPORT_PNG") or tmp_path / "report.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            failed = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(page_path.as_uri(), wait_until="load")
            imgs = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.getAttribute('src'), ok: e.complete && e.naturalWidth > 0}))")
            assert imgs, "the report shows no image"
            assert all(i["ok"] for i in imgs), [i["src"] for i in imgs if not i["ok"]]
            assert not failed, failed
            assert page.locator("table").count() >= 3  # the tables come from the CSVs
            assert "NOT A RESULT" in page.inner_text(".stamp >> nth=0")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
