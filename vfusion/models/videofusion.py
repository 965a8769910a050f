"""The VideoFusion denoiser (method.md, "Denoiser (two networks)"), σ_t the process's noise coefficient:

    p̂^k    = φ(z_t^k, t [, c])                    base generator on the keyframe k = T // 2, once per clip
    b̂      = to_eps(p̂^k)                          exact conversion by the process
    z'^i_t = z_t^i − sqrt(λ^i) · σ_t · sg(b̂)     stop-gradient on b̂
    ψ^i    = ψ(z'^i_t, t, i [, c])                residual generator, i ≠ k
    output = process.compose(b̂, ψ, λ) for i ≠ k,  p̂^k at the keyframe

The VP composition is the paper's, in ε-space, ε̂^i = sqrt(λ^i)·b̂ + sqrt(1 − λ^i)·ψ^i, converted back to the
process's target (a pretrained image model keeps its own prediction type); rectified flow's is in velocity space
(:mod:`vfusion.diffusion.flow`). The keyframe's output is the base's own p̂^k, not a round trip through ε, so with a
frozen base and a deterministic sampler the middle frame is exactly the image model's own sample.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vfusion.conditioning import Cond
from vfusion.diffusion.noise import check_lambdas, keyframe_lambdas, lambdas_at_level
from vfusion.layout import keyframe_index
from vfusion.models.base_generator import BaseGenerator, base_network
from vfusion.models.residual_generator import ResidualGenerator
from vfusion.models.spec import ModelSpec


class VideoFusion(nn.Module):
    """φ and ψ composed as in the module docstring.

    σ_t is sqrt(1 − ᾱ_t) for a DiffusionProcess and t / T for a FlowProcess. For ε-prediction both conversions
    are the identity. With a time-dependent prior (``noise.value_T``), λ^i is λ^i(t), read at each sample's own
    noise level (``process.noise_level(t)``), the same λ the training noise was drawn with. ψ is not run on the
    keyframe: its term there is multiplied by sqrt(1 − λ^k) = 0. The base generator still learns through its
    own term sqrt(λ^i)·b̂ and the keyframe; the stop-gradient only cuts the path through z'. That the middle
    frame is exactly the image model's own sample under a frozen base and a deterministic sampler is checked by
    tests/test_keyframe_equivalence.py.
    """

    def __init__(self, base: BaseGenerator, residual: ResidualGenerator, lambdas: torch.Tensor, process,
                 lambdas_T: Optional[torch.Tensor] = None):
        super().__init__()
        lambdas = torch.as_tensor(lambdas, dtype=torch.float64)
        check_lambdas(lambdas)
        if getattr(process, "kind", "ddpm") == "ddpm" and process.config.get("rescale_betas_zero_snr"):
            from vfusion.errors import UserError

            raise UserError("VideoFusion composes in ε-space, which has no x at zero terminal SNR "
                            "(rescale_betas_zero_snr=true: sqrt(ᾱ_T) = 0); use a base without zero-SNR rescaling "
                            "or a baseline model (model.name=video_unet)")
        self.base = base
        self.residual = residual
        self.process = process
        self.num_frames = lambdas.numel()
        self.keyframe = keyframe_index(self.num_frames)
        others = [i for i in range(self.num_frames) if i != self.keyframe]
        self.register_buffer("lambdas", lambdas.float(), persistent=False)
        # a time-dependent prior: λ moves linearly from ``lambdas`` (t = 0) to ``lambdas_T`` with the noise level
        if lambdas_T is None:
            self.lambdas_T = None
        else:
            lambdas_T = torch.as_tensor(lambdas_T, dtype=torch.float64)
            check_lambdas(lambdas_T)
            self.register_buffer("lambdas_T", lambdas_T.float(), persistent=False)
        self.register_buffer("other_frames", torch.tensor(others, dtype=torch.long), persistent=False)

    def base_parameters(self):
        return self.base.parameters()

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[Cond] = None) -> torch.Tensor:
        b, c, n, h, w = x_t.shape
        if n != self.num_frames:
            raise ValueError(f"VideoFusion was built for {self.num_frames} frames, got {n}")
        k = self.keyframe
        z_key = x_t[:, :, k]
        key_pred = self.base(z_key, t, cond)                                           # the process's target
        b_hat = self.process.to_eps(key_pred, z_key, t).unsqueeze(2)                   # (B, C, 1, H, W)
        lam = self.lambdas.to(x_t.dtype)[self.other_frames].view(1, 1, -1, 1, 1)       # (1, 1, T-1, 1, 1)
        if self.lambdas_T is not None:                                                 # λ at each sample's level
            u = self.process.noise_level(t).to(x_t.dtype).view(b, 1, 1, 1, 1)
            lam = lambdas_at_level(lam, self.lambdas_T.to(x_t.dtype)[self.other_frames].view(1, 1, -1, 1, 1), u)
        sigma = self.process.sigma(t).to(x_t.dtype).view(b, 1, 1, 1, 1)
        z_other = x_t.index_select(2, self.other_frames)                               # (B, C, T-1, H, W)
        z_prime = z_other - lam.sqrt() * sigma * b_hat.detach()
        r_hat = self.residual(z_prime, t, self.other_frames, cond)                     # (B, C, T-1, H, W)
        other = self.process.compose(b_hat, r_hat, lam, z_other, t)                    # the process's target
        # the keyframe's prediction is the base's own (λ^k = 1): exact, with no round trip through ε
        return torch.cat([other[:, :, :k], key_pred.unsqueeze(2), other[:, :, k:]], dim=2)

    # ---- registry protocol ---------------------------------------------------------------------
    @classmethod
    def build(cls, cfg, spec: ModelSpec) -> "VideoFusion":
        base = BaseGenerator(base_network(cfg.model.base, spec), spec.num_classes, spec.base)
        residual = ResidualGenerator.from_experiment(cfg.model.residual, spec)
        return cls(base, residual, keyframe_lambdas(spec.noise), spec.process, getattr(spec.noise, "lambdas_T", None))

    def pipeline_components(self) -> dict:
        return {"base": self.base.unet, "residual": self.residual}

    @classmethod
    def from_pipeline_components(cls, components: dict, spec: ModelSpec) -> "VideoFusion":
        return cls(BaseGenerator(components["base"], spec.num_classes, spec.base), components["residual"],
                   keyframe_lambdas(spec.noise), spec.process, getattr(spec.noise, "lambdas_T", None))
