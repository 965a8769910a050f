"""The run-directory lock (vfusion.runlock) in fit, checkpoint rotation and stale temporary files."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import tiny_config, tiny_loader, tiny_spec
from vfusion.config import ConfigError
from vfusion.errors import UserError
from vfusion.rundir import LOCK_FILE as LOCK_NAME
from vfusion.rundir import RunDir
from vfusion.runlock import RunLockedError, is_nonzero_rank
from vfusion.training.runner import fit


def snapshot(folder: Path) -> dict:
    """Every file under ``folder``: relative name -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def plant_lock(run: Path, pid: int, host=None) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    lock = run / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                                "command": "vfusion train (planted by the test)"}))
    return lock


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid is free now
    return proc.pid


class Boom(L.Callback):
    def __init__(self, exc):
        self.exc = exc

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= 1:
            raise self.exc


def test_live_lock_refuses_and_leaves_run_dir_untouched(tmp_path, live_pid):
    run = tmp_path / "run"
    fit(tiny_config(run, "train.max_steps=2"), train_loader=tiny_loader(), spec_info=tiny_spec())
    assert not (run / LOCK_NAME).exists()
    plant_lock(run, live_pid)
    before = snapshot(run)
    with pytest.raises(RunLockedError, match=f"pid {live_pid} on host {socket.gethostname()}") as err:
        fit(tiny_config(run, "train.max_steps=4"), resume=True, train_loader=tiny_loader(), spec_info=tiny_spec())
    assert isinstance(err.value, UserError) and "\n" not in str(err.value) and "started" in str(err.value)
    assert snapshot(run) == before
    # a fresh run directory that holds nothing but the lock stays that way
    fresh = tmp_path / "fresh"
    plant_lock(fresh, live_pid)
    before = snapshot(fresh)
    with pytest.raises(RunLockedError, match=str(live_pid)):
        fit(tiny_config(fresh, "train.max_steps=2"), train_loader=tiny_loader(), spec_info=tiny_spec())
    assert snapshot(fresh) == before and [p.name for p in fresh.iterdir()] == [LOCK_NAME]


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, dead_pid, caplog):
    run = tmp_path / "run"
    lock = plant_lock(run, dead_pid)
    with caplog.at_level(logging.WARNING, logger="vfusion.runlock"):
        fit(tiny_config(run, "train.max_steps=2"), train_loader=tiny_loader(), spec_info=tiny_spec())
    assert any("stale" in r.message and str(dead_pid) in r.message for r in caplog.records)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert not lock.exists()


def test_lock_is_released_after_fit_raised(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        fit(tiny_config(run, "train.max_steps=4"), train_loader=tiny_loader(), spec_info=tiny_spec(),
            extra_callbacks=[Boom(RuntimeError("boom"))])
    assert (run / "config.yaml").is_file() and not (run / LOCK_NAME).exists()


def test_lock_is_released_after_ctrl_c(tmp_path):
    run = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    try:  # Lightning turns Ctrl-C into sys.exit(1) after a graceful shutdown (and ignores further Ctrl-C)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            fit(tiny_config(run, "train.max_steps=4"), train_loader=tiny_loader(), spec_info=tiny_spec(),
                extra_callbacks=[Boom(KeyboardInterrupt())])
    finally:
        signal.signal(signal.SIGINT, handler)
    assert not (run / LOCK_NAME).exists()


def test_lock_unit_behaviour(tmp_path, live_pid, monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    run = tmp_path / "run"
    with RunDir(run).lock(command="test") as lock:
        info = json.loads((run / LOCK_NAME).read_text())
        assert lock.held and info["pid"] == os.getpid() and info["command"] == "test"
        assert {"pid", "host", "started", "command"} <= set(info)
        with pytest.raises(RunLockedError, match=str(os.getpid())):  # the same process, twice
            RunDir(run).lock().acquire()
    assert not (run / LOCK_NAME).exists()
    # a holder on another host cannot be checked: refused, never taken over
    plant_lock(run, live_pid, host="elsewhere.example")
    with pytest.raises(RunLockedError, match="elsewhere.example"):
        RunDir(run).lock().acquire()
    # a live pid whose process started at another time is a reused pid: stale
    info = json.loads((run / LOCK_NAME).read_text())
    info.update(host=socket.gethostname(), pid_start_ticks=1)
    (run / LOCK_NAME).write_text(json.dumps(info))
    with RunDir(run).lock() as lock:
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    # ranks other than 0 take no lock (Lightning's DDP launcher, torchrun)
    assert not is_nonzero_rank({}) and not is_nonzero_rank({"LOCAL_RANK": "0", "NODE_RANK": "0"})
    assert is_nonzero_rank({"LOCAL_RANK": "1"}) and is_nonzero_rank({"RANK": "3"}) and is_nonzero_rank({"NODE_RANK": "1"})
    monkeypatch.setenv("LOCAL_RANK", "1")
    plant_lock(run, live_pid)
    with RunDir(run).lock() as lock:
        assert not lock.held
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == live_pid  # left alone


def test_step_checkpoints_rotate_and_stale_temps_are_removed(tmp_path):
    run = tmp_path / "run"
    ckdir = run / "checkpoints"
    ckdir.mkdir(parents=True)
    stale = ckdir / ".step0000003.ckpt.k1ll3d.tmp.ckpt"  # what atomic_path leaves when the process is killed
    stale.write_bytes(b"half a checkpoint")
    cfg = tiny_config(run, "train.checkpoint_every_n_steps=1", "train.max_steps=6", "train.keep_checkpoints=2")
    fit(cfg, train_loader=tiny_loader(), spec_info=tiny_spec())
    assert sorted(p.name for p in ckdir.iterdir()) == ["last.ckpt", "step0000005.ckpt", "step0000006.ckpt"]
    assert torch.load(ckdir / "step0000006.ckpt", weights_only=True)["global_step"] == 6
    # resumed with fewer to keep: the rotation goes by the files on disk
    cfg = tiny_config(run, "train.checkpoint_every_n_steps=1", "train.max_steps=8", "train.keep_checkpoints=1")
    fit(cfg, resume=True, train_loader=tiny_loader(), spec_info=tiny_spec())
    assert sorted(p.name for p in ckdir.iterdir()) == ["last.ckpt", "step0000008.ckpt"]


def test_keep_checkpoints_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="train.keep_checkpoints"):
        tiny_config(tmp_path, "train.keep_checkpoints=0")
