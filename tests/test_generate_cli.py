"""``vfusion generate``: the four tasks through the real CLI on a tiny trained VideoFusion run — the files
they write, the given frames coming back at their exact uint8 levels, determinism, and the one-line
exit-2 errors with nothing written."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, tiny_config, tiny_loader, tiny_spec
from vfusion.cli import main

T, SIZE = 4, 16  # tiny_spec's clips
STEPS = "2"


@pytest.fixture(scope="module", autouse=True)
def _no_subnormal_slowdown():
    # the 2-step model's activations can be subnormal floats, which make CPU convolutions ~10x slower
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from vfusion.training.runner import fit

    run = tmp_path_factory.mktemp("generate") / "run"
    cfg = tiny_config(run, "train.max_steps=2")
    fit(cfg, stage="video", train_loader=tiny_loader(), spec_info=tiny_spec())
    return run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A PNG image (lossless: its levels are exact) and mp4 clips; an mp4 is lossy, so the levels a clip's
    frames must come back at are the ones read back from the file."""
    from vfusion.utils.video import from_uint8_frames, read_video, to_uint8_frames, write_mp4

    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "image.png")
    Image.fromarray(rng.integers(0, 256, (SIZE + 4, SIZE, 3), dtype=np.uint8)).save(folder / "wrong_size.png")
    odd = rng.integers(0, 256, (27, 61, 3), dtype=np.uint8)          # height 27, width 61
    Image.fromarray(odd).save(folder / "odd.png")
    # smooth frames (an mp4 of noise is mostly codec error), 4 of them and a 1-frame clip
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    frames = np.stack([np.stack([(xx * 15 + 20 * i) % 256, (yy * 15) % 256, np.full_like(xx, 60 * i)], -1)
                       for i in range(T)]).astype(np.uint8)
    write_mp4(folder / "clip.mp4", from_uint8_frames(frames))
    write_mp4(folder / "one_frame.mp4", from_uint8_frames(frames[:1]))
    (folder / "broken.mp4").write_bytes(b"not a video")
    clip = to_uint8_frames(read_video(folder / "clip.mp4"))
    assert clip.shape == (T, SIZE, SIZE, 3)
    wide = np.concatenate([frames[:, :, :8], frames, frames[:, :, -8:]], axis=2)   # 16 x 32
    write_mp4(folder / "wide.mp4", from_uint8_frames(wide))
    wide = to_uint8_frames(read_video(folder / "wide.mp4"))
    assert wide.shape == (T, SIZE, 2 * SIZE, 3)
    return {"dir": folder, "image": image, "clip": clip, "odd": odd, "wide": wide}


def _generate(run, out, *args):
    return main(["generate", "--run", str(run), "--steps", STEPS, "--out", str(out), *args])


def _written(out, n):
    """The folder's videos.npy after checking the files a generation writes."""
    assert len(list(out.glob("video_*.mp4"))) == n
    for name in ("grid.gif", "filmstrip.png", "inputs.png", "generate.json"):
        assert (out / name).is_file(), name
    videos = np.load(out / "videos.npy")
    manifest = json.loads((out / "generate.json").read_text())
    assert videos.dtype == np.uint8 and videos.shape[:1] == (n,) and videos.shape[2:] == (SIZE, SIZE, 3)
    assert manifest["num_frames"] == videos.shape[1] and manifest["num_videos"] == n and manifest["seed"] == 0
    assert manifest["steps"] == int(STEPS) and manifest["sampler"] == "ddim" and manifest["seconds"] >= 0
    return videos, manifest


def test_the_cli_names_the_tasks_of_the_library():
    from vfusion.inference import tasks, tasks_cli

    from vfusion.inference.pipeline import RESIZE_MODES

    assert tasks_cli.TASK_NAMES == tasks.TASKS and tasks_cli.I2V_AT == tasks.I2V_PLACES
    assert tasks_cli.RESIZE == RESIZE_MODES


@pytest.mark.parametrize("at", [None, "first"])
def test_i2v_keeps_the_image_at_its_frame(run, inputs, tmp_path, capsys, at):
    out = tmp_path / "i2v"
    assert _generate(run, out, "--task", "i2v", "--image", str(inputs["dir"] / "image.png"), "--num-videos", "2",
                     *(["--at", at] if at else [])) == 0
    assert str(out) in capsys.readouterr().out
    videos, manifest = _written(out, 2)
    index = T // 2 if at is None else 0  # auto: VideoFusion's keyframe, the middle frame
    assert videos.shape == (2, T, SIZE, SIZE, 3)
    assert manifest["task"] == "i2v" and manifest["at"] == ("keyframe" if at is None else "first")
    assert manifest["inputs"] == {"image": str((inputs["dir"] / "image.png").resolve())}
    assert manifest["labels"] == [0, 1] and manifest["run"] == str(run.resolve())
    for v in videos:
        assert np.array_equal(v[index], inputs["image"])
        assert not np.array_equal(v[(index + 1) % T], inputs["image"])


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_extend_keeps_the_video_and_adds_chunks(run, inputs, tmp_path, direction):
    out = tmp_path / "extend"
    context, chunks = 2, 2
    assert _generate(run, out, "--task", "extend", "--video", str(inputs["dir"] / "clip.mp4"), "--context",
                     str(context), "--chunks", str(chunks), "--direction", direction) == 0
    videos, manifest = _written(out, 1)
    assert videos.shape[1] == T + chunks * (T - context) == manifest["num_frames"]
    kept = videos[0, :T] if direction == "forward" else videos[0, -T:]
    assert np.array_equal(kept, inputs["clip"])
    assert manifest["context"] == context and manifest["chunks"] == chunks and manifest["direction"] == direction


def test_interpolate_between_an_image_and_a_video(run, inputs, tmp_path):
    out = tmp_path / "interpolate"
    assert _generate(run, out, "--task", "interpolate", "--first", str(inputs["dir"] / "image.png"),
                     "--last", str(inputs["dir"] / "clip.mp4"), "--context", "2", "--num-videos", "2") == 0
    videos, manifest = _written(out, 2)
    assert videos.shape == (2, T, SIZE, SIZE, 3)
    assert manifest["input_frames"] == {"first": 1, "last": 2}  # the image; the video's first --context frames
    for v in videos:  # the image first, then the generated frame, then the video's first two frames
        assert np.array_equal(v[0], inputs["image"]) and np.array_equal(v[T - 2:], inputs["clip"][:2])


@pytest.mark.parametrize("strength", ["0", "0.5"])
def test_edit(run, inputs, tmp_path, strength):
    out = tmp_path / "edit"
    assert _generate(run, out, "--task", "edit", "--video", str(inputs["dir"] / "clip.mp4"), "--strength", strength,
                     "--num-videos", "2", "--class", "c1") == 0
    videos, manifest = _written(out, 2)
    assert manifest["strength"] == float(strength) and manifest["steps_run"] == int(int(STEPS) * float(strength))
    assert manifest["labels"] == [1, 1] and len(list(out.glob("video_*_c1.mp4"))) == 2  # --class by name
    if strength == "0":  # no step: the video itself
        assert all(np.array_equal(v, inputs["clip"]) for v in videos)
    else:
        assert not np.array_equal(videos[0], inputs["clip"])


def test_i2v_crops_an_image_of_any_size_as_training_clips_are(run, inputs, tmp_path):
    from vfusion.data.clips import center_crop_resize

    out = tmp_path / "i2v"
    assert _generate(run, out, "--task", "i2v", "--image", str(inputs["dir"] / "odd.png"), "--at", "first") == 0
    videos, manifest = _written(out, 1)
    trained = center_crop_resize(inputs["odd"][None], SIZE).numpy()[0]   # what a training clip's frame gets
    assert np.array_equal(videos[0, 0], trained)
    side = inputs["odd"][:, 17:44].astype(np.float32)                      # the center 27 x 27, independently
    ref = torch.nn.functional.interpolate(torch.from_numpy(side).permute(2, 0, 1)[None], size=(SIZE, SIZE),
                                          mode="bilinear", antialias=True, align_corners=False)[0].permute(1, 2, 0)
    assert np.abs(videos[0, 0].astype(np.float32) - ref.numpy()).max() <= 1.0
    assert manifest["input_size"] == {"image": [27, 61]} and manifest["resize"] == "crop"


def test_edit_stretches_a_video_with_resize_stretch(run, inputs, tmp_path):
    out = tmp_path / "edit"
    assert _generate(run, out, "--task", "edit", "--video", str(inputs["dir"] / "wide.mp4"), "--strength", "0",
                     "--resize", "stretch") == 0
    videos, manifest = _written(out, 1)
    ref = torch.nn.functional.interpolate(torch.from_numpy(inputs["wide"]).permute(0, 3, 1, 2), size=(SIZE, SIZE),
                                          mode="bilinear", antialias=True, align_corners=False).permute(0, 2, 3, 1)
    assert np.array_equal(videos[0], ref.numpy())       # strength 0: the video itself, stretched whole
    assert manifest["input_size"] == {"video": [SIZE, 2 * SIZE]} and manifest["resize"] == "stretch"


def test_the_same_seed_makes_the_same_videos(run, inputs, tmp_path):
    args = ["--task", "i2v", "--image", str(inputs["dir"] / "image.png"), "--num-videos", "2"]
    assert _generate(run, tmp_path / "a", *args) == 0
    assert _generate(run, tmp_path / "b", *args) == 0
    assert _generate(run, tmp_path / "c", *args, "--seed", "1") == 0
    a, b, c = (np.load(tmp_path / name / "videos.npy") for name in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.fixture(scope="module")
def video_unet_pipeline(run, tmp_path_factory):
    """The run's pipeline folder named a video UNet: the keyframe check reads only the model's name (it runs
    before the model is assembled), so no second model is trained for it."""
    folder = tmp_path_factory.mktemp("unet") / "pipeline"
    shutil.copytree(run / "pipeline", folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["video_config"]["model"] = "video_unet"
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


ERRORS = {
    "wrong image size": (["--task", "i2v", "--image", "{dir}/wrong_size.png", "--resize", "none"],
                         ["16x20", "resize it to 16x16", "--resize crop"]),
    "video shorter than context": (["--task", "extend", "--video", "{dir}/one_frame.mp4", "--context", "2"],
                                   ["1 frame", "--context 2"]),
    "strength out of range": (["--task", "edit", "--video", "{dir}/clip.mp4", "--strength", "1.5"],
                              ["--strength 1.5", "from 0 to 1"]),
    "missing image": (["--task", "i2v"], ["--image", "missing"]),
    "extra input": (["--task", "i2v", "--image", "{dir}/image.png", "--video", "{dir}/clip.mp4"],
                    ["not --video", "drop it"]),
    "option of another task": (["--task", "i2v", "--image", "{dir}/image.png", "--strength", "0.5"],
                               ["--strength", "edit"]),
    "no such file": (["--task", "edit", "--video", "{dir}/nowhere.mp4"], ["no such file"]),
    "undecodable video": (["--task", "edit", "--video", "{dir}/broken.mp4"], ["cannot read it as a video"]),
    "undecodable image": (["--task", "i2v", "--image", "{dir}/clip.mp4"], ["cannot read it as an image"]),
    "edit of the wrong length": (["--task", "edit", "--video", "{dir}/one_frame.mp4"], ["exactly", "4 frames"]),
    "unknown class": (["--task", "i2v", "--image", "{dir}/image.png", "--class", "dog"], ["c0, c1"]),
    "no videos": (["--task", "i2v", "--image", "{dir}/image.png", "--num-videos", "0"], ["--num-videos"]),
    "prompt without text": (["--task", "i2v", "--image", "{dir}/image.png", "--prompt", "a cat"], ["--class"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_input_errors_are_one_line_and_write_nothing(run, inputs, tmp_path, capsys, case):
    args, words = ERRORS[case]
    out = tmp_path / "out"
    rc = _generate(run, out, *[a.format(dir=inputs["dir"]) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("vfusion generate: error:"), err
    for w in words:
        assert w in err, err
    assert not out.exists()


def test_keyframe_placement_needs_videofusion(video_unet_pipeline, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["generate", "--pipeline", str(video_unet_pipeline), "--task", "i2v", "--image",
               str(inputs["dir"] / "image.png"), "--at", "keyframe", "--steps", STEPS, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--at first" in err, err
    assert not out.exists()
    assert main(["generate", "--pipeline", str(video_unet_pipeline), "--task", "i2v", "--image",
                 str(inputs["dir"] / "image.png")]) == 2  # a pipeline folder has no run to default --out to
    assert "--out" in capsys.readouterr().err


def test_help_stays_torch_free():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("import sys; from vfusion.cli import build_parser; build_parser(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
