"""Regenerate tests/data/paper_eval: three small evaluation runs of nbs/04_eval.ipynb's demo configuration (mixed,
short-only and long-only prompts) with the tiny untrained model and a demo checkpoint, as the figure notebooks in
nbs/paper read them (results.csv, table1.csv, table1.md, params.json, sweep.csv). Numbers are chance level: the
fixture is format-faithful, not a result.

    HF_HUB_OFFLINE=1 MPLBACKEND=Agg python tests/data/paper_eval/make.py <demo checkpoint (runs/demo/train/senclip.safetensors)>
"""
import shutil
import sys
import tempfile
from pathlib import Path

import senclip.zeroshot.evaluate as ev

HERE = Path(__file__).parent

if __name__ == "__main__":
    ck = sys.argv[1] if len(sys.argv) > 1 else "runs/demo/train/senclip.safetensors"
    tmp = Path(tempfile.mkdtemp())
    for name, length, sweep in (("eval", "mixed", True), ("eval_short", "short", False), ("eval_long", "long", False)):
        ev.run_evaluation(tmp / name, ["senclip-tiny-vit", ck], ["eurosat", "bigearthnet19", "lucas-lc1"], length=length,
                          demo=True, n_boot=50, sweep=sweep, progress=False, seed=0, figures=sweep)
        (HERE / name).mkdir(exist_ok=True)
        for f in ("results.csv", "table1.csv", "table1.md", "params.json", "sweep.csv"):
            if (tmp / name / f).exists():
                shutil.copy(tmp / name / f, HERE / name / f)
    print(f"wrote {HERE}")
