import math

import pytest
import torch
from torch import nn

from compactnas.evaluators import zerocost
from compactnas.spaces.build import create_model
from compactnas.spaces.nb201 import nb201_spec


def test_synflow_of_one_linear_layer_is_the_log_of_its_absolute_weights():
    layer = nn.Linear(4, 3, bias=False)
    x = torch.randn(5, 4)
    expected = math.log(float(layer.weight.detach().abs().sum()))
    assert zerocost.synflow(layer, x, torch.zeros(5, dtype=torch.long)) == pytest.approx(expected)


def test_naswot_kernel_counts_agreeing_units():
    # codes [1, 0] and [1, 1]: K = [[2, 1], [1, 2]], log det = log 3
    net = nn.Sequential(nn.Flatten(), nn.ReLU())
    x = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    assert zerocost.naswot(net, x, torch.zeros(2, dtype=torch.long)) == pytest.approx(math.log(3))
    assert math.isnan(zerocost.naswot(nn.Flatten(), x, torch.zeros(2, dtype=torch.long)))


def _cell_model():
    torch.manual_seed(0)
    return create_model(nb201_spec("123321", cells=1), num_classes=10, in_chans=3)


def test_every_proxy_is_finite_deterministic_and_leaves_the_weights_alone():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    model = _cell_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    timings = {}
    first = zerocost.score(model, x, y, timings=timings)
    second = zerocost.score(_cell_model(), x, y)
    assert set(first) == set(zerocost.PROXIES) == set(timings)
    assert all(math.isfinite(v) for v in first.values()), first
    assert first == second
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def test_a_wider_network_has_more_synflow_and_parameters():
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    torch.manual_seed(0)
    narrow = create_model(nb201_spec("333333", channels=8, cells=1), num_classes=10, in_chans=3)
    torch.manual_seed(0)
    wide = create_model(nb201_spec("333333", channels=16, cells=1), num_classes=10, in_chans=3)
    a = zerocost.score(narrow, x, y, ["synflow", "params"])
    b = zerocost.score(wide, x, y, ["synflow", "params"])
    assert b["synflow"] > a["synflow"] and b["params"] > a["params"]


def test_ranks_share_ties_and_put_nan_last():
    assert zerocost.ranks([3.0, 1.0, 3.0, float("nan")]) == [2.5, 1.0, 2.5, 0.0]


def test_rank_vote_averages_ranks_over_the_chosen_proxies():
    table = [{"a": 1.0, "b": 30.0}, {"a": 2.0, "b": 10.0}, {"a": 3.0, "b": 20.0}]
    # ranks a: 0, 1, 2; b: 2, 0, 1 -> means 1, 0.5, 1.5 over a top rank of 2
    assert zerocost.rank_vote(table, ["a", "b"]) == pytest.approx([0.5, 0.25, 0.75])
    assert zerocost.rank_vote([], ["a"]) == []


def test_unknown_proxy_is_named():
    with pytest.raises(ValueError, match="unknown zero-cost proxy 'zen'"):
        zerocost.score(
            nn.Linear(2, 2), torch.randn(2, 2), torch.zeros(2, dtype=torch.long), ["zen"]
        )
