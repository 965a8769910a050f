"""What a published image backbone costs as VideoFusion's base generator, counted from its config.

No weights are needed: each architecture is built from its published config on PyTorch's ``meta``
device (shapes only, no memory, no arithmetic). For one frame at the backbone's native resolution it
counts

- parameters, and the bytes of weights + gradients + AdamW state when the base is trained;
- FLOPs of a forward pass (``torch.utils.flop_counter.FlopCounterMode``; a training step is ≈ 3x);
- the activation bytes autograd saves for the backward pass (every tensor passed to
  ``saved_tensors_hooks`` in a forward pass with gradients), i.e. the activation memory of training
  one frame without gradient checkpointing (fp32; bf16 autocast roughly halves it). A tensor saved
  by several operations is counted once; different views of one storage are counted separately, so
  the figure is an estimate (within tens of percent), not a measurement.

VideoFusion runs the base on ONE frame per clip (the keyframe), so the per-clip base cost is the
per-frame figure whatever the clip length; an independent-noise video model built on the same
image network pays it for every frame. Run: ``python experiments/backbone_cost.py [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

# published configs (diffusers config.json of the hub folders), only the keys that shape the network
BACKBONES = {
    "sd15_unet": ("UNet2DConditionModel", 4, 64, dict(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8),
        "Stable Diffusion 1.5 UNet, 512 px -> 64x64x4 latents, text 77x768"),
    "sd21_unet": ("UNet2DConditionModel", 4, 96, dict(
        sample_size=96, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20), use_linear_projection=True),
        "Stable Diffusion 2.1 (768, v-prediction) UNet, 768 px -> 96x96x4 latents, text 77x1024"),
    "dit_xl2_256": ("DiTTransformer2DModel", 4, 32, dict(
        num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28, sample_size=32,
        patch_size=2, num_embeds_ada_norm=1000),
        "DiT-XL/2 256, 256 px -> 32x32x4 latents, learned sigma"),
    "ddpm_cifar10_32": ("UNet2DModel", 3, 32, dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
        "pixel-space UNet2DModel (google/ddpm-cifar10-32 layout), 32x32 RGB"),
}
TEXT = {"sd15_unet": (77, 768), "sd21_unet": (77, 1024)}


def count(name: str) -> dict:
    import diffusers
    from torch.utils.flop_counter import FlopCounterMode

    cls_name, channels, size, config, what = BACKBONES[name]
    with torch.device("meta"):
        net = getattr(diffusers, cls_name)(**config)
        x = torch.randn(1, channels, size, size, requires_grad=False)
        t = torch.tensor([500])
        kwargs = {}
        if name in TEXT:
            kwargs["encoder_hidden_states"] = torch.randn(1, *TEXT[name])
        if cls_name == "DiTTransformer2DModel":
            kwargs["class_labels"] = torch.tensor([1])
    params = sum(p.numel() for p in net.parameters())
    saved, seen = [0], {}

    def pack(tensor):  # a tensor saved by several ops is counted once (kept alive so ids stay unique)
        if id(tensor) not in seen:
            seen[id(tensor)] = tensor
            saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    flops = FlopCounterMode(display=False)
    with flops, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x, t, **kwargs).sample if cls_name != "DiTTransformer2DModel" else \
            net(x, timestep=t, **kwargs).sample
    assert out.shape[1] in (channels, 2 * channels)
    return {"backbone": name, "what": what, "params_M": round(params / 1e6, 1),
            "weights_fp32_GB": round(params * 4 / 1e9, 2),
            "train_state_fp32_GB": round(params * 16 / 1e9, 2),  # weights + grads + AdamW m, v
            "forward_GFLOPs_per_frame": round(flops.get_total_flops() / 1e9, 1),
            "saved_activations_fp32_GB_per_frame": round(saved[0] / 1e9, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    rows = [count(name) for name in BACKBONES]
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
