"""Lightning callbacks: sample grids/videos and the λ schedule in TensorBoard."""

from __future__ import annotations

import lightning as L
import torch

from vfusion.utils.video import filmstrip


class SampleLogger(L.Callback):
    """Every ``every_n_steps`` steps: a few samples (EMA weights, through the pipeline) as an image
    grid, and as a video when moviepy is installed (TensorBoard's ``add_video`` needs it)."""

    def __init__(self, every_n_steps: int, num_videos: int = 4, steps: int = 20):
        self.every = every_n_steps
        self.num_videos = num_videos
        self.steps = steps

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
        try:
            import moviepy  # noqa: F401

            tb.add_video("samples/video", ((videos.clamp(-1, 1) + 1) / 2).permute(0, 2, 1, 3, 4), step, fps=8)
        except ImportError:
            pass


def _tensorboard(trainer):
    logger = trainer.logger
    return getattr(logger, "experiment", None) if logger is not None else None
