"""Evaluation protocol presets (eval.protocol: vfusion | stylegan_v) and the flicker / drift metrics.

The stylegan_v selection is checked on a small UCF-101-style tree whose videos have chosen lengths;
detectors are the tiny stand-ins of test_evaluate.py."""

import json
import warnings

import numpy as np
import pytest
import torch

from test_data_fixtures import data_config, sequential_decode, write_video
from test_evaluate import tiny_detectors
from vfusion.cli import main
from vfusion.config import ConfigError
from vfusion.experiment import resolve_config
from vfusion.rundir import save_config
from vfusion.data.clips import center_crop_resize, eval_position, to_clip
from vfusion.evaluation import evaluate as E
from vfusion.evaluation.core import ClipSource, quantize
from vfusion.evaluation.protocols import real_split, sort_key, stylegan_v_folder, stylegan_v_selection
from vfusion.evaluation.temporal import frame_change, keyframe_drift

T, STRIDE, S = 4, 3, 32  # clips of 4 frames at stride 3: they span 10 frames, StyleGAN-V keeps videos of >= 12

# (class folder, group, frames, list): 'train' / 'test' of fold 1
VIDEOS = [("Archery", 1, 30, "train"), ("Archery", 2, 11, "train"),          # 11: spans the clip, too short for SGV
          ("Basketball", 1, 12, "test"), ("Basketball", 2, 6, "train"),      # 12: exactly long enough
          ("BasketballDunk", 1, 20, "train"), ("BasketballDunk", 2, 25, "test")]
# StyleGAN-V's order (names of the videos, code points): v_Archery_*, v_BasketballDunk_*, v_Basketball_*
KEPT = ["Archery/v_Archery_g01_c01.avi", "BasketballDunk/v_BasketballDunk_g01_c01.avi",
        "BasketballDunk/v_BasketballDunk_g02_c01.avi", "Basketball/v_Basketball_g01_c01.avi"]
LENGTH = {f"{c}/v_{c}_g{g:02d}_c01.avi": n for c, g, n, _ in VIDEOS}


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    root = tmp_path_factory.mktemp("sgv") / "ucf"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    classes = ["Archery", "Basketball", "BasketballDunk"]
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train, test = [], []
    for k, (cls, g, n, split) in enumerate(VIDEOS):
        rel = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
        write_video(root / "UCF-101" / rel, n, seed=k, w=64, h=48)
        if split == "train":
            train.append(f"{rel} {classes.index(cls) + 1}\n")
        else:
            test.append(f"{rel}\n")
    for fold in (1, 2, 3):
        (lists / f"trainlist0{fold}.txt").write_text("".join(train))
        (lists / f"testlist0{fold}.txt").write_text("".join(test))
    return root


def ucf_data(root, tmp_path, **kw):
    return data_config(**dict(dict(dataset="ucf101", root=str(root), num_frames=T, frame_stride=STRIDE,
                                   resolution=S, num_workers=0, cache_dir=str(tmp_path / "cache")), **kw))


def quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


# --------------------------------------------------------------------------- which real clips

def test_the_preset_split_is_train_and_test_for_ucf101_and_train_elsewhere():
    assert real_split("stylegan_v", "ucf101", "test", "test") == "all"
    assert real_split("stylegan_v", "sky", None, "test") == "train"
    assert real_split("stylegan_v", "embedded", None, "test") == "train"
    assert real_split("vfusion", "ucf101", None, "test") == "test"
    assert real_split("vfusion", "ucf101", "train", "test") == "train"


def test_videos_sort_by_their_own_name_as_in_stylegan_v_flat_folder():
    paths = ["/d/Basketball/v_Basketball_g01_c01.avi", "/d/BasketballDunk/v_BasketballDunk_g01_c01.avi",
             "/d/Archery/v_Archery_g02_c01.avi", "/d/Archery/v_Archery_g01_c01.avi"]
    assert sorted(paths, key=sort_key) == [paths[3], paths[2], paths[1], paths[0]]
    assert sorted(paths) != sorted(paths, key=sort_key)  # not the order of Class/file paths


def test_stylegan_v_selection_first_videos_offsets_and_discarded_short_ones(ucf, tmp_path):
    data = ucf_data(ucf, tmp_path)
    sel = quiet(stylegan_v_selection, data, "all")
    assert sel.keys() == KEPT                         # 11 and 6 frames: discarded; 12: kept
    assert (sel.num_kept, sel.num_discarded) == (4, 2)
    first3 = quiet(stylegan_v_selection, data, "all", 3)
    assert first3.keys() == KEPT[:3] and first3.num_kept == 4
    train = quiet(stylegan_v_selection, data, "train")
    assert train.keys() == [KEPT[0], KEPT[1]]         # "all" is the union of the train and test lists
    # offsets: uniform over every start that fits, from (OFFSET_SEED = 0, sorted position)
    span = (T - 1) * STRIDE + 1
    expected = [min(int(eval_position(0, i) * (LENGTH[k] - span + 1)), LENGTH[k] - span) for i, k in enumerate(KEPT)]
    assert sel.starts() == expected and first3.starts() == expected[:3]
    assert any(s > 0 for s in expected) and expected[-1] in (0, 1, 2)   # the 12-frame video: 3 possible starts
    assert quiet(stylegan_v_selection, data, "all").starts() == expected  # seeded: the same every time
    for i in (0, 3):                                   # the clip is those frames, cropped and resized
        full = sequential_decode(sel.dataset.index.items[i].path)
        idx = expected[i] + STRIDE * np.arange(T)
        assert torch.equal(sel.dataset[i][0], to_clip(center_crop_resize(full[idx], S)))


def test_stylegan_v_on_a_folder_of_videos():
    files = [f"/r/{n}.mp4" for n in ("b", "a", "c", "d")]
    chosen, starts, short = quiet(stylegan_v_folder, files, 2, 4, 3, [30, 11, 12, 40])
    assert [str(f) for f in chosen] == ["/r/b.mp4", "/r/c.mp4"] and short == 1   # a (11 frames) is discarded
    assert starts == [min(int(eval_position(0, 0) * 21), 20), min(int(eval_position(0, 1) * 3), 2)]


def test_a_real_folder_under_stylegan_v_reads_the_kept_files_from_their_offsets(tmp_path):
    from vfusion.utils.video import read_video, write_mp4

    g = torch.Generator().manual_seed(0)
    lengths = {"c": 9, "a": 14, "b": 5, "d": 20}     # 4 frames at stride 2: StyleGAN-V keeps >= 8
    for name, n in lengths.items():
        write_mp4(tmp_path / "real" / f"{name}.mp4", torch.rand(3, n, S, S, generator=g) * 2 - 1)
    for i in range(2):
        write_mp4(tmp_path / "fake" / f"video_{i:05d}.mp4", torch.rand(3, T, S, S, generator=g) * 2 - 1)
    result = quiet(E.evaluate_folders, tmp_path / "real", tmp_path / "fake", metrics="flicker", real_stride=2,
                   detectors=E.Detectors(device="cpu"), progress=False, protocol="stylegan_v")
    real = result["protocol"]["real"]
    assert (real["protocol"], real["min_frames"], real["num_discarded_short"]) == ("stylegan_v", 8, 1)
    assert result["protocol"]["num_real"] == 2 and list(result["metrics"]) == [f"flicker2_{T}f",
                                                                               f"flicker2_{T}f_real_sgv"]
    starts = [min(int(eval_position(0, 0) * 8), 7), min(int(eval_position(0, 1) * 3), 2)]   # a (14), c (9)
    clips = [read_video(tmp_path / "real" / f"{n}.mp4")[:, s:s + 7:2] for n, s in zip("ac", starts)]
    expected = float(frame_change(quantize(torch.stack(clips))).mean())
    assert result["metrics"][f"flicker2_{T}f_real_sgv"] == pytest.approx(expected, rel=1e-6)


def test_config_checks_the_protocol_and_the_split_it_reads():
    assert resolve_config({"name": "x"}).eval.protocol == "vfusion"
    with pytest.raises(ConfigError, match="eval.protocol.*vfusion, stylegan_v"):
        resolve_config({"name": "x"}, overrides=["eval.protocol=sgv"])
    with pytest.raises(ConfigError, match="eval.real_split.*stylegan_v reads the 'all' split of ucf101"):
        resolve_config({"name": "x"}, overrides=["data.dataset=ucf101", "eval.protocol=stylegan_v",
                                              "eval.real_split=test"])
    resolve_config({"name": "x"}, overrides=["data.dataset=ucf101", "eval.protocol=stylegan_v", "eval.real_split=all"])


# --------------------------------------------------------------------------- metrics.json, names, caches

def _run(tmp_path, ucf, *overrides):
    cfg = resolve_config({"name": "p"}, overrides=[
        f"run_dir={tmp_path / 'run'}", "data.dataset=ucf101", f"data.root={ucf}", f"data.num_frames={T}",
        f"data.frame_stride={STRIDE}", f"data.resolution={S}", "data.num_workers=0",
        f"data.cache_dir={tmp_path / 'cache'}", "eval.batch_size=2", *overrides])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    return tmp_path / "run"


def _fakes(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(n, 3, T, S, S, generator=g) * 1.6 - 0.8)]


def test_metrics_json_records_the_protocol_names_carry_it_and_caches_never_mix(ucf, tmp_path):
    kw = dict(metrics="fvd,fid,flicker,drift", num_videos=3, sampler="ddim", steps=2, seed=0, guidance_scale=1.0,
              detectors=tiny_detectors(), progress=False)
    run = _run(tmp_path, ucf, "eval.protocol=stylegan_v")
    sgv = quiet(E.evaluate_run, run, fake_batches=iter(_fakes()), real_split="test", **kw)
    names = [f"fvd3_{T}f_sgv", f"fid3_{T}f_sgv", f"flicker3_{T}f", f"flicker3_{T}f_real_sgv", f"drift3_{T}f",
             f"drift3_{T}f_real_sgv"]
    assert list(sgv["metrics"]) == names
    on_disk = json.loads((run / "metrics.json").read_text())
    p = on_disk["protocol"]
    assert (p["protocol"], p["name_suffix"], p["comparable_to_published"]) == ("stylegan_v", "_sgv", False)
    r = p["real"]
    assert (r["protocol"], r["split"], r["min_frames"], r["num_available"], r["num_discarded_short"]) == \
        ("stylegan_v", "all", T * STRIDE, 4, 2)
    assert (r["first_video"], r["last_video"]) == (KEPT[0], KEPT[2]) and p["num_real"] == 3
    assert "not used" in r["split_note"]          # the harness passes data.eval_split; the preset reads 'all'
    assert r["cache_hit"] == {"i3d_k400": False, "inception_v3": False, "temporal": False}
    assert p["temporal"]["real"].endswith("(name ending _real)")

    again = quiet(E.evaluate_run, run, fake_batches=iter(_fakes()), out=tmp_path / "again.json", **kw)
    assert again["protocol"]["real"]["cache_hit"] == {"i3d_k400": True, "inception_v3": True, "temporal": True}
    assert again["metrics"] == pytest.approx(sgv["metrics"], rel=1e-9)

    # the same run under the vfusion preset: other names, other clips, its own cache files
    vf = quiet(E.evaluate_run, run, fake_batches=iter(_fakes()), out=tmp_path / "vf.json", protocol="vfusion",
               real_split="all", **kw)
    assert list(vf["metrics"]) == [n.replace("_sgv", "") for n in names]
    assert vf["protocol"]["protocol"] == "vfusion" and vf["protocol"]["real"]["subset_seed"] == 0
    assert vf["protocol"]["real"]["cache_hit"] == {"i3d_k400": False, "inception_v3": False, "temporal": False}
    assert vf["metrics"][f"flicker3_{T}f"] == sgv["metrics"][f"flicker3_{T}f"]   # the fake side is the same
    files = sorted(f.name for f in (tmp_path / "cache" / "real_stats").iterdir())
    assert len(files) == 6 and sum(f.startswith("stylegan_v_") for f in files) == 3
    keys = [json.loads(str(np.load(tmp_path / "cache" / "real_stats" / f)["__key__"])) for f in files]
    assert sorted(k["protocol"] for k in keys) == ["stylegan_v"] * 3 + ["vfusion"] * 3


def test_cli_real_vs_real_under_stylegan_v_on_a_ucf_tree(ucf, tmp_path, monkeypatch, capsys):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(f"name: rvr\nrun_dir: {tmp_path / 'run'}\n"
                        f"data: {{dataset: ucf101, root: {ucf}, num_frames: {T}, frame_stride: {STRIDE}, "
                        f"resolution: {S}, num_workers: 0, cache_dir: {tmp_path / 'cache'}}}\n")
    monkeypatch.setattr(E, "load_detectors", lambda *a, **k: tiny_detectors())
    out = tmp_path / "rvr.json"
    args = ["evaluate", "--real-vs-real", "--config", str(cfg_path), "--metrics", "fvd,kvd,flicker,drift",
            "--num-videos", "5", "--out", str(out), "--no-progress"]
    rc = quiet(main, args + ["eval.protocol=stylegan_v"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [  # 4 videos kept: halves of 2
        f"fvd2_{T}f_sgv", f"kvd2_{T}f_sgv", f"flicker2_{T}f", f"flicker2_{T}f_real_sgv", f"drift2_{T}f",
        f"drift2_{T}f_real_sgv"]
    result = json.loads(out.read_text())
    assert result["kind"] == "real_vs_real" and result["protocol"]["protocol"] == "stylegan_v"
    real = result["protocol"]["real"]
    assert (real["split"], real["first_video"], real["last_video"]) == ("all", KEPT[0], KEPT[3])
    assert all(np.isfinite(v) for v in result["metrics"].values())
    # the preset reads its own split: another one on the command line is refused
    assert quiet(main, args + ["--real-split", "test", "eval.protocol=stylegan_v"]) == 2
    assert "stylegan_v reads the 'all' split" in capsys.readouterr().err
    # the same through --protocol, and the default preset is still vfusion
    assert quiet(main, args + ["--protocol", "stylegan_v"]) == 0
    capsys.readouterr()
    assert quiet(main, args + ["--metrics", "fvd"]) == 0
    assert capsys.readouterr().out.split("\t")[0] == f"fvd1_{T}f"   # vfusion: the 2 test videos, halves of 1


def test_overrides_are_refused_for_a_run(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path), "eval.protocol=stylegan_v"]) == 2
    assert "apply to a config YAML" in capsys.readouterr().err


# --------------------------------------------------------------------------- flicker and drift

def test_flicker_and_drift_of_a_constant_video_and_a_flickering_one():
    still = (torch.rand(1, 3, 1, S, S, generator=torch.Generator().manual_seed(0)) - 0.5).expand(4, 3, 8, S, S)
    flicker = torch.where(torch.arange(8).view(1, 1, 8, 1, 1) % 2 == 0, -0.5, 0.5).expand(4, 3, 8, S, S)
    det = E.Detectors(device="cpu")
    real = ClipSource(iter([still[:2], still[2:]]), {"source": "still"}, num=4)
    fake = ClipSource(iter([flicker]), {"source": "flicker"}, num=4)
    result = E.evaluate(real, fake, E.expand_metrics("flicker,drift"), det, progress=False)
    m = result["metrics"]
    assert m["flicker4_8f_real"] == 0.0 and m["drift4_8f_real"] == 0.0
    step = float((quantize(torch.tensor(0.5)) - quantize(torch.tensor(-0.5))) * 127.5)   # 127 grey levels
    assert m["flicker4_8f"] == pytest.approx(step)
    assert m["drift4_8f"] == pytest.approx(float(keyframe_drift(quantize(flicker)).mean()))
    assert 0.4 * step < m["drift4_8f"] < 0.6 * step   # half of the other frames differ from the key frame
    assert m["flicker4_8f"] == pytest.approx(float(frame_change(quantize(flicker)).mean()))
    assert result["protocol"]["temporal"]["unit"].startswith("grey levels")
    assert result["detectors"] == {}                   # pixel statistics: no detector loaded
