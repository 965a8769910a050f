"""Video tensors <-> files, and sample grids.

Tensors follow the project layout: ``(B, C, T, H, W)`` (or one clip ``(C, T, H, W)``)
with values in [-1, 1].
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """One clip ``(C, T, H, W)`` in [-1, 1] -> ``(T, H, W, C)`` uint8 (RGB)."""
    if video.dim() != 4:
        raise ValueError(f"expected one clip (C, T, H, W), got shape {tuple(video.shape)}")
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.permute(1, 2, 3, 0).cpu().numpy()
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x


def from_uint8_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(T, H, W, C)`` uint8 -> one clip ``(C, T, H, W)`` float in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames))
    return x.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def write_mp4(path: str | Path, video: torch.Tensor, fps: int = 8) -> Path:
    """Write one clip as an H.264 mp4 (even sizes are padded for the codec)."""
    import imageio.v2 as imageio

    from vfusion.utils.io import atomic_path

    frames = to_uint8_frames(video)
    t, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", macro_block_size=1, output_params=["-f", "mp4"])
        for frame in frames:
            writer.append_data(frame)
        writer.close()
    return path


def make_grid_frames(videos: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """``(B, C, T, H, W)`` -> ``(T, H', W', 3)`` uint8: the clips tiled in a grid, frame by frame."""
    b, _, t, h, w = videos.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    ncol = math.ceil(b / nrow)
    grid = np.full((t, ncol * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(b):
        r, c = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[:, y:y + h, x:x + w] = to_uint8_frames(videos[i])
    return grid


def write_gif(path: str | Path, frames: np.ndarray, fps: int = 8, scale: int = 1) -> Path:
    from PIL import Image

    from vfusion.utils.io import atomic_path

    images = [Image.fromarray(f) for f in frames]
    if scale != 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def write_png(path: str | Path, image: np.ndarray) -> Path:
    from PIL import Image

    from vfusion.utils.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def filmstrip(videos: torch.Tensor, max_frames: int = 8, pad: int = 2) -> np.ndarray:
    """One PNG-able image: a row per clip, ``max_frames`` evenly spaced frames per row."""
    b, _, t, h, w = videos.shape
    idx = np.linspace(0, t - 1, min(t, max_frames)).round().astype(int)
    out = np.full((b * (h + pad) + pad, len(idx) * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(b):
        frames = to_uint8_frames(videos[i])
        for j, k in enumerate(idx):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = frames[k]
    return out


def read_video(path: str | Path) -> torch.Tensor:
    """Read a whole video or GIF file -> ``(C, T, H, W)`` float in [-1, 1] (RGB)."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            frames = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    else:
        frames = _decode_video(path)
    return from_uint8_frames(frames)


def _decode_video(path: Path) -> np.ndarray:
    """Every frame of a video file, ``(T, H, W, 3)`` uint8: decord, or imageio's ffmpeg reader for the files
    decord opens but cannot copy out (some frame widths, e.g. 16, 24 and 48 pixels)."""
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    try:
        return vr.get_batch(list(range(len(vr)))).asnumpy()
    except decord.DECORDError as err:
        import imageio.v2 as imageio

        try:
            reader = imageio.get_reader(str(path), format="FFMPEG")
            try:
                return np.stack([np.asarray(f)[..., :3] for f in reader])
            finally:
                reader.close()
        except Exception:
            raise err from None


def save_videos(videos: torch.Tensor, out_dir: str | Path, fps: int = 8, prefix: str = "video",
                labels: Sequence[int] | None = None, start_index: int = 0) -> list[Path]:
    out_dir = Path(out_dir)
    paths = []
    for i, v in enumerate(videos):
        tag = f"_c{int(labels[i])}" if labels is not None else ""
        paths.append(write_mp4(out_dir / f"{prefix}_{start_index + i:05d}{tag}.mp4", v, fps=fps))
    return paths
