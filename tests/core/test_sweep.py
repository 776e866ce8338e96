"""Sweeps on dask.distributed: identical to single runs, resumable after SIGKILL, failures recorded."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import sgdlab
import sgdlab.core.sweep as sweep_engine
from sgdlab.dmft.config import ConfigError
from sgdlab.core.sweep import DONE, FAILED, load_sweep, plan_sweep, read_markers, sweep_status
from sgdlab.core.sweep import run_sweep as _run_sweep
from sgdlab.dmft.command import STUDY


def run_sweep(config, store, **kwargs):
    """The engine on the Gaussian-mixture study (the tests predate the study argument)."""
    return _run_sweep(STUDY, config, store, **kwargs)

BASE = {"name": "t", "simulation": {"d": 120, "seeds": 2}, "algorithm": {"horizon": 2.0, "save_every": 2}}


def point_config(overrides):
    tree = json.loads(json.dumps(BASE))
    for key, value in overrides.items():
        section, k = key.split(".")
        tree.setdefault(section, {})[k] = value
    return sgdlab.load_config(tree)


def test_2x3_sweep_equals_single_runs_bit_for_bit(tmp_path):
    cfg = {**BASE, "sweep": {"problem.alpha": [1.0, 2.0], "algorithm.batch_fraction": [0.3, 0.6, 1.0], "points_per_task": 2}}
    summary = run_sweep(cfg, tmp_path / "s.zarr", workers=2)
    assert (summary.total, summary.done, summary.failed, summary.pending) == (6, 6, 0, 0)
    ds = load_sweep(tmp_path / "s.zarr")
    assert ds.m.dims == ("problem.alpha", "algorithm.batch_fraction", "method", "seed", "t")
    assert np.all(ds.status.values == DONE)
    markers = read_markers(tmp_path / "s.zarr")
    assert sorted(markers) == list(range(6)) and all(m["status"] == "done" for m in markers.values())
    for alpha in (1.0, 2.0):
        for b in (0.3, 0.6, 1.0):
            alone = sgdlab.run(point_config({"problem.alpha": alpha, "algorithm.batch_fraction": b}))
            point = ds.sel({"problem.alpha": alpha, "algorithm.batch_fraction": b})
            for k in ("m", "q", "train_loss", "test_error"):
                np.testing.assert_array_equal(point[k].values, alone[k].values)
            np.testing.assert_array_equal(point.time.values, alone.t.values)


def test_failed_points_are_recorded_and_others_finish(tmp_path):
    cfg = {
        **BASE,
        "sweep": {
            "algorithm.batch_fraction": [0.5, 1.5],  # 1.5 is invalid
            "zip": {"algorithm.eta": [0.1, 4.0], "algorithm.horizon": [10.0, 400.0]},  # eta = 4 diverges
        },
    }
    cfg["algorithm"] = {"horizon": 2.0, "save_every": 2, "persistence_time": 4.0}
    summary = run_sweep(cfg, tmp_path / "f.zarr", workers=1)
    assert (summary.done, summary.failed) == (1, 3)
    ds = load_sweep(tmp_path / "f.zarr")
    assert ds.status.sel({"algorithm.batch_fraction": 0.5}).values.tolist() == [DONE, FAILED]
    assert np.all(ds.status.sel({"algorithm.batch_fraction": 1.5}).values == FAILED)
    assert list(ds["algorithm.eta"].values) == [0.1, 4.0]
    messages = " | ".join(summary.errors.values())
    assert "algorithm.batch_fraction: Input should be less than or equal to 1" in messages
    assert "NonFiniteError" in messages and "at t=" in messages
    good = ds.sel({"algorithm.batch_fraction": 0.5}).isel(zip=0)
    assert np.all(np.isfinite(good.m.values))
    assert np.all(np.isnan(ds.sel({"algorithm.batch_fraction": 1.5}).m.values))


SLOW_SWEEP = """
name = "killme"
[algorithm]
horizon = 60.0
save_every = 10
[simulation]
d = 400
seeds = 2
[sweep]
"algorithm.batch_fraction" = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
points_per_task = 1
"""


def test_sigkill_midway_then_resume_loses_and_duplicates_nothing(tmp_path):
    cfg_path = tmp_path / "killme.toml"
    cfg_path.write_text(SLOW_SWEEP)
    store = tmp_path / "killme.zarr"  # -o is the output folder; the store is named by the config
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgdlab.cli", "sweep", str(cfg_path), "-o", str(tmp_path), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            done = [m for m in read_markers(store).values() if m["status"] == "done"] if store.exists() else []
            if len(done) >= 2:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("no point finished in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its scheduler and its workers: a real kill
        proc.wait()
    before = {i: m for i, m in read_markers(store).items() if m["status"] == "done"}
    assert 2 <= len(before) < 8
    snapshot = load_sweep(store)
    summary = run_sweep(cfg_path, store, workers=1)
    assert summary.skipped == len(before)
    assert (summary.done, summary.failed, summary.pending) == (8, 0, 0)
    after = read_markers(store)
    for i, m in before.items():  # finished points were not recomputed
        assert after[i]["finished_at"] == m["finished_at"]
    ds = load_sweep(store)
    assert np.all(ds.status.values == DONE)
    dim = "algorithm.batch_fraction"
    plan = plan_sweep(STUDY, sgdlab.load_config(cfg_path))
    for i in before:  # finished data intact
        np.testing.assert_array_equal(ds.m.isel({dim: i}).values, snapshot.m.isel({dim: i}).values)
    # and every point equals the experiment alone
    for p in plan.points[::3]:
        alone = sgdlab.run(p.config)
        np.testing.assert_array_equal(ds.q.isel({dim: p.index[0]}).values, alone.q.values)


def test_resume_refuses_a_different_sweep_and_status_reports(tmp_path):
    cfg = {**BASE, "sweep": {"algorithm.batch_fraction": [0.5, 1.0]}}
    run_sweep(cfg, tmp_path / "r.zarr", workers=1)
    other = {**BASE, "sweep": {"algorithm.batch_fraction": [0.5, 0.7]}}
    with pytest.raises(ConfigError, match="holds a different sweep"):
        run_sweep(other, tmp_path / "r.zarr", workers=1)
    status = sweep_status(tmp_path / "r.zarr")
    assert (status.total, status.done, status.pending) == (2, 2, 0)


@pytest.mark.parametrize(
    "sweep,match",
    [
        ({"algorithm.nope": [1]}, "is not a config key"),
        ({"simulation.seeds": [1, 2]}, "cannot be a sweep axis"),
        ({"zip": {"problem.alpha": [1.0], "problem.delta": [0.1, 0.2]}}, "equal lengths"),
        ({"algorithm.eta": []}, "non-empty list"),
        ({}, "at least one axis"),
        ({"algorithm.eta": [0.1], "points_per_task": 0}, r"sweep\.points_per_task"),
    ],
)
def test_sweep_section_validation(sweep, match):
    with pytest.raises(ConfigError, match=match):
        sgdlab.load_config({"sweep": sweep})


# Execution: the automatic choice between this process and a LocalCluster ---------------------


def _no_cluster(*args, **kwargs):
    raise AssertionError("a small sweep started a dask cluster")


def test_auto_runs_a_small_sweep_in_this_process_and_resumes_like_any_other(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_engine, "make_client", _no_cluster)
    cfg = {**BASE, "sweep": {"algorithm.batch_fraction": [0.3, 0.6, 1.0], "points_per_task": 1}}
    summary = run_sweep(cfg, tmp_path / "a.zarr")  # neither workers, scheduler nor client: auto
    assert summary.executor == "in this process (auto)"
    assert (summary.total, summary.done, summary.failed, summary.pending) == (3, 3, 0, 0)
    ds = load_sweep(tmp_path / "a.zarr")
    alone = sgdlab.run(point_config({"algorithm.batch_fraction": 0.6}))
    np.testing.assert_array_equal(ds.m.sel({"algorithm.batch_fraction": 0.6}).values, alone.m.values)
    # the same markers and resume semantics: a lost marker recomputes that point only
    (tmp_path / "a.zarr" / "_points" / "1.json").unlink()
    again = run_sweep(cfg, tmp_path / "a.zarr")
    assert (again.skipped, again.done, again.pending) == (2, 3, 0)
    np.testing.assert_array_equal(load_sweep(tmp_path / "a.zarr").m.values, ds.m.values)


def test_auto_hands_the_rest_to_a_cluster_when_it_is_long(tmp_path, monkeypatch):
    """Pilot tasks here, the rest on dask, one store: every point equals its run alone."""
    from dask.distributed import Client, LocalCluster

    started = []

    def threads_cluster(scheduler, workers, dashboard=False):
        started.append(workers)
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
        return Client(cluster), cluster

    monkeypatch.setattr(sweep_engine, "make_client", threads_cluster)
    monkeypatch.setattr(sweep_engine, "AUTO_CLUSTER_SECONDS", 0.0)  # any work left is "long"
    monkeypatch.setattr(sweep_engine.os, "cpu_count", lambda: 2)
    cfg = {**BASE, "sweep": {"algorithm.batch_fraction": [0.3, 0.5, 0.7, 1.0], "points_per_task": 1}}
    summary = run_sweep(cfg, tmp_path / "c.zarr")
    assert started == [2]
    assert summary.executor == "2 tasks in this process, 2 on a LocalCluster of 2 workers (auto)"
    assert (summary.done, summary.failed, summary.pending) == (4, 0, 0)
    ds = load_sweep(tmp_path / "c.zarr")
    markers = read_markers(tmp_path / "c.zarr")
    assert sorted(markers) == [0, 1, 2, 3] and all(m["status"] == "done" for m in markers.values())
    for b in (0.3, 1.0):  # one pilot point, one cluster point
        alone = sgdlab.run(point_config({"algorithm.batch_fraction": b}))
        np.testing.assert_array_equal(ds.q.sel({"algorithm.batch_fraction": b}).values, alone.q.values)


@pytest.mark.parametrize(
    "seconds,tasks_left,cores,want",
    [
        ([3.0, 0.1], 62, 2, False),  # 64 tiny points: 6 s left here, less than a cluster's start-up
        ([5.0, 4.0], 1, 2, False),  # one task left: nothing to run in parallel
        ([5.0, 4.0], 10, 1, False),  # one core
        ([5.0, 4.0], 10, 2, True),  # 40 s left: worth a cluster
        ([30.0, 0.5], 50, 8, True),  # the slow first task (compiling) does not count: 25 s left
        ([30.0, 0.5], 30, 8, False),
    ],
)
def test_the_auto_rule(seconds, tasks_left, cores, want):
    assert sweep_engine._want_cluster(seconds, tasks_left, cores) is want


def test_flagged_points_make_the_sweep_command_fail_like_a_flagged_run(tmp_path):
    """A DMFT that does not converge is kept with a flagged status; a sweep with such points
    keeps them too and exits 1, as `sgdlab run` does for one flagged result."""
    from typer.testing import CliRunner

    from sgdlab.cli import app

    cfg = tmp_path / "flag.toml"
    cfg.write_text(
        'name = "flag"\n[algorithm]\nhorizon = 1.0\n[simulation]\nenabled = false\n'
        '[theory]\nmethods = ["dmft"]\nsamples = 500\niterations = 1\nstart = "zero"\n'
        '[sweep]\n"algorithm.batch_fraction" = [0.5, 1.0]\n'
    )
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", str(cfg), "-o", str(tmp_path), "--workers", "0", "--no-plot"])
    assert result.exit_code == 1, result.output
    assert "2 are flagged" in " ".join(result.output.split()) and "did not converge" in result.output
    summary = sweep_status(tmp_path / "flag.zarr")
    assert (summary.done, summary.failed, len(summary.flagged)) == (2, 0, 2)
    assert all(s.startswith("flagged: DMFT did not converge") for s in summary.flagged.values())
    status = runner.invoke(app, ["sweep", "--status", str(tmp_path / "flag.zarr")])
    assert status.exit_code == 0 and "flagged" in status.output
