"""Issue 13 item 2 for maps: `torchrun -m senclip.mapping` splits the tiles over ranks (gloo on CPU) and gives the
byte-identical class map of one process; a killed sharded run resumes from its shards."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from senclip.core import sample_dir

CROP = sample_dir("sentinel2", "s2_l1c_virginia_crop.tif")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
ARGS = ["--scene", str(CROP), "--tile", "16", "--batch_size", "16", "--device", "cpu", "--set", "checkpoint_every=4"]
TORCHRUN = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m",
            "senclip.mapping"]


def _single(out):
    r = subprocess.run([sys.executable, "-m", "senclip.mapping", *ARGS, "--out", str(out), "--quiet"],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    return out / "s2_l1c_virginia_crop_classes.tif"


@pytest.mark.slow
def test_two_ranks_equal_one_and_resume_after_kill(tmp_path):
    one = _single(tmp_path / "one")
    r = subprocess.run([*TORCHRUN, *ARGS, "--out", str(tmp_path / "two"), "--quiet"], capture_output=True, text=True,
                       env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    two = tmp_path / "two" / one.name
    assert two.read_bytes() == one.read_bytes()  # byte-identical class map
    assert r.stdout.count("classes:") == 1  # rank 0 alone reports the outputs
    with rasterio.open(one.with_name(one.name.replace("classes", "confidence"))) as a, \
            rasterio.open(two.with_name(two.name.replace("classes", "confidence"))) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    # kill a sharded run once some shards are written, then run again: it resumes and gives the same map
    out = tmp_path / "killed"
    shards = out / ".s2_l1c_virginia_crop_map_tiles"
    p = subprocess.Popen([*TORCHRUN, *ARGS, "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    t0 = time.time()
    while len(list(shards.glob("shard_*.npz"))) < 4 and p.poll() is None and time.time() - t0 < 300:
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGTERM)  # torchrun passes it to the workers (they run in their own sessions) and exits
    p.wait(timeout=60)
    done = len(list(shards.glob("shard_*.npz")))
    time.sleep(3)
    assert len(list(shards.glob("shard_*.npz"))) == done  # no worker survived
    assert 4 <= done < 64, done  # killed part-way (64 shards of 64 tiles)
    r = subprocess.run([*TORCHRUN, *ARGS, "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stdout + r.stderr
    assert (out / one.name).read_bytes() == one.read_bytes() and not shards.exists()
