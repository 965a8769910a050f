"""Zero-initialised temporal layers for networks that see frames folded into the batch.

A 2D network processes ``(B*T, C, H, W)`` (frames folded by :func:`vfusion.layout.fold_frames`); a
:class:`TemporalMixer` placed after one of its spatial layers, run by a :class:`TemporalHook`, mixes information
across the T frames of each clip and returns the same layout. It is a residual layer whose last projection starts
at zero, so at initialisation it is exactly the identity (``h + 0``, bit for bit) and the inflated network equals
the image network applied per frame. One module serves every model that mixes frames: the video-UNet baseline
(after each spatial unit, :mod:`vfusion.models.video_unet`) and VideoFusion's residual generator (at its
bottleneck, ``model.residual.temporal``, :mod:`vfusion.models.residual_generator`). Both mixers are diffusers' own
layers, not re-implementations (:class:`TemporalMixer`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.utils.checkpoint
from diffusers.models.resnet import TemporalConvLayer
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

TEMPORAL_KINDS = ("conv", "attention", "both")


class TemporalMixer(nn.Module):
    """Temporal conv and/or temporal attention on ``(B*T, C, H, W)``; identity at init.

    Both are diffusers' own layers. ``conv``: :class:`diffusers.models.resnet.TemporalConvLayer` (ModelScope /
    UNet3D "pseudo-3D" temporal convolution: four (3, 1, 1) Conv3d with GroupNorm + SiLU; diffusers already
    zero-initialises its last conv; its kernel size is fixed at 3 by diffusers). ``attention``:
    :class:`diffusers.models.unets.unet_motion_model.AnimateDiffTransformer3D` (the AnimateDiff motion module
    that ``UNetMotionModel`` inserts: per-pixel self-attention along time with sinusoidal frame positions);
    diffusers leaves its output projection randomly initialised (AnimateDiff zero-initialises it); it is zeroed
    here.
    """

    def __init__(self, channels: int, kind: str = "both", num_heads: int = 4, norm_groups: int = 32,
                 max_frames: int = 32, heads_key: str = "model.video_unet.attention_heads"):
        """``heads_key``: the config key of ``num_heads``, named when it does not divide ``channels``."""
        super().__init__()
        if kind not in TEMPORAL_KINDS:
            raise ValueError(f"temporal layer kind '{kind}'; expected one of {', '.join(TEMPORAL_KINDS)}")
        if kind != "conv" and channels % num_heads:
            raise ValueError(f"temporal attention: {channels} channels are not divisible by {num_heads} heads "
                             f"(set {heads_key} to a divisor of every width a temporal layer follows)")
        if channels % norm_groups:
            raise ValueError(f"temporal layers: {channels} channels are not divisible by {norm_groups} norm groups")
        self.conv = TemporalConvLayer(channels, channels, norm_num_groups=norm_groups) if kind != "attention" else None
        self.attn = None
        if kind != "conv":
            self.attn = AnimateDiffTransformer3D(
                num_attention_heads=num_heads, attention_head_dim=channels // num_heads, in_channels=channels,
                norm_num_groups=norm_groups, positional_embeddings="sinusoidal",
                num_positional_embeddings=max_frames)
            nn.init.zeros_(self.attn.proj_out.weight)
            nn.init.zeros_(self.attn.proj_out.bias)

    def forward(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        # (B*T, C, H, W) -> (B*T, C, H, W); both diffusers layers add their own residual
        if self.conv is not None:
            h = self.conv(h, num_frames=num_frames)
        if self.attn is not None:
            h = self.attn(h, num_frames=num_frames)
        return h

    def output_layers(self) -> list[nn.Module]:
        """The zero-initialised last projections (what keeps the mixer an identity at init)."""
        layers = []
        if self.conv is not None:
            layers.append(self.conv.conv4[-1])
        if self.attn is not None:
            layers.append(self.attn.proj_out)
        return layers


class TemporalHook(nn.Module):
    """Forward hook running a :class:`TemporalMixer` on a spatial unit's ``(B*T, C, H, W)`` output.

    The owning model sets ``num_frames`` for the duration of its forward (and back to None
    after it); with ``num_frames`` None the hook leaves the output alone, so the wrapped 2D
    network called on its own is the per-frame image network. A module rather than a closure,
    so ``copy.deepcopy`` (EMA) and pickling keep each copy's hook on its own mixer.
    """

    def __init__(self, mixer: TemporalMixer):
        super().__init__()
        self.mixer = mixer
        self.num_frames: Optional[int] = None

    def forward(self, module: nn.Module, args, output):
        if self.num_frames is None:
            return None  # plain image-model call: leave the output alone
        if isinstance(output, tuple):  # e.g. Transformer2DModel(return_dict=False)
            return (self.mixer(output[0], self.num_frames),) + tuple(output[1:])
        return self.mixer(output, self.num_frames)


@contextmanager
def mixing_frames(hooks, num_frames: Optional[int]) -> Iterator[None]:
    """``with mixing_frames(hooks, T):`` every hook mixes T frames inside the block, none after it
    (each hook gets back the frame count it had before, so the contexts nest)."""
    hooks = list(hooks)
    before = [hook.num_frames for hook in hooks]
    for hook in hooks:
        hook.num_frames = None if num_frames is None else int(num_frames)
    try:
        yield
    finally:
        for hook, n in zip(hooks, before):
            hook.num_frames = n


def checkpoint_keeping_frames(module: nn.Module, *args):
    """A diffusers ``gradient_checkpointing_func`` for networks whose units carry :class:`TemporalHook` s.

    The backward pass recomputes a checkpointed unit after the model's forward has ended, when its
    hooks' frame count is back to None; left alone the recomputation would skip the temporal mixer
    that the forward pass ran. This runs the recomputation with the frame count of the forward pass.
    The hooks are found on the unit itself, so a copy of the model uses its own."""
    hooks = [h for m in module.modules() for h in m._forward_hooks.values() if isinstance(h, TemporalHook)]
    frames = hooks[0].num_frames if hooks else None

    def run(*a):
        with mixing_frames(hooks, frames):
            return module(*a)

    return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False)


class TemporalCheckpointing:
    """Mixin for a diffusers ``ModelMixin`` whose units carry :class:`TemporalHook` s: its gradient
    checkpointing recomputes each unit through :func:`checkpoint_keeping_frames`."""

    _supports_gradient_checkpointing = True

    def enable_gradient_checkpointing(self, gradient_checkpointing_func=None) -> None:
        super().enable_gradient_checkpointing(gradient_checkpointing_func or checkpoint_keeping_frames)


def spatial_units(unet: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """``(name, module, channels)`` of the spatial units a temporal layer follows.

    Per down/mid/up block: its spatial attentions when it has any, else its resnets.
    """
    return [(name, layer, channels) for name, layer, channels, _ in spatial_units_with_levels(unet)]


def spatial_units_with_levels(unet: nn.Module) -> list[tuple[str, nn.Module, int, int]]:
    """:func:`spatial_units` with each unit's level (0: full resolution; each level halves the size;
    the middle block is at the last level, and up block j at level L - 1 - j before its upsampler)."""
    last = len(unet.down_blocks) - 1
    blocks = [(f"down_blocks.{i}", b, i) for i, b in enumerate(unet.down_blocks)]
    blocks += [("mid_block", unet.mid_block, last)] if unet.mid_block is not None else []
    blocks += [(f"up_blocks.{i}", b, last - i) for i, b in enumerate(unet.up_blocks)]
    units = []
    for name, block, level in blocks:
        attns = [a for a in (getattr(block, "attentions", None) or []) if a is not None]
        kind, layers = ("attentions", attns) if attns else ("resnets", list(block.resnets))
        for j, layer in enumerate(layers):
            channels = block.resnets[min(j, len(block.resnets) - 1)].out_channels
            units.append((f"{name}.{kind}.{j}", layer, channels, level))
    return units
