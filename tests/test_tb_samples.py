"""TensorBoard sample logger: filmstrip + GIF video (no moviepy), every N steps and at the end of training."""

import io

from tests.conftest import tiny_config, tiny_loader, tiny_spec
from vfusion.training.runner import fit


def test_sample_logger_writes_filmstrip_and_gif_video_every_n_and_at_end(tmp_path):
    from PIL import Image, ImageSequence
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    frames = 4  # data.num_frames in the tiny config
    fit(tiny_config(run, "train.sample_every_n_steps=2", "train.max_steps=3"),
        train_loader=tiny_loader(frames=frames), spec_info=tiny_spec(frames=frames))

    images = {}
    files = sorted((run / "tb").glob("events.*"))
    assert files
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"images": 0})
        acc.Reload()
        for tag in acc.Tags()["images"]:
            images.setdefault(tag, []).extend(acc.Images(tag))
    assert {"samples/filmstrip", "samples/video"} <= set(images)
    for tag in ("samples/filmstrip", "samples/video"):
        # step 2 (every_n_steps) and step 3 (the end of training, not a multiple of 2), once each
        assert sorted(e.step for e in images[tag]) == [2, 3], tag

    for event in images["samples/video"]:
        gif = event.encoded_image_string
        assert gif[:4] == b"GIF8"
        with Image.open(io.BytesIO(gif)) as im:
            assert (im.width, im.height) == (event.width, event.height)
            n = sum(1 for _ in ImageSequence.Iterator(im))
        assert n == frames > 1
    png = images["samples/filmstrip"][0].encoded_image_string
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
