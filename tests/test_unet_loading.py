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


def test_attention_resolutions_choose_the_levels_with_attention(tmp_path):
    """``attention_resolutions`` names feature-map sizes: at 32x32 with three levels (32, 16, 8), [8] puts
    attention only in the 8x8 level (and the middle block, which runs at 8x8); unset keeps the two smallest."""
    def blocks(*overrides):
        cfg = tiny_config(tmp_path / "run", "data.resolution=32", "model.base.block_out_channels=[8,16,16]",
                          *overrides)
        unet = build_unet(cfg.model.base, 3, 3, 32)
        n_attn = sum(type(m).__name__ == "Attention" for m in unet.modules())
        return unet.config.down_block_types, unet.config.up_block_types, n_attn

    down, up, n_default = blocks()
    assert down == ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    assert up == ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    down, up, n_8 = blocks("model.base.attention_resolutions=[8]")
    assert down == ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    assert up == ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    # layers_per_block=1: one attention per down unit, two per up unit (layers + 1), one in the middle
    assert (n_default, n_8) == (1 + 2 + 1 + 2 + 1 + 0, 1 + 2 + 1)
    down, _, n_none = blocks("model.base.attention_resolutions=[8]", "model.base.attention=false")
    assert down == ("DownBlock2D",) * 3 and n_none == 0


def test_attention_at_a_size_the_unet_does_not_have_is_a_config_error(tmp_path):
    from vfusion.config import ConfigError

    with pytest.raises(ConfigError, match=r"model.base.attention_resolutions.*\[4\].*\[16, 8\]"):
        tiny_config(tmp_path / "run", "model.base.attention_resolutions=[4]")   # 16x16 input, two levels
    assert not (tmp_path / "run").exists()
