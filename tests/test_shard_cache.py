"""senclip.core.ShardCache, the one resumable sharded cache (issue 12) that also splits work across torchrun ranks
(issue 13): a job killed with SIGKILL resumes without redoing finished shards, and two gloo processes started by
torchrun assemble exactly what one process does."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")

# A job of 26 items in shards of 3: item i -> (i, i**2). Every shard this process computes is logged (rank, shard),
# then rank 0 waits for all ranks and writes the assembled result.
JOB = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import numpy as np
    from senclip.core import ShardCache, all_gather_objects, barrier, distributed

    folder, out, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    with distributed("cpu") as d:
        cache = ShardCache(folder / "parts", n_items=26, shard_size=3, plan={"job": "squares", "v": 1})
        mine = cache.todo()
        for k in mine:
            lo, hi = cache.bounds(k)
            time.sleep(delay)
            cache.save(k, {"i": np.arange(lo, hi), "sq": np.arange(lo, hi) ** 2})
            with open(folder / f"log_{d.rank}.txt", "a") as f:
                f.write(f"{k}\\n")
        everyone = all_gather_objects(mine)
        barrier()
        if d.main:
            res = cache.concat()
            np.savez(out, **res)
            (out.with_suffix(".json")).write_text(json.dumps(everyone))
            cache.clear()
""")


def _script(tmp_path):
    p = tmp_path / "job.py"
    p.write_text(JOB)
    return p


def _logged(folder):
    return sorted(int(x) for f in folder.glob("log_*.txt") for x in f.read_text().split())


def _check(out):
    with np.load(out) as z:
        np.testing.assert_array_equal(z["i"], np.arange(26))
        np.testing.assert_array_equal(z["sq"], np.arange(26) ** 2)


@pytest.mark.slow  # over ~3 s on 2 cores (a subprocess starting torch): make test-slow
def test_killed_job_resumes_without_redoing_shards(tmp_path):
    job, work = _script(tmp_path), tmp_path / "work"
    work.mkdir()
    out = tmp_path / "out.npz"
    p = subprocess.Popen([sys.executable, str(job), str(work), str(out), "0.4"], env=ENV)
    deadline = time.time() + 120
    while len(list((work / "parts").glob("shard_*.npz"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done_before = sorted(int(f.stem.split("_")[1]) for f in (work / "parts").glob("shard_*.npz"))
    assert 3 <= len(done_before) < 9, done_before
    assert not out.exists()
    (work / "log_0.txt").unlink()  # from here on the log holds what the second run computed
    subprocess.run([sys.executable, str(job), str(work), str(out), "0"], env=ENV, check=True)
    assert _logged(work) == [k for k in range(9) if k not in done_before]
    _check(out)
    assert not (work / "parts").exists()  # cleared after assembly


def test_changed_plan_discards_shards(tmp_path, capsys):
    from senclip.core import ShardCache

    ShardCache(tmp_path / "p", 10, 4, plan={"model": "a"}).save(0, np.zeros(4))
    c = ShardCache(tmp_path / "p", 10, 4, plan={"model": "b"})
    assert c.done() == [] and "different plan" in capsys.readouterr().out
    c.save(0, np.ones(4))
    assert ShardCache(tmp_path / "p", 10, 4, plan={"model": "b"}).done() == [0]
    assert ShardCache(tmp_path / "p", 10, 5, plan={"model": "b"}).done() == []  # another shard size: another plan


@pytest.mark.slow  # two torchrun processes start torch: about 15 s on 2 cores
def test_two_torchrun_processes_share_the_shards(tmp_path):
    job = _script(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    subprocess.run([sys.executable, str(job), str(one), str(tmp_path / "one.npz"), "0"], env=ENV, check=True)
    subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(job), str(two),
                    str(tmp_path / "two.npz"), "0"], env=ENV, check=True, timeout=300)
    _check(tmp_path / "one.npz")
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    # each rank computed its round-robin half, and nothing twice
    assert json.loads((tmp_path / "two.json").read_text()) == [[0, 2, 4, 6, 8], [1, 3, 5, 7]]
    assert sorted(int(x) for x in (two / "log_0.txt").read_text().split()) == [0, 2, 4, 6, 8]
    assert sorted(int(x) for x in (two / "log_1.txt").read_text().split()) == [1, 3, 5, 7]
