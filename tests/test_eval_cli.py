"""Issue 10: `senclip_eval` as a user runs it, offline: reports rewritten on a re-run, bad prompt files in one line,
`--demo` with the demo models, and `--on_error skip` naming the skipped files."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "senclip_eval")
QUICK = ["--n_boot", "0", "--num_workers", "0", "--no_sweep", "--no_figures"]


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("IN_TEST", "SENCLIP_DEBUG")}
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", SENCLIP_CACHE=str(tmp_path / "cache"))
    return env


def _eval(tmp_path, *args):
    "The console command in a real process (what a user sees, warnings included)."
    return subprocess.run([CLI, *args], env=_env(tmp_path), capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    "The console command in this process (sys.argv as the shell gives it): (exit code, stdout, stderr)."
    from senclip.zeroshot.evaluate import senclip_eval

    monkeypatch.setenv("SENCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SENCLIP_DEBUG", raising=False)
    monkeypatch.chdir(ROOT)

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["senclip_eval", *args])
        try:
            senclip_eval()
            code = 0
        except SystemExit as e:
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_rerun_rewrites_reports(tmp_path, cli):
    run = tmp_path / "run"
    args = ["--demo", "--out", str(run), "--models", "senclip-tiny-vit", "--datasets", "eurosat", "--prompts",
            "generic", "--scoring", "cosine", *QUICK]
    for _ in range(2):
        code, _, err = cli(*args)
        assert code == 0, err[-2000:]
    per_class = pd.read_csv(run / "per_class_eurosat.csv")
    assert len(per_class) == 10 and not per_class.duplicated().any()  # one row per class, not doubled
    assert len(pd.read_csv(run / "results.csv")) == 1


@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_prompt_file_error_is_one_line(tmp_path):
    bad = tmp_path / "my_prompts.json"
    bad.write_text('{"Forest": ["trees"], "Glacier": ["ice"]}')
    args = ["--demo", "--out", str(tmp_path / "run"), "--models", "senclip-tiny-vit", "--datasets", "eurosat",
            "--prompts", str(bad), *QUICK]
    out = _eval(tmp_path, *args)
    assert out.returncode == 1
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and "WARNING" not in ln and "warn" not in ln.lower()]
    assert len(lines) == 1, out.stderr
    assert str(bad) in lines[0] and "Unknown keys: ['Glacier']" in lines[0] and "Fix:" in lines[0]
    assert not (tmp_path / "run" / "results.csv").exists()  # found before any image was encoded


def test_prompt_file_error_debug_raises(tmp_path, cli):
    from senclip.core import UserError

    bad = tmp_path / "my_prompts.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):  # --debug: the exception itself, for the traceback
        cli("--demo", "--out", str(tmp_path / "run"), "--models", "senclip-tiny-vit", "--datasets", "eurosat",
            "--prompts", str(bad), *QUICK, "--debug")


def test_demo_uses_the_demo_models_offline(tmp_path, cli):
    import papermill

    from senclip.zeroshot.evaluate import DEMO_DATASETS, DEMO_MODELS

    params = papermill.inspect_notebook(str(ROOT / "nbs" / "04_eval.ipynb"))  # the notebook's demo is the CLI's
    assert eval(params["demo_models"]["default"]) == list(DEMO_MODELS)
    assert eval(params["demo_datasets"]["default"]) == list(DEMO_DATASETS)
    run = tmp_path / "demo"
    code, _, err = cli("--demo", "--out", str(run), "--datasets", "eurosat", "--prompts", "generic",
                       "--scoring", "cosine", *QUICK)  # no --models: the demo's, not Table 1's (which need downloads)
    assert code == 0, err[-2000:]
    res = pd.read_csv(run / "results.csv")
    assert "senclip-tiny-vit" in set(res.spec) and res.not_a_result.all()


def test_on_error_skip_lists_the_skipped_files(tmp_path, cli):
    root = tmp_path / "eurosat"
    shutil.copytree(ROOT / "data" / "sample" / "eurosat", root)
    victim = sorted((root / "2750" / "Forest").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated JPEG, as an interrupted download leaves
    run = tmp_path / "run"
    code, out, err = cli("--out", str(run), "--models", "senclip-tiny-vit", "--datasets", "eurosat",
                         "--eurosat_root", str(root), "--prompts", "generic", "--scoring", "cosine", "--on_error", "skip",
                         *QUICK)
    assert code == 0, err[-2000:]
    assert "1 unreadable file(s) skipped" in out
    skipped = pd.read_csv(run / "skipped_files.csv")
    assert len(skipped) == 1 and skipped.path.iloc[0].endswith(f"Forest/{victim.name}")
    assert skipped.dataset.iloc[0] == "eurosat" and skipped.reason.iloc[0]
    assert pd.read_csv(run / "results.csv").n_images.iloc[0] == 199
