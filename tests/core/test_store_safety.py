"""Stores survive kills and damage: the save swap, stale temporaries, a second writer, truncated
markers, lost chunks. Each damaged state is made by hand exactly as a kill or a disk would leave it."""

import json
import os
import shutil

import numpy as np
import pytest
import xarray as xr

from sgdlab.core import store
from sgdlab.core.config import ConfigError
from sgdlab.core.sweep import DONE, MARKERS, load_sweep, read_markers, run_sweep, sweep_status
from sgdlab.dmft.command import STUDY

DEAD_PID = 2**22 + 12345  # above the default pid_max: never a live process


def small(value):
    return xr.Dataset({"x": ("t", np.full(3, value))}, attrs={"study": "test"})


def test_a_kill_between_the_two_renames_loses_nothing(tmp_path):
    path = tmp_path / "r.zarr"
    store.save(small(1.0), path)
    path.rename(tmp_path / f".r.zarr.old-{DEAD_PID}-abcd1234")  # killed after the first rename
    assert not path.exists()
    np.testing.assert_array_equal(store.load(path).x.values, 1.0)  # restored
    store.save(small(2.0), path)
    np.testing.assert_array_equal(store.load(path).x.values, 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    path = tmp_path / "r.zarr"
    store.save(small(1.0), path)
    stale = tmp_path / f".r.zarr.tmp-{DEAD_PID}-0000aaaa"
    live = tmp_path / f".r.zarr.tmp-{os.getppid()}-0000bbbb"  # a live process may still be writing it
    stale.mkdir()
    live.mkdir()
    done = store.recover(path)
    assert not stale.exists() and live.exists() and any("stale" in d for d in done)


def test_a_second_writer_fails_fast_and_a_stale_lock_is_taken_over(tmp_path):
    path = tmp_path / "s.zarr"
    lock = tmp_path / "s.zarr.lock"
    lock.write_text(json.dumps({"pid": os.getppid()}))  # held by a live process
    with pytest.raises(ConfigError, match="being written by another sgdlab process"):
        with store.writer_lock(path):
            pass
    lock.write_text(json.dumps({"pid": DEAD_PID}))  # left by a killed process
    with store.writer_lock(path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    lock.write_text("{trunc")  # a truncated lock file is stale too
    with store.writer_lock(path):
        pass


def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable sgdlab store"):
        store.load(bad)


BASE = {"name": "d", "simulation": {"d": 60, "seeds": 2}, "algorithm": {"horizon": 1.0, "save_every": 2},
        "sweep": {"algorithm.batch_fraction": [0.3, 0.6, 1.0]}}


def test_damaged_points_are_reported_and_recomputed(tmp_path):
    path = tmp_path / "d.zarr"
    run_sweep(STUDY, BASE, path, workers=0)
    good = load_sweep(path)
    (path / MARKERS / "0.json").write_text('{"status": "do')  # point 0: a truncated marker
    lost = path / "m" / "c" / "1"  # point 1: its chunk of m is lost (reads back as the NaN fill)
    assert lost.exists()
    shutil.rmtree(lost)
    status = sweep_status(path)
    assert (status.done, status.pending) == (1, 2)
    assert any("damaged" in e for e in status.errors.values())
    summary = run_sweep(STUDY, BASE, path, workers=0)
    assert (summary.done, summary.pending, summary.skipped) == (3, 0, 1)
    again = load_sweep(path)
    assert np.all(again.status.values == DONE)
    for name in ("m", "q", "test_error"):
        np.testing.assert_array_equal(again[name].values, good[name].values)
    assert sorted(read_markers(path)) == [0, 1, 2]


KILL_SWEEP = """
name = "kill"
[algorithm]
horizon = 4.0
save_every = 4
[simulation]
d = 200
seeds = 2
[sweep]
"algorithm.batch_fraction" = [0.2, 0.4, 0.6, 0.8]
points_per_task = 1
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_an_unresumable_store(tmp_path):
    """Kill the sweep command at random moments (template creation included), six times; every
    rerun resumes, and the finished store equals a sweep that was never killed."""
    import random
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "kill.toml"
    cfg.write_text(KILL_SWEEP)
    out = tmp_path / "out"
    rng = random.Random(0)
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sgdlab.cli", "sweep", str(cfg), "-o", str(out), "--workers", "0", "-q", "--no-plot"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        time.sleep(rng.uniform(1.0, 8.0))  # import + compile take a few seconds: early and late kills
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    summary = run_sweep(STUDY, str(cfg), out / "kill.zarr", workers=0)
    assert (summary.done, summary.failed, summary.pending) == (4, 0, 0)
    killed = load_sweep(out / "kill.zarr")
    clean = tmp_path / "clean"
    run_sweep(STUDY, str(cfg), clean / "kill.zarr", workers=0)
    for name in ("m", "q", "test_error"):
        np.testing.assert_array_equal(killed[name].values, load_sweep(clean / "kill.zarr")[name].values)
    assert not list(out.glob(".kill.zarr.*")) and not (out / "kill.zarr.lock").exists()


def test_status_and_resume_keep_the_axis_order(tmp_path):
    """The store's config JSON has sorted keys; the status and the damage check still index the
    points as the sweep wrote them, and a sweep with its axes reordered is refused."""
    cfg = {**BASE, "sweep": {"problem.alpha": [1.0, 2.0], "algorithm.batch_fraction": [0.3, 1.0]}}
    path = tmp_path / "o.zarr"
    summary = run_sweep(STUDY, cfg, path, workers=0)
    assert (summary.done, summary.pending) == (4, 0) and not summary.errors
    swapped = {**BASE, "sweep": {"algorithm.batch_fraction": [0.3, 1.0], "problem.alpha": [1.0, 2.0]}}
    with pytest.raises(ConfigError, match="another order"):
        run_sweep(STUDY, swapped, path, workers=0)
