"""Known frames during sampling: image-to-video, extension and interpolation (replacement, RePaint-style).

A :class:`KnownFramesTask` holds clean values ``x`` (B, C, T, H, W) in the sampler's space (latents for a latent
model) and a per-frame mask (B, T). The known frames start forward-noised to the first timestep with their part of
the clip's initial noise; at every step the model's prediction for them is replaced by the oracle's, what a perfect
denoiser would predict from their clean values: ε_known = (z_t − α_t·x) / σ_t, prediction = process.target(x,
ε_known, t). So they stay a forward-noised copy of the given frames whose noise is the same prior draw as the
unknown frames' (the prior's frame correlation is kept), and the network sees them through its temporal layers or,
for VideoFusion with the keyframe known, through the base generator's b̂. After the last step they are set to ``x``
exactly. RePaint's resampling (Lugmayr et al., CVPR 2022): ``jumps`` times per step but the last, the whole clip is
noised back (:func:`renoise`) and the step taken again, which gives the unknown frames more chances to agree with
the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from vfusion.diffusion.task import LoopTask, PassState
from vfusion.errors import UserError


class KnownFramesError(UserError, ValueError):
    """Known frames that do not fit the clip being sampled."""


@dataclass
class KnownFramesTask(LoopTask):
    """Clean values ``x`` (B, C, T, H, W) and ``mask`` (B, T) bool: which frames are given; ``jumps``
    RePaint resamplings per step.

    The oracle prediction handed to the scheduler step moves the known frames to z_s = α_s·x + σ_s·ε', their
    forward-noised version at the next level: with a deterministic sampler ε' = ε_known, the noise they started
    from; with a stochastic one the step's fresh noise, drawn from the run's prior together with the unknown
    frames. For VideoFusion with the keyframe known, the keyframe is the given image noised with the clip's own
    shared base noise b. The final paste is what the method promises; the oracle trajectory already ends within
    float error of ``x``. Before each RePaint repeat the loop restores a multistep scheduler's history from a copy
    made before the step."""

    x: torch.Tensor
    mask: torch.Tensor
    jumps: int = 0

    def __post_init__(self):
        if self.x.dim() != 5:
            raise KnownFramesError(f"known frames must be (B, C, T, H, W), got shape {tuple(self.x.shape)}")
        mask = torch.as_tensor(self.mask, dtype=torch.bool, device=self.x.device)
        if mask.dim() == 1:
            mask = mask.expand(self.x.shape[0], -1)
        if tuple(mask.shape) != (self.x.shape[0], self.x.shape[2]):
            raise KnownFramesError(f"the known-frame mask has shape {tuple(mask.shape)}; expected (B, T) = "
                                   f"{(self.x.shape[0], self.x.shape[2])}")
        if int(self.jumps) != self.jumps or self.jumps < 0:
            raise KnownFramesError(f"resampling jumps must be an integer >= 0, got {self.jumps}")
        self.mask, self.jumps = mask, int(self.jumps)

    @classmethod
    def frames(cls, x: torch.Tensor, indices, jumps: int = 0) -> "KnownFramesTask":
        """Frames ``indices`` (the same for every video) of ``x`` are known."""
        t = x.shape[2]
        bad = [int(i) for i in indices if not 0 <= int(i) < t]
        if bad:
            raise KnownFramesError(f"known frame indices {bad} are outside 0..{t - 1}")
        mask = torch.zeros(t, dtype=torch.bool)
        mask[list(int(i) for i in indices)] = True
        return cls(x, mask, jumps)

    def check(self, shape, tasks=()) -> None:
        if tuple(self.x.shape) != tuple(shape):
            raise KnownFramesError(f"the known frames have shape {tuple(self.x.shape)} but the sample is "
                                   f"{tuple(shape)} (batch, channels, frames, height, width)")
        if bool(self.mask.all()):
            raise KnownFramesError("every frame is known: nothing is left to generate")

    def _frame_mask(self, like: torch.Tensor) -> torch.Tensor:
        return self.mask.to(like.device)[:, None, :, None, None]  # (B, 1, T, 1, 1)

    def oracle(self, pred: torch.Tensor, z: torch.Tensor, t: torch.Tensor, process) -> torch.Tensor:
        """``pred`` with the known frames' entries replaced by the prediction that recovers ``x`` exactly."""
        x = self.x.to(device=z.device, dtype=z.dtype)
        shape = (-1,) + (1,) * (z.dim() - 1)
        a = process.alpha(t).to(z.dtype).view(shape)
        s = process.sigma(t).to(z.dtype).view(shape)
        eps = (z - a * x) / s
        return torch.where(self._frame_mask(z), process.target(x, eps, t).to(pred.dtype), pred)

    def prediction(self, pred: torch.Tensor, z: torch.Tensor, t: torch.Tensor, process) -> torch.Tensor:
        return self.oracle(pred, z, t, process)

    def begin(self, z: torch.Tensor, state: PassState) -> torch.Tensor:
        """The initial ``z`` with the known frames noised to the first timestep with their part of the
        initial noise (the scheduler starts the others from the noise itself); not for an edit, whose start
        holds them already, nor for a scheduler that scales its start noise."""
        if state.partial or state.init_sigma != 1.0:
            return z
        t = state.model_timesteps(state.timesteps[0])
        noised = state.process.add_noise(self.x.to(device=z.device, dtype=z.dtype), state.start.to(z.dtype), t)
        return torch.where(self._frame_mask(z), noised, z)

    def finish(self, z: torch.Tensor) -> torch.Tensor:
        return self.paste(z)

    @property
    def batch_clip(self) -> torch.Tensor:
        return self.x

    def encoded(self, encode) -> "KnownFramesTask":
        return replace(self, x=encode(self.x, "the known frames"))

    def paste(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` with the known frames set to their clean values."""
        return torch.where(self._frame_mask(z), self.x.to(device=z.device, dtype=z.dtype), z)


def renoise(z: torch.Tensor, s: torch.Tensor, t: torch.Tensor, process, noise: torch.Tensor) -> torch.Tensor:
    """The forward process from level ``s`` to the noisier level ``t`` (both (B,) model timesteps):
    z_t = (α_t / α_s)·z_s + sqrt(σ_t² − (α_t / α_s)²·σ_s²)·ε, for the VP process and rectified flow alike."""
    shape = (-1,) + (1,) * (z.dim() - 1)
    a_s, a_t = process.alpha(s).view(shape), process.alpha(t).view(shape)
    s_s, s_t = process.sigma(s).view(shape), process.sigma(t).view(shape)
    ratio = a_t / a_s
    std = (s_t ** 2 - ratio ** 2 * s_s ** 2).clamp(min=0.0).sqrt()
    return (ratio.to(z.dtype) * z + std.to(z.dtype) * noise.to(z.dtype))
