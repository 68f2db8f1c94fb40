"""Every console command: `--help` works, and a bad input ends in one line on stderr that names the file, with a
non-zero exit; `--debug` shows the traceback instead."""
import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def console_scripts() -> list[str]:
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini")
    return [s.split("=")[0] for s in cfg["DEFAULT"]["console_scripts"].split()]


def run(*args, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout, env=env)


def error_lines(r) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("cmd", console_scripts())
@pytest.mark.slow  # over ~3.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_help(cmd):
    r = run(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "--debug" in r.stdout, f"{cmd} has no --debug flag"


BAD = {
    "senclip_map": lambda d: ["--scene", str(d / "missing.tif")],
    "senclip_pairs": lambda d: ["--config", str(d / "missing.yaml")],
    "senclip_train": lambda d: ["--manifest", str(d / "missing.parquet"), "--store", str(d / "missing.safetensors"),
                                "--out", str(d / "train")],
    "senclip_eval": lambda d: ["--demo", "--prompts", str(d / "missing.json"), "--out", str(d / "eval")],
    "senclip_demo": lambda d: ["--out", str(d / "file.txt" / "demo")],
}


@pytest.mark.parametrize("cmd", sorted(BAD))
@pytest.mark.slow  # over ~2.5 s on a slow 2-core machine (torch imports in 4 s): make test-slow (CI runs it)
def test_bad_input_is_one_line(cmd, tmp_path):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    args = BAD[cmd](tmp_path)
    r = run(cmd, *args)
    lines = error_lines(r)
    assert r.returncode != 0, r.stdout + r.stderr
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert str(tmp_path) in lines[0] or "missing" in lines[0] or "file.txt" in lines[0], lines[0]
    r = run(cmd, *args, "--debug")
    assert r.returncode != 0
    assert "Traceback" in r.stderr


@pytest.mark.slow  # over ~10 s on 2 cores: make test-slow (CI runs it)
def test_downloaded_torchscript_never_runs_through_the_commands(tmp_path):
    "A TorchScript model file whose `__setstate__` writes a file: `senclip_map`/`senclip_eval` refuse it in one line."
    from test_checkpoints_trust import _payload_archive

    path, marker = _payload_archive(tmp_path)
    scene = ROOT / "data" / "sample" / "sentinel2" / "s2_l1c_virginia_crop.tif"
    for cmd, args in (("senclip_map", ["--scene", str(scene), "--model", str(path), "--out", str(tmp_path / "map")]),
                      ("senclip_eval", ["--demo", "--models", str(path), "--out", str(tmp_path / "eval")])):
        r = run(cmd, *args)
        assert r.returncode != 0, r.stdout
        assert not marker.exists(), f"{cmd} ran the archive's code"
        lines = error_lines(r)
        assert len(lines) == 1 and "--trust_torchscript" in lines[0] and str(path) in lines[0], r.stderr
