"""Base UNet loading through from_pretrained: model dirs, pipeline dirs, class embeddings, errors."""

import pytest
import torch

from tests.conftest import tiny_config
from vfusion.models.base_generator import base_network
from vfusion.models.spec import ModelSpec
from vfusion.models.unet2d import CheckpointError, build_unet, load_unet, unet_forward


def _spec(classes=0, channels=3):
    return ModelSpec(channels, 16, 4, classes)


@pytest.mark.parametrize("arch", ["unet2d", "unet2d_condition"])
@pytest.mark.parametrize("layout", ["model", "pipeline"])
def test_round_trip(tmp_path, arch, layout):
    cfg = tiny_config(tmp_path, f"model.base.arch={arch}")
    unet = build_unet(cfg.model.base, 3, 3, 16, num_class_embeds=3)
    target = tmp_path / "ckpt" / ("unet" if layout == "pipeline" else "")
    unet.save_pretrained(str(target))
    cfg.model.base.pretrained = str(tmp_path / "ckpt")
    loaded = base_network(cfg.model.base, _spec(classes=2))
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 500]), torch.tensor([0, 2])
    assert torch.allclose(unet_forward(unet, x, t, y), unet_forward(loaded, x, t, y), atol=1e-6)


def test_unconditional_checkpoint_gets_zero_class_embedding(tmp_path):
    cfg = tiny_config(tmp_path)
    unet = build_unet(cfg.model.base, 3, 3, 16)
    unet.save_pretrained(str(tmp_path / "u"))
    loaded = load_unet(tmp_path / "u", num_class_embeds=5)
    assert loaded.class_embedding.weight.abs().sum() == 0
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 300])
    assert torch.allclose(unet_forward(unet, x, t), unet_forward(loaded, x, t, torch.tensor([1, 4])), atol=1e-6)


def test_errors_are_clear(tmp_path):
    cfg = tiny_config(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_unet(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        load_unet(tmp_path / "empty")
    unet = build_unet(cfg.model.base, 3, 3, 16, num_class_embeds=4)
    unet.save_pretrained(str(tmp_path / "c3"))
    with pytest.raises(CheckpointError, match="classes"):
        load_unet(tmp_path / "c3", num_class_embeds=7)
    cfg.model.base.pretrained = str(tmp_path / "c3")
    with pytest.raises(CheckpointError, match="input channels"):
        base_network(cfg.model.base, _spec(classes=3, channels=4))
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    with pytest.raises(CheckpointError, match="not a 2D UNet"):
        load_unet(tmp_path / "vae")
