"""An interrupted `vfusion sample`, `generate` or `evaluate` leaves nothing that looks finished: the output
folder is the earlier one or none, a killed writer's leftovers go with the next write, and a folder that holds
other files is refused before any work."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, tiny_config, tiny_loader, tiny_spec
from vfusion.cli import main
from vfusion.utils.io import STAGING_MARK, staged_dir


@pytest.fixture(scope="module", autouse=True)
def _no_subnormal_slowdown():
    torch.set_flush_denormal(True)  # the 2-step model's subnormal activations slow CPU convolutions ~10x
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from vfusion.training.runner import fit

    run = tmp_path_factory.mktemp("interrupt") / "run"
    fit(tiny_config(run, "train.max_steps=2"), stage="video", train_loader=tiny_loader(), spec_info=tiny_spec())
    return run


def _staging(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}{STAGING_MARK}*"))


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """The command in its own interpreter, its output to ``log`` (a file, so it can be read while it runs)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "vfusion.cli", *args], cwd=ROOT, env=env, stdout=f,
                                stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the command ended before the condition (rc {proc.returncode})")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the command")
        time.sleep(0.05)


def _sample_args(run, out, num_videos=24):
    return ["sample", "--run", str(run), "--out", str(out), "--num-videos", str(num_videos), "--steps", "6",
            "--batch-size", "1", "--sampler", "ddim"]


def _mid_sampling(out: Path):
    """True once the writer has put a video into its staging folder (sampling is under way)."""
    return lambda: any(any(s.glob("video_*.mp4")) for s in _staging(out))


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_a_sampling_killed_midway_leaves_no_folder(run, tmp_path, sig):
    out = tmp_path / "samples"
    proc = _start(_sample_args(run, out), tmp_path / "log")
    _wait_for(_mid_sampling(out), proc)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    err = (tmp_path / "log").read_text()
    assert not out.exists()  # no folder of some videos and no manifest that a later reader could take
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "no videos were written" in err and "--resume" not in err
        assert _staging(out) == []  # cleaned up on the way out
    else:
        assert proc.returncode == -signal.SIGKILL and len(_staging(out)) == 1  # left for the next writer
    assert main(_sample_args(run, out, num_videos=2)) == 0
    assert _staging(out) == [] and json.loads((out / "samples.json").read_text())["num_videos"] == 2
    assert len(list(out.glob("video_*.mp4"))) == 2  # the new folder alone, none of the killed one's videos


def test_a_resampling_killed_midway_keeps_the_finished_folder(run, tmp_path):
    out = tmp_path / "samples"
    assert main(_sample_args(run, out, num_videos=3)) == 0
    before = _snapshot(out)
    proc = _start(_sample_args(run, out), tmp_path / "log")
    _wait_for(_mid_sampling(out), proc)
    proc.kill()
    proc.wait(timeout=60)
    assert _snapshot(out) == before


def test_an_output_folder_with_other_files_is_refused_before_sampling(run, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(_sample_args(run, out, num_videos=2)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "notes.txt" in err and "new or empty folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and _staging(out) == []
    args = ["generate", "--run", str(run), "--task", "i2v", "--image", str(out / "notes.txt"), "--out", str(out)]
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    args[args.index(str(out / "notes.txt"))] = str(image)
    assert main(args) == 2 and "notes.txt" in capsys.readouterr().err


def test_a_generation_interrupted_while_writing_keeps_the_earlier_one(run, tmp_path, monkeypatch, capsys):
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "gen"
    args = ["generate", "--run", str(run), "--task", "i2v", "--image", str(image), "--out", str(out),
            "--steps", "2", "--num-videos", "2"]
    assert main(args) == 0
    before = _snapshot(out)

    def interrupt(*a, **k):
        raise KeyboardInterrupt  # Ctrl-C after the videos, while the previews are written

    monkeypatch.setattr("vfusion.utils.video.write_png", interrupt)
    assert main(args[:-1] + ["3"]) == 130
    assert "no videos were written" in capsys.readouterr().err
    assert _snapshot(out) == before and _staging(out) == []


@pytest.mark.slow
def test_a_generation_killed_midway_leaves_no_folder(run, tmp_path):
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    out = tmp_path / "gen"
    log = tmp_path / "log"
    proc = _start(["generate", "--run", str(run), "--task", "i2v", "--image", str(image), "--out", str(out),
                   "--steps", "400", "--num-videos", "8"], log)
    _wait_for(lambda: "%|" in log.read_text(), proc)  # the progress bar: generating
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    err = log.read_text()
    assert proc.returncode == 130 and "no videos were written" in err
    assert not out.exists() and _staging(out) == []


def test_an_evaluation_interrupted_midway_keeps_the_earlier_metrics(tmp_path, monkeypatch, capsys):
    from vfusion.utils.video import write_mp4

    g = torch.Generator().manual_seed(0)
    for side in ("real", "fake"):
        (tmp_path / side).mkdir()
        for i in range(3):
            write_mp4(tmp_path / side / f"v{i}.mp4", torch.rand(3, 10, 16, 16, generator=g) * 2 - 1, fps=8)
    args = ["evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
            "--metrics", "flicker,drift"]
    assert main(args) == 0
    metrics = tmp_path / "fake" / "metrics.json"
    before = metrics.read_bytes()

    import vfusion.evaluation.temporal as temporal

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(temporal, "frame_change", interrupt)
    assert main(args) == 130
    assert "no metrics were written" in capsys.readouterr().err
    assert metrics.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "fake").iterdir()) == ["metrics.json", "v0.mp4", "v1.mp4", "v2.mp4"]


def test_staging_leftovers_of_dead_writers_go_and_live_ones_stay(tmp_path):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (dead.pid, live.pid):
            (tmp_path / f".out{STAGING_MARK}{pid}").mkdir()
        with staged_dir(out) as tmp:
            (tmp / "a.txt").write_text("done")
        assert (out / "a.txt").read_text() == "done"
        assert [p.name for p in _staging(out)] == [f".out{STAGING_MARK}{live.pid}"]
        with pytest.raises(RuntimeError):
            with staged_dir(out) as tmp:
                (tmp / "b.txt").write_text("half")
                raise RuntimeError("failed midway")
        assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    finally:
        live.kill()
        live.wait()
