"""Video files and grids: mp4 round trip, GIF grid, atomic writes."""

import numpy as np
import torch

from vfusion.utils.io import atomic_path
from vfusion.utils.video import filmstrip, make_grid_frames, read_video, write_gif, write_mp4


def test_mp4_round_trip(tmp_path):
    v = torch.zeros(3, 6, 32, 32)
    v[0, :, :16] = 0.8   # a red-ish left half
    v[2, :, 16:] = -0.8
    path = write_mp4(tmp_path / "a.mp4", v, fps=8)
    back = read_video(path)
    assert back.shape == (3, 6, 32, 32)
    assert (back - v).abs().mean() < 0.05  # lossy codec, but the content is there
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary leftovers


def test_odd_sizes_are_padded_for_the_codec(tmp_path):
    back = read_video(write_mp4(tmp_path / "b.mp4", torch.zeros(3, 4, 15, 17)))
    assert back.shape[-2:] == (16, 18)


def test_widths_decord_cannot_copy_out_are_read(tmp_path):
    for w in (16, 24):
        v = torch.zeros(3, 3, 16, w)
        v[1, :, :, : w // 2] = 0.6
        back = read_video(write_mp4(tmp_path / f"w{w}.mp4", v))
        assert back.shape == (3, 3, 16, w) and (back - v).abs().mean() < 0.05


def test_grid_gif(tmp_path):
    videos = torch.rand(5, 3, 4, 8, 8) * 2 - 1
    grid = make_grid_frames(videos)
    assert grid.shape[0] == 4 and grid.dtype == np.uint8
    write_gif(tmp_path / "g.gif", grid)
    assert read_video(tmp_path / "g.gif").shape[1] == 4
    assert filmstrip(videos).shape[0] == 5 * 10 + 2


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    except RuntimeError:
        pass
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1
