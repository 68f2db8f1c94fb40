#!/usr/bin/env bash
# Every GPU check and GPU benchmark of the project, as ONE prepared run on a lent CUDA machine (device tool), e.g.
#   run(command="bash tests/gpu_checks.sh", carry=[".whl"], timeout_s=590)   # or: bash tests/gpu_checks.sh train bench_train
# .whl/ holds the pure-Python / manylinux wheels the device image lacks (open_clip_torch, ftfy, wcwidth, fastcore,
# rasterio, pyproj, affine, cligj, click-plugins); see the issue notes for the pip download line.
# Logs and JSON go to $OUT (or runs/gpu when OUT is unset). Each step has its own time limit; a failing step does not
# stop the later ones.
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision, open_clip; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'open_clip', open_clip.__version__)" | tee -a "$OUT/gpu.txt"

step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  local t0=$(date +%s)
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
}
# steps to run: all by default, or the names given, e.g. `bash tests/gpu_checks.sh train bench_train mapping`
STEPS="$*"
want() { [ -z "$STEPS" ] || [[ " $STEPS " == *" $1 "* ]]; }
want bench_train && step bench_train 330 python3 tests/bench/bench_train.py --gpu --budget 260 --profile "$OUT/profile_b_largest.txt" --json "$OUT/bench_train.json" --results "$OUT/bench_results.json"
want train && step gpu_check_train 120 python3 tests/gpu_check_train.py
want train_ddp && step gpu_check_train_ddp 150 python3 tests/gpu_check_train_ddp.py
want mfu && step bench_train_mfu 200 python3 tests/bench/bench_train.py --gpu --mfu-only --json "$OUT/bench_train_mfu.json"
want bench_eval && step bench_eval 170 python3 tests/bench/bench_eval.py --gpu --eurosat data/sample/eurosat --replicate 27000 --json "$OUT/bench_eval.json"
want model && step gpu_check_model 70 python3 tests/gpu_check_model.py
want eval && step gpu_check_eval 50 python3 tests/gpu_check_eval.py
want pairs && step gpu_check_pairs 45 python3 tests/gpu_check_pairs.py
want mapping && step gpu_check_mapping 90 python3 tests/gpu_check_mapping.py
cat "$OUT/summary.txt"
