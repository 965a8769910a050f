"""Independent-noise baseline (b) of method.md: the base image UNet inflated into a video UNet.

The same image UNet as VideoFusion's base generator (``model.base``: a local diffusers ``UNet2DModel`` /
``UNet2DConditionModel`` checkpoint, or built fresh) sees all T frames folded into the batch
(:func:`vfusion.layout.fold_frames`). After every spatial unit of its down, mid and up blocks (the spatial attention
where the block has one, else the resnet; AnimateDiff's placement) a :class:`vfusion.models.temporal.TemporalMixer`
(``model.video_unet.temporal_layers``) mixes the frames of each clip. The mixers are zero-initialised residual
layers, so at initialisation the video UNet equals the image UNet applied to every frame. It is a plain
eps-predictor; the trainer gives it i.i.d. per-frame noise (λ ≡ 0). Each mixer is a forward hook of the unit it
follows, so the image UNet's module tree and state-dict keys stay unchanged (``unet.*``; its weights can be saved
back as an image model), and ``model.unet`` called directly, outside :meth:`VideoUNet.forward`, is the per-frame
image model. Why not ``diffusers.UNetMotionModel.from_unet2d``: :class:`VideoUNet`.
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from vfusion.conditioning import Cond, label_ids
from vfusion.layout import fold_frames, repeat_per_frame, unfold_frames
from vfusion.models.base_generator import base_network
from vfusion.models.spec import ModelSpec
from vfusion.models.temporal import (TEMPORAL_KINDS, TemporalHook, TemporalMixer, TemporalCheckpointing,
                                     mixing_frames, spatial_units)
from vfusion.models.unet2d import UNET_CLASSES, count_parameters, unet_forward


class VideoUNet(TemporalCheckpointing, ModelMixin, ConfigMixin):
    """``forward(x_t (B,C,T,H,W), t (B,), cond) -> prediction (B,C,T,H,W)``.

    A diffusers ``ModelMixin`` built from its config alone (``unet_config`` is the image
    UNet's own config, ``_class_name`` included), so a pipeline saves and loads it as one
    component; for training, :meth:`build` hands in the (possibly pretrained) image UNet.

    Why not ``diffusers.UNetMotionModel.from_unet2d`` (AnimateDiff inflation)? Checked with diffusers 0.42: it
    only takes a ``UNet2DConditionModel`` (no ``UNet2DModel``, the project default); it always builds a
    cross-attention mid block with two resnets, so our ``unet2d_condition`` build (a ``UNetMidBlock2D``:
    a single resnet, no attention) fails while its mid block weights are copied
    (``Missing key(s) ... "1.norm1.weight"``); and ``UNetMotionModel`` has no class embedding and its
    ``forward`` takes no class labels, so class-conditional (UCF-101) training would lose its conditioning. So
    one light inflation serves both UNet classes, with the same diffusers layers ``UNetMotionModel``
    (``AnimateDiffTransformer3D``) and ``UNet3DConditionModel`` (``TemporalConvLayer``) use, each registered as
    a forward hook (:class:`vfusion.models.temporal.TemporalHook`, shared with the residual generator).
    """

    ignore_for_config = ["unet"]

    @register_to_config
    def __init__(self, unet_config: Optional[dict] = None, num_classes: int = 0, temporal_layers: str = "both",
                 attention_heads: int = 4, max_frames: int = 32, unet: Optional[nn.Module] = None):
        super().__init__()
        if temporal_layers not in TEMPORAL_KINDS:
            raise ValueError(f"model.video_unet.temporal_layers is '{temporal_layers}'; "
                             f"expected one of {', '.join(TEMPORAL_KINDS)}")
        if unet is None:
            unet = UNET_CLASSES[unet_config["_class_name"]].from_config(unet_config)
        self.unet = unet
        self.num_classes = num_classes
        groups = unet.config.norm_num_groups
        self.temporal = nn.ModuleList()
        self.temporal_names: list[str] = []
        for name, unit, channels in spatial_units(unet):
            hook = TemporalHook(TemporalMixer(channels, temporal_layers, attention_heads, groups, max_frames))
            unit.register_forward_hook(hook)
            self.temporal.append(hook)
            self.temporal_names.append(name)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[Cond] = None) -> torch.Tensor:
        b, _, frames = x_t.shape[:3]
        t = t.expand(b) if t.dim() == 0 else t
        labels = label_ids(cond, self.num_classes, b, x_t.device)
        labels = repeat_per_frame(labels, frames) if labels is not None else None  # (B*T,)
        context = cond.repeat_interleave(frames).text_states() if cond is not None else None
        with mixing_frames(self.temporal, frames):
            out = unet_forward(self.unet, fold_frames(x_t), repeat_per_frame(t, frames), labels, context)
        return unfold_frames(out, frames)

    def parameter_counts(self) -> dict:
        """Trainable/frozen counts of the whole model and of its spatial / temporal parts."""
        return {"all": count_parameters(self), "spatial": count_parameters(self.unet),
                "temporal": count_parameters(self.temporal)}

    # ---- registry protocol ---------------------------------------------------------------------
    @classmethod
    def build(cls, cfg, spec: ModelSpec) -> "VideoUNet":
        """The base UNet of ``cfg.model.base`` inflated per ``cfg.model.video_unet``."""
        vcfg = cfg.model.video_unet
        if spec.base.get("family", "unet") != "unet":
            from vfusion.models.unet2d import CheckpointError

            raise CheckpointError(f"model.name=video_unet inflates a UNet, but the base is a {spec.base['model_class']}; "
                                  "use model.name=videofusion (or image_unet) with a transformer base")
        unet = base_network(cfg.model.base, spec)
        text = bool(spec.base.get("text"))
        return cls(unet_config={**dict(unet.config), "_class_name": type(unet).__name__},
                   num_classes=0 if text else spec.num_classes, temporal_layers=vcfg.temporal_layers,
                   attention_heads=int(vcfg.attention_heads), max_frames=max(32, spec.num_frames), unet=unet)

    def pipeline_components(self) -> dict:
        return {"denoiser": self}

    @classmethod
    def from_pipeline_components(cls, components: dict, spec: ModelSpec) -> "VideoUNet":
        return components["denoiser"]
