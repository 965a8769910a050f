"""C3D (Tran et al., ICCV 2015) for the UCF-101 Inception Score (``is_ucf_c3d``).

No C3D fine-tuned on UCF-101 is reachable from PyPI, so the user supplies the state
dict (``--c3d-weights`` / ``eval.c3d_weights``); its sha256 goes into ``metrics.json``
(:func:`vfusion.evaluation.weights.file_sha256`). The protocol (TGAN, Saito et al.
2017/2020; StyleGAN-V) feeds the network 16 frames, short side resized to 128, center
crop 112x112, BGR on the 0..255 scale minus the training mean pixel.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vfusion.evaluation.weights import WeightsError, describe_file
from vfusion.layout import fold_frames, unfold_frames

C3D_NUM_FRAMES = 16
C3D_RESIZE = 128
C3D_CROP = 112
# Mean pixel of C3D's Sports-1M training clips in BGR order, as used by TGAN2's port
# (pfnet-research/tgan2, c3d_ucf101.py). A state dict may carry its own ``input_mean``.
C3D_DEFAULT_MEAN_BGR = (90.25164795, 97.65701294, 101.4083252)


class C3D(nn.Module):
    """The standard C3D (8 conv3d 3x3x3, 5 max-pools, fc6/fc7/fc8).

    ``forward`` takes the network input (B, 3, 16, 112, 112): BGR, 0..255 minus
    ``input_mean``; use :func:`c3d_preprocess` (or :class:`C3DClassifier`) to get it from
    project clips. Returns fc8 logits (B, num_classes).
    """

    convs = (("conv1", 3, 64), ("conv2", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
             ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512))

    def __init__(self, num_classes: int = 101):
        super().__init__()
        for name, cin, cout in self.convs:
            self.add_module(name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
        self.fc6 = nn.Linear(512 * 4 * 4, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.register_buffer("input_mean", torch.tensor(C3D_DEFAULT_MEAN_BGR).view(3, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or tuple(x.shape[1:]) != (3, C3D_NUM_FRAMES, C3D_CROP, C3D_CROP):
            raise ValueError(f"C3D expects (B, 3, {C3D_NUM_FRAMES}, {C3D_CROP}, {C3D_CROP}), got "
                             f"{tuple(x.shape)}; prepare clips with c3d_preprocess")
        relu = F.relu
        x = F.max_pool3d(relu(self.conv1(x)), (1, 2, 2))                    # (B, 64, 16, 56, 56)
        x = F.max_pool3d(relu(self.conv2(x)), 2)                            # (B, 128, 8, 28, 28)
        x = F.max_pool3d(relu(self.conv3b(relu(self.conv3a(x)))), 2)        # (B, 256, 4, 14, 14)
        x = F.max_pool3d(relu(self.conv4b(relu(self.conv4a(x)))), 2)        # (B, 512, 2, 7, 7)
        x = F.max_pool3d(relu(self.conv5b(relu(self.conv5a(x)))), 2, padding=(0, 1, 1))  # (B, 512, 1, 4, 4)
        x = relu(self.fc6(x.flatten(1)))
        x = relu(self.fc7(x))
        return self.fc8(x)


def c3d_preprocess(videos: torch.Tensor, mean_bgr: torch.Tensor) -> torch.Tensor:
    """Project clips (B, 3, 16, H, W) RGB in [-1, 1] -> C3D input (B, 3, 16, 112, 112).

    Short side resized (bilinear) to 128, center crop 112, RGB -> BGR, 0..255 minus the mean.
    """
    if videos.dim() != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected clips (B, 3, T, H, W) in [-1, 1], got shape {tuple(videos.shape)}")
    b, c, t, h, w = videos.shape
    if t != C3D_NUM_FRAMES:
        raise ValueError(f"the UCF-101 Inception Score protocol feeds C3D {C3D_NUM_FRAMES} frames, got {t}; "
                         f"sample 16-frame clips")
    scale = C3D_RESIZE / min(h, w)
    size = (max(C3D_RESIZE, round(h * scale)), max(C3D_RESIZE, round(w * scale)))
    frames = fold_frames(videos.float())
    if (h, w) != size:
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    top, left = (size[0] - C3D_CROP) // 2, (size[1] - C3D_CROP) // 2
    frames = frames[:, :, top:top + C3D_CROP, left:left + C3D_CROP]
    frames = unfold_frames(frames, t)
    pixels = (frames.clamp(-1, 1) + 1) * 127.5
    return pixels.flip(1) - mean_bgr.to(pixels)


class C3DClassifier(nn.Module):
    """C3D with the protocol's preprocessing: project clips in, (B, num_classes) logits out."""

    def __init__(self, net: C3D):
        super().__init__()
        self.net = net

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        return self.net(c3d_preprocess(videos, self.net.input_mean))


def load_c3d(path: str | Path, device: str | torch.device = "cpu") -> C3DClassifier:
    """Load a user-supplied C3D state dict (``torch.save``; plain, ``{"state_dict": ...}`` and
    ``module.``-prefixed keys accepted). Every weight must match the architecture; a file
    without ``input_mean`` uses :data:`C3D_DEFAULT_MEAN_BGR`. The returned module is in eval
    mode and carries ``detector_info`` (path, sha256, bytes) to record with the score."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"C3D weights file {path} does not exist; pass the path of a C3D fine-tuned on "
                           f"UCF-101 (these weights cannot be downloaded here)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise WeightsError(f"{path} is not a torch state-dict file ({type(err).__name__}: {err}); "
                           f"save the C3D weights with torch.save(model.state_dict(), path)") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    num_classes = state["fc8.weight"].shape[0] if "fc8.weight" in state else 101
    net = C3D(num_classes)
    mean = state.pop("input_mean", None)
    if mean is not None:
        if tuple(mean.shape) == (3,):
            mean = mean.view(3, 1, 1, 1)
        if tuple(mean.shape) not in ((3, 1, 1, 1), (3, C3D_NUM_FRAMES, C3D_CROP, C3D_CROP)):
            raise WeightsError(f"{path}: input_mean has shape {tuple(mean.shape)}; expected (3,), (3, 1, 1, 1) "
                               f"or (3, {C3D_NUM_FRAMES}, {C3D_CROP}, {C3D_CROP}) (BGR, 0..255 scale)")
        net.input_mean = mean.float()
    expected = {k: v for k, v in net.state_dict().items() if k != "input_mean"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise WeightsError(f"{path} does not match the C3D architecture (missing {missing}, unexpected "
                           f"{unexpected}, wrong shapes {wrong}); expected keys like conv1.weight ... fc8.bias")
    state["input_mean"] = net.input_mean
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model = C3DClassifier(net).eval().requires_grad_(False).to(device)
    model.detector_info = {"name": "c3d_ucf101", **describe_file(path)}
    return model
