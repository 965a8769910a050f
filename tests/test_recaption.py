"""``vfusion data caption``: sidecar captions from a tiny randomly initialised BLIP (the real transformers
classes), checked against BLIP run by hand on each keyframe; never overwriting without --overwrite,
resuming after an interruption, the report."""

from __future__ import annotations

import json

import pytest
import torch

from tests.backbone_folders import blip_folder
from tests.caption_data import sidecar_tree
from vfusion.cli import main


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    return blip_folder(tmp_path_factory.mktemp("blip"), seed=2)


@pytest.fixture
def videos(tmp_path):
    root = sidecar_tree(tmp_path / "data")
    for txt in root.rglob("*.txt"):
        txt.unlink()
    return root


def by_hand(blip, video, frames):
    """BLIP's greedy caption of the given frames of a video, decoded by decord."""
    import decord
    from transformers import BlipForConditionalGeneration, BlipProcessor

    model = BlipForConditionalGeneration.from_pretrained(str(blip)).eval()
    processor = BlipProcessor.from_pretrained(str(blip))
    images = decord.VideoReader(str(video)).get_batch(frames).asnumpy()
    with torch.no_grad():
        ids = model.generate(**processor(images=list(images), return_tensors="pt"), max_new_tokens=30, do_sample=False)
    return [" ".join(t.split()) for t in processor.batch_decode(ids, skip_special_tokens=True)]


def caption(root, blip, *extra):
    return main(["data", "caption", "--root", str(root), "--model", str(blip), "--no-progress", *extra])


def test_writes_each_keyframes_caption_and_a_second_run_changes_nothing(videos, blip, capsys):
    assert caption(videos, blip) == 0
    sidecars = sorted(videos.rglob("*.txt"))
    assert len(sidecars) == 4
    for txt in sidecars:
        expected = by_hand(blip, txt.with_suffix(".mp4"), [6 // 2])[0]   # 6-frame clips: keyframe 3
        assert expected and txt.read_text() == expected + "\n"
    report = json.loads((videos / "captions_report.json").read_text())
    assert (report["written"], report["kept"], report["failed"]) == (4, 0, 0)
    assert report["class"] == "BlipForConditionalGeneration" and len(report["sha256"]) == 64
    before = {p: (p.read_text(), p.stat().st_mtime_ns) for p in sidecars}
    assert caption(videos, blip) == 0
    assert {p: (p.read_text(), p.stat().st_mtime_ns) for p in sidecars} == before
    assert "0 captions written, 4 kept" in capsys.readouterr().out
    # the captions dataset reads them back
    assert main(["data", "check", "--dataset", "captions", "--root", str(videos), "--num-frames", "4"]) == 0
    assert "captions     4 (0 missing, 0 empty" in capsys.readouterr().out


def test_existing_captions_are_kept_unless_overwrite(videos, blip):
    mine = videos / "00000" / "000000001.txt"
    mine.write_text("my own caption\n")
    assert caption(videos, blip) == 0
    assert mine.read_text() == "my own caption\n"
    assert caption(videos, blip, "--overwrite") == 0
    assert mine.read_text() != "my own caption\n"
    assert json.loads((videos / "captions_report.json").read_text())["written"] == 4


def test_an_interrupted_run_resumes(videos, blip, monkeypatch):
    from vfusion.data.recaption import Captioner

    original, calls = Captioner.caption, []

    def stop_at_the_third(self, frames):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, frames)

    monkeypatch.setattr(Captioner, "caption", stop_at_the_third)
    assert caption(videos, blip) == 130
    assert len(list(videos.rglob("*.txt"))) == 2 and not list(videos.rglob("*.tmp*"))
    monkeypatch.setattr(Captioner, "caption", original)
    assert caption(videos, blip) == 0
    report = json.loads((videos / "captions_report.json").read_text())
    assert (report["written"], report["kept"]) == (2, 2) and len(list(videos.rglob("*.txt"))) == 4


def test_several_frames_are_joined(videos, blip):
    from vfusion.data.recaption import frame_indices, join_captions

    assert frame_indices(6, 1) == [3] and frame_indices(6, 3) == [1, 3, 5] and frame_indices(2, 5) == [0, 1]
    assert join_captions(["a b", "", "c", "a b"]) == "a b; c"
    assert caption(videos, blip, "--frames", "3") == 0
    txt = videos / "00000" / "000000000.txt"
    assert txt.read_text() == join_captions(by_hand(blip, txt.with_suffix(".mp4"), [1, 3, 5])) + "\n"


def test_bad_model_or_root_is_one_line_and_writes_nothing(videos, tmp_path, capsys):
    assert caption(videos, tmp_path) == 2
    assert "not a transformers model folder" in capsys.readouterr().err
    assert caption(tmp_path / "nowhere", tmp_path) == 2
    assert not list(videos.rglob("*.txt")) and not (videos / "captions_report.json").exists()
