"""Lightning callbacks: sample grids/videos and the λ schedule in TensorBoard."""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning as L
import torch

from vfusion.utils.video import filmstrip, make_grid_frames, write_gif


class SampleLogger(L.Callback):
    """Every ``every_n_steps`` steps, and once more at the end of training (unless that step was
    just logged): a few samples (EMA weights, through the pipeline) as ``samples/filmstrip`` (an
    image) and ``samples/video`` (the clips tiled in a grid, as an animated GIF).

    The video is written as an image summary holding GIF bytes, which is what TensorBoard's own
    ``add_video`` produces, but encoded with PIL here, so no moviepy is needed; TensorBoard's
    Images tab plays it."""

    def __init__(self, every_n_steps: int, num_videos: int = 4, steps: int = 20, fps: int = 8):
        self.every = every_n_steps
        self.num_videos = num_videos
        self.steps = steps
        self.fps = fps
        self.last_logged_step: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        tb = _tensorboard(trainer)
        lam = getattr(pl_module.noise, "lambdas", None)
        if tb is None or lam is None or lam.numel() < 2:
            return
        for i, v in enumerate(lam.tolist()):
            tb.add_scalar("noise/lambda_per_frame", v, i)
        tb.add_text("noise/lambdas", ", ".join(f"{v:.3f}" for v in lam.tolist()), 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.every or step % self.every or not trainer.is_global_zero:
            return
        self._log_samples(trainer, pl_module, step)

    def on_train_end(self, trainer, pl_module) -> None:
        # every run ends with a sample, even one that stopped (max_steps, max_minutes) between multiples of N
        step = trainer.global_step
        if not self.every or not trainer.is_global_zero or step == self.last_logged_step:
            return
        self._log_samples(trainer, pl_module, step)

    def _log_samples(self, trainer, pl_module, step: int) -> None:
        tb = _tensorboard(trainer)
        if tb is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        with pl_module.ema_model():
            pipe = pl_module.pipeline()
            videos = pipe(batch_size=self.num_videos, num_inference_steps=self.steps, sampler="ddim",
                          generator=torch.Generator(device=pl_module.device).manual_seed(0), output_type="pt",
                          progress=False).frames
        pl_module.train(was_training)
        strip = torch.from_numpy(filmstrip(videos)).permute(2, 0, 1)
        tb.add_image("samples/filmstrip", strip, step)
        add_gif(tb, "samples/video", make_grid_frames(videos), step, fps=self.fps)
        tb.flush()
        self.last_logged_step = step


def gif_bytes(frames, fps: int = 8) -> bytes:
    """``(T, H, W, 3)`` uint8 frames -> the bytes of an animated GIF (through :func:`write_gif`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_gif(Path(tmp) / "grid.gif", frames, fps=fps)
        return path.read_bytes()


def add_gif(writer, tag: str, frames, step: int, fps: int = 8) -> None:
    """Write ``(T, H, W, 3)`` uint8 frames to a ``SummaryWriter`` as an animated-GIF image summary."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    _, h, w, c = frames.shape
    image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames, fps))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def _tensorboard(trainer):
    logger = trainer.logger
    return getattr(logger, "experiment", None) if logger is not None else None
