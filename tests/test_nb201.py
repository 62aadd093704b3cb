"""The nb201 space: NAS-Bench-201 notation, the grammar's cell segments, and the layer list."""

import itertools

import pytest
import torch

from compactnas.core.errors import ArchStringError
from compactnas.evaluators import count_macs as measured_macs
from compactnas.evaluators import count_parameters
from compactnas.spaces import create_model, format_arch, parse_arch
from compactnas.spaces.layers import arch_layers, count_macs, count_params
from compactnas.spaces.nb201 import EDGES, OPS, nb201_spec, parse_nb201_string, to_nb201_string

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
CUT_OFF = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|none~2|"


def test_notation_round_trips_through_our_grammar():
    archs = [BEST, CUT_OFF]
    # A spread of cells: each operator on each edge at least once.
    for k in range(len(OPS)):
        ops = [OPS[(k + e) % len(OPS)] for e in range(len(EDGES))]
        archs.append(to_nb201_string(nb201_spec(tuple(ops))))
    assert len(set(archs)) == len(archs) >= 7
    for text in archs:
        spec = parse_arch(text)  # NAS-Bench-201 notation wherever an architecture is read
        assert spec == parse_nb201_string(text)
        ours = format_arch(spec)
        assert ours.startswith("stem_k3_s1_c16-cell_r5_c16_o") and ours.endswith("-head_c0")
        assert parse_arch(ours) == spec
        assert to_nb201_string(ours) == text


def test_known_sizes_match_nas_bench_201():
    # NAS-Bench-201 (CIFAR-10): the all-3x3 cell has 1.53 MB parameters and 220.11 M FLOPs (MACs).
    big = nb201_spec(("nor_conv_3x3",) * 6)
    assert count_params(big, (3, 32, 32), 10) == 1_531_546
    assert count_macs(big, (3, 32, 32), 10) == 220_119_680


@pytest.mark.parametrize(
    "text",
    [
        BEST,
        CUT_OFF,
        "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|skip_connect~2|",
    ],
)
def test_layer_list_matches_built_model(text):
    torch.manual_seed(0)
    spec = parse_arch(text)
    model = create_model(spec, num_classes=100, in_chans=3).eval()
    shape = (3, 32, 32)
    assert count_parameters(model) == count_params(spec, shape, 100)
    assert measured_macs(model, shape) == count_macs(spec, shape, 100)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 100) and torch.isfinite(out).all()
    ops = [layer.op for layer in arch_layers(spec, shape, 100)]
    assert ops[-3:] == ["bn", "gap", "linear"]


def test_cut_off_cell_is_valid_and_constant():
    model = create_model(CUT_OFF, num_classes=10, in_chans=3).eval()
    a, b = model(torch.randn(1, 3, 32, 32)), model(torch.randn(1, 3, 32, 32))
    assert torch.equal(a, b)  # the output no longer depends on the input


@pytest.mark.parametrize(
    "bad, match",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3 nodes"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "bad operator 'conv'"),
        ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "bad edge"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 takes 2 inputs"),
        ("stem_k3_s1_c16-cell_r5_c16_o33333-head_c0", "6 edge operators"),
        ("stem_k3_s1_c16-cell_r5_c16_o333335-head_c0", "6 edge operators"),
    ],
)
def test_bad_strings_are_clear_errors(bad, match):
    with pytest.raises(ArchStringError, match=match):
        parse_arch(bad)


def test_other_skeletons_have_no_nb201_notation():
    spec = nb201_spec(("nor_conv_3x3",) * 6, cells=3)
    assert parse_arch(format_arch(spec)) == spec
    with pytest.raises(ArchStringError, match="not a NAS-Bench-201 network"):
        to_nb201_string(spec)


def test_all_cells_are_distinct_strings():
    cells = list(itertools.product(OPS, repeat=6))
    assert len(cells) == 15625
    texts = {format_arch(nb201_spec(c)) for c in cells[::97]}
    assert len(texts) == len(cells[::97])


def test_host_table_units_follow_the_cell_skeleton():
    """A lookup table times an nb201 network's stem without ReLU and its tail with the last BN + ReLU,
    under keys apart from a mobile network's stem and tail."""
    import torch

    from compactnas.hw_profiles.units import build_unit, network_units
    from compactnas.spaces.build import create_model

    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    spec = parse_nb201_string(arch)
    units = network_units(spec, (3, 32, 32))
    stem, tail = units[0], units[-1]
    assert stem.key == "stem_k3_s1_c16_noact@3x32x32" and tail.key.startswith(
        "lastact-head_c0@64x8x8"
    )
    mobile = network_units("stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-head_c0", (3, 32, 32))
    assert mobile[0].key == "stem_k3_s1_c16@3x32x32" and not mobile[-1].key.startswith("lastact")
    net = create_model(spec, num_classes=10, in_chans=3).eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        s = build_unit(stem, num_classes=10).eval()
        s.load_state_dict(net.stem.state_dict())
        assert torch.allclose(s(x), net.stem(x))  # no ReLU: negative outputs kept
        assert (s(x) < 0).any()
        t = build_unit(tail, num_classes=10).eval()
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in t.modules()) == 1
        assert t(torch.randn(2, 64, 8, 8)).shape == (2, 10)


def test_one_shot_supernet_paths_are_the_stand_alone_networks():
    import torch

    from compactnas.evaluators.train import TrainConfig, train
    from compactnas.spaces.nb201_supernet import NB201Supernet, recalibrate

    torch.manual_seed(0)
    net = NB201Supernet(num_classes=4, in_chans=1, channels=4)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
    # Single-path training through the project's train(): each batch draws its own cell, so
    # both convolutions of an edge receive updates.
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.sample_paths(0)
    train(net, x, y, TrainConfig(epochs=4, batch_size=2, lr=0.05, optimizer="sgd", seed=0,
                                 train_device="cpu", precision="fp32", augment="off"))  # fmt: skip
    after = net.state_dict()
    for conv in ("conv1", "conv3"):
        key = f"stages.0.0.edges.0.{conv}.1.weight"
        assert not torch.equal(before[key], after[key]), key
    net.sample_paths(None)
    for ops in ("123401", "000000", "334433"):
        net.set_cell(ops)
        recalibrate(net, [x[:8], x[8:]])
        net.eval()
        model = net.subnetwork(ops).eval()
        assert torch.allclose(model(x), net(x), atol=1e-5)
    with pytest.raises(ValueError, match="six operator indices"):
        net.set_cell("12345")
