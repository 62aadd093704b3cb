"""The weight-sharing supernet: sub-networks extracted from it are the networks their strings build."""

import random

import pytest
import torch

from compactnas.core.errors import ConfigError
from compactnas.spaces import create_model
from compactnas.spaces.elastic import ElasticSpace
from compactnas.spaces.layers import count_params
from compactnas.spaces.supernet import Supernet


def _perturbed(size: int, in_chans: int) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(ElasticSpace.for_image(size), num_classes=10, in_chans=in_chans)
    # Non-trivial batch-norm statistics and kernel maps, so a wrong slice cannot go unnoticed.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    for name, p in net.named_parameters():
        if "kernel_maps" in name:
            p.data += 0.05 * torch.randn_like(p)
    return net.eval()


@pytest.mark.parametrize(("size", "in_chans"), [(8, 1), (32, 3)])
def test_extracted_network_matches_the_supernet(size, in_chans):
    net = _perturbed(size, in_chans)
    space = net.space
    rng = random.Random(1)
    specs = [space.largest(), space.smallest(), *(space.random(rng) for _ in range(6))]
    x = torch.randn(3, in_chans, size, size)
    for spec in specs:
        sub = net.extract(spec).eval()
        assert type(sub) is type(create_model(spec, num_classes=10, in_chans=in_chans))
        assert str(sub.spec) == str(spec)
        assert sum(p.numel() for p in sub.parameters()) == count_params(spec, x.shape[1:], 10)
        with torch.no_grad():
            torch.testing.assert_close(sub(x), net(x, spec), rtol=1e-5, atol=1e-5)
    # Sub-networks differ: the comparison above could fail.
    with torch.no_grad():
        assert not torch.allclose(net(x, specs[0]), net(x, specs[1]))


def test_small_kernels_and_widths_share_the_large_weights():
    net = Supernet(ElasticSpace.for_image(8), num_classes=10, in_chans=1)
    small = net.space.smallest()
    sd = net.sub_state_dict(small)
    block = net.stages[0][0]
    # Kernel maps start as identity: a 3x3 kernel is the centre of the shared 7x7 one.
    torch.testing.assert_close(sd["stages.0.0.conv_dw.weight"], block.conv_dw[:24, :, 2:5, 2:5])
    assert sd["stem.0.weight"].shape[0] == small.stem.channels


def test_a_spec_outside_the_supernet_is_refused():
    net = Supernet(ElasticSpace.for_image(8), num_classes=10, in_chans=1)
    for bad in (
        "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-ir_r1_k3_s2_e3_c24-ir_r1_k3_s2_e3_c48-head_c0",
        "stem_k3_s1_c16-ir_r1_k3_s1_e3_c16_pr0.25-ir_r1_k3_s2_e3_c24-ir_r1_k3_s2_e3_c48-head_c0",
        "stem_k3_s1_c32-ir_r1_k3_s1_e3_c16-ir_r1_k3_s2_e3_c24-ir_r1_k3_s2_e3_c48-head_c0",
    ):
        with pytest.raises(ConfigError, match="not a sub-network"):
            net.extract(bad)


def test_space_round_trips_through_a_dict():
    space = ElasticSpace.for_image(32)
    assert ElasticSpace.from_dict(space.to_dict()) == space
