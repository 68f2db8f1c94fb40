"""`senclip_paper`: the step runner (fingerprints, skipping, continuing past a failed notebook) on tiny notebooks,
the figure notebooks' parameters, and the demo preset end to end (slow)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from senclip.paper import Step, execute_notebook, run_steps, write_report, write_results

ROOT = Path(__file__).resolve().parent.parent
PAPER_NBS = sorted((ROOT / "nbs" / "paper").glob("*.ipynb"))


def _tiny_notebook(path: Path, body: str):
    "A notebook with a tagged `parameters` cell (out, value) and `body`."
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    params = nbformat.v4.new_code_cell('out = ""\nvalue = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# Tiny {path.stem}"), params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


FIG = """
from pathlib import Path
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
o = Path(out); o.mkdir(parents=True, exist_ok=True)
fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, value]); fig.savefig(o / "line.png")
(o / "numbers.csv").write_text(f"x,y\\n0,{value}\\n")
"""


def _nb_step(nbs: Path, run: Path, name: str, value: int = 1, deps=()) -> Step:
    folder = run / "paper" / name
    params = {"out": str(folder), "value": value}

    def go():
        return {**execute_notebook(nbs / f"{name}.ipynb", run / "notebooks" / f"{name}.ipynb", params), "folder": str(folder)}

    return Step(name, go, params, deps=list(deps), notebook=str(nbs / f"{name}.ipynb"))


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_skip_unchanged_and_continue_past_failure(tmp_path):
    nbs, run = tmp_path / "nbs", tmp_path / "run"
    nbs.mkdir()
    _tiny_notebook(nbs / "good.ipynb", FIG)
    _tiny_notebook(nbs / "bad.ipynb", 'raise ValueError("no sweep.csv in the evaluation run")')
    _tiny_notebook(nbs / "after_bad.ipynb", FIG)
    steps = lambda v=1: [_nb_step(nbs, run, "good", v), _nb_step(nbs, run, "bad"), _nb_step(nbs, run, "after_bad", deps=["bad"])]
    r = run_steps(steps(), run, log=lambda s: None)
    assert [x["status"] for x in r] == ["ran", "failed", "blocked"]
    assert "ValueError: no sweep.csv" in r[1]["error"] and "needs bad" in r[2]["error"]
    assert (run / "notebooks" / "bad.ipynb").exists()  # the partly executed notebook is kept for reading
    res = write_results(run, "tiny", "demo", {}, {}, {}, r, 1.0)
    assert res["failed"] == ["bad"] and res["figures"] == ["paper/good/line.png"]
    assert res["tables"]["paper/good/numbers.csv"] == [{"x": 0, "y": 1}]
    page = write_report(run, res).read_text()
    assert "<img src='paper/good/line.png'" in page and "Failed steps: bad" in page and "ValueError" in page
    # second run: the unchanged notebook is skipped, the failed one is tried again
    r = run_steps(steps(), run, log=lambda s: None)
    assert [x["status"] for x in r] == ["unchanged", "failed", "blocked"]
    # a changed source cell reruns the notebook (parameters: see nbs/08_paper.ipynb); cleaning outputs does not
    good = lambda: [steps()[0]]
    _tiny_notebook(nbs / "good.ipynb", FIG + "\nprint('changed')")
    assert run_steps(good(), run, log=lambda s: None)[0]["status"] == "ran"
    nb = json.loads((nbs / "good.ipynb").read_text())
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "kept output"}]
    (nbs / "good.ipynb").write_text(json.dumps(nb))
    assert run_steps(good(), run, log=lambda s: None)[0]["status"] == "unchanged"
    # outputs deleted behind the runner's back: rerun
    (run / "notebooks" / "good.ipynb").unlink()
    assert run_steps(good(), run, log=lambda s: None)[0]["status"] == "ran"


@pytest.mark.parametrize("nb", PAPER_NBS, ids=[p.stem for p in PAPER_NBS])
def test_paper_notebooks_declare_parameters(nb):
    "papermill sees every parameter of the tagged cell (a comment it cannot parse silently drops the -p value)."
    params = pm.inspect_notebook(str(nb))
    assert "demo" in params, f"{nb.name}: no `demo` parameter in a cell tagged 'parameters'"
    src = next("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    names = [ln.split("=")[0].strip() for ln in src.splitlines() if "=" in ln and not ln.startswith((" ", "#"))]
    assert set(names) <= set(params), f"{nb.name}: papermill cannot parse {sorted(set(names) - set(params))}"


def _cli(tmp_path) -> list[str]:
    "The command line of `senclip_paper` (the console script's entry point, whether or not it is installed)."
    exe = Path(sys.executable).parent / "senclip_paper"
    if exe.exists():
        return [str(exe)]
    script = tmp_path / "senclip_paper_cli.py"
    script.write_text("from senclip.paper import senclip_paper\nsenclip_paper()\n")
    return [sys.executable, str(script)]


def test_cli_one_line_error(tmp_path):
    "The paper preset without pairs: one line naming the setting and the fix, exit status 1."
    r = subprocess.run(_cli(tmp_path) + ["--preset", "paper", "--out", str(tmp_path / "p")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pairs_config" in lines[0] and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run(_cli(tmp_path) + ["--preset", "demo", "--out", str(tmp_path / "d"), "--set", "nope=1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "unknown key 'nope'" in r.stderr, r.stderr
    r = subprocess.run(_cli(tmp_path) + ["--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--set" in r.stdout and "--preset" in r.stdout


@pytest.mark.slow
def test_demo_preset_end_to_end(tmp_path):
    "The demo preset offline on data/sample: every step, results.json, index.html; a second run skips everything."
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "SENCLIP_CACHE": str(tmp_path / "cache")}
    cmd = _cli(tmp_path) + ["--preset", "demo", "--out", str(out), "--set", "eval.n_boot=20"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    res = json.loads((out / "results.json").read_text())
    status = {s["step"]: (s["status"], s["error"]) for s in res["steps"]}
    assert r.returncode == 0 and not res["failed"], (status, r.stderr[-2000:])
    assert {"pairs", "train", "eval", "eval_short", "eval_long", "map", "table1", "tableA1_prompt_length",
            "fig2_prompt_count"} <= set(status)
    assert all(s == "ran" for s, _ in status.values()), status
    assert res["not_a_result"] and res["commit"] and res["preset"] == "demo"
    assert {p.stem for p in PAPER_NBS} <= {p.stem for p in (out / "notebooks").glob("*.ipynb")}
    for rel in res["figures"]:
        assert (out / rel).stat().st_size > 0
    assert any(f.endswith("table1/table1.png") for f in res["figures"]) and any(f.startswith("map/") for f in res["figures"])
    assert any(k.endswith("tableA1_prompt_length.csv") for k in res["tables"])
    page = (out / "index.html").read_text()
    assert page.count("<img ") == len(res["figures"]) and "NOT A RESULT" in page and res["commit"] in page
    # second run: nothing changed, every step is skipped
    r2 = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    res2 = json.loads((out / "results.json").read_text())
    assert r2.returncode == 0 and all(s["status"] == "unchanged" for s in res2["steps"]), r2.stdout[-2000:]
    # a notebook parameter changed on the command line reruns that notebook only
    r3 = subprocess.run(cmd + ["fig2_prompt_count.demo=false"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    ran = [s["step"] for s in json.loads((out / "results.json").read_text())["steps"] if s["status"] == "ran"]
    assert r3.returncode == 0 and ran == ["fig2_prompt_count"], ran


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_figure_notebook_gets_declared_inputs_and_a_clean_folder(tmp_path):
    "nbs/paper discovery: the runner passes what the parameters cell declares, and a rerun leaves no stale figure."
    from senclip.paper import _figure_steps

    nbs, run = tmp_path / "nbs", tmp_path / "run"
    (nbs / "paper").mkdir(parents=True)
    _tiny_notebook(nbs / "paper" / "fig.ipynb", FIG)
    steps = _figure_steps(run, nbs, {"notebooks": ""}, {"fig": {"value": 3}}, dict(out="ignored", demo=True, eval="/e"))
    assert [s.name for s in steps] == ["fig"] and steps[0].params == {"out": str(run / "paper" / "fig"), "value": 3}
    assert steps[0].deps == []  # it declares no pairs/train/eval input
    assert run_steps(steps, run, log=lambda s: None)[0]["status"] == "ran"
    (run / "paper" / "fig" / "stale_from_an_older_version.png").write_bytes(b"old")
    assert run_steps(steps, run, force=True, log=lambda s: None)[0]["status"] == "ran"
    assert sorted(p.name for p in (run / "paper" / "fig").iterdir()) == ["line.png", "numbers.csv"]
