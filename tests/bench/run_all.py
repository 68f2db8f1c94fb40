"""Run every benchmark script in tests/bench/ (bench_*.py), one after another, as `make bench` does.

Each script prints `name: value unit (goal ...)` lines and appends records to runs/bench/results.json through
senclip.core.bench_record. Extra arguments are passed to every script (e.g. `--gpu` on a GPU machine).
Benchmarks are never part of `make test`.
"""
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    only = [a for a in argv if not a.startswith("-")]
    flags = [a for a in argv if a.startswith("-")]
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if any(o in s.stem for o in only)]
    failed = []
    for s in scripts:
        print(f"== {s.name}", flush=True)
        t = time.time()
        rc = subprocess.call([sys.executable, str(s), *flags], cwd=HERE.parent.parent)
        print(f"== {s.name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.time() - t:.0f} s", flush=True)
        if rc:
            failed.append(s.name)
    print(f"{len(scripts) - len(failed)} benchmark scripts ran, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
