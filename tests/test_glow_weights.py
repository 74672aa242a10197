"""The GLOW weight function and GLOWConfig validation: pure, hand-derived values.

python -m pytest tests/test_glow_weights.py
"""

import math

import pytest
import torch

from glowrl import GLOWConfig, glow_weights


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_published_formula_offset_0():
    # α=1, β=20, offset 0: w = 1 − σ(20·gain), clamped to [0.5, 5].
    gain = torch.tensor([-0.3, -0.1, -0.05, 0.0, 0.02, 0.1])
    expected = torch.tensor(
        [
            1 - sigmoid(-6.0),  # 0.99753: loss rose a lot -> close to the 1.0 ceiling of α=1
            1 - sigmoid(-2.0),  # 0.88080
            1 - sigmoid(-1.0),  # 0.73106
            0.5,  # 1 − σ(0) = 0.5 exactly
            0.5,  # 1 − σ(0.4) = 0.401 -> clamped up to min_weight 0.5
            0.5,  # 1 − σ(2) = 0.119 -> clamped
        ]
    )
    torch.testing.assert_close(glow_weights(gain, 1.0, 20.0, 0.0, 0.5, 5.0), expected)


def test_alternative_formula_offset_1():
    # α=1, β=20, offset 1: w = 1 + (1 − σ(20·gain)), so a sample whose loss did not move gets 1.5.
    gain = torch.tensor([-0.1, 0.0, 0.1])
    expected = torch.tensor([1 + (1 - sigmoid(-2.0)), 1.5, 1 + (1 - sigmoid(2.0))])  # [1.8808, 1.5, 1.1192]
    torch.testing.assert_close(glow_weights(gain, 1.0, 20.0, 1.0, 0.5, 5.0), expected)


def test_upper_clamp_binds_for_large_alpha():
    # α=10: 10·(1 − σ(−20)) ≈ 10 -> clamped down to max_weight 5; 10·(1 − σ(20)) ≈ 2e-8 -> clamped up to 0.5.
    gain = torch.tensor([-1.0, 1.0])
    torch.testing.assert_close(glow_weights(gain, 10.0, 20.0, 0.0, 0.5, 5.0), torch.tensor([5.0, 0.5]))


def test_custom_clamps_and_beta_zero():
    # β=0: every weight is offset + α/2 = 1 + 2/2 = 2, then clamped by max_weight 1.5.
    gain = torch.tensor([-5.0, 0.0, 5.0])
    torch.testing.assert_close(glow_weights(gain, 2.0, 0.0, 1.0, 0.1, 1.5), torch.tensor([1.5, 1.5, 1.5]))
    # α=2, β=10, offset 0, wide clamps: gain −0.1 -> 2σ(1) = 1.46212, gain 0.05 -> 2σ(−0.5) = 0.75508.
    torch.testing.assert_close(
        glow_weights(torch.tensor([-0.1, 0.05]), 2.0, 10.0, 0.0, 0.0, 10.0),
        torch.tensor([2 * sigmoid(1.0), 2 * sigmoid(-0.5)]),
    )


def test_weights_are_detached():
    gain = torch.tensor([0.1, -0.2], requires_grad=True)
    weights = glow_weights(gain * 2, 1.0, 20.0, 0.0, 0.5, 5.0)
    assert not weights.requires_grad


def test_large_gains_do_not_overflow():
    weights = glow_weights(torch.tensor([-1e6, 1e6]), 1.0, 20.0, 0.0, 0.5, 5.0)
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.5]))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"glow_alpha": -1.0}, "glow_alpha"),
        ({"glow_beta": -0.5}, "glow_beta"),
        ({"glow_min_weight": 2.0, "glow_max_weight": 1.0}, "glow_min_weight"),
        ({"glow_reduction": "batch"}, "glow_reduction"),
        ({"glow_warmup_epochs": -1}, "glow_warmup_epochs"),
        ({"packing": True}, "packing"),
        ({"padding_free": True}, "padding_free"),
        ({"loss_type": "dft"}, "loss_type"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        GLOWConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **overrides)


def test_config_allows_packing_without_glow(tmp_path):
    config = GLOWConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, glow=False, packing=True)
    assert config.packing and not config.glow


def test_config_docstring_documents_every_glow_field():
    from glowrl.glow.arguments import GLOWArguments

    glow_fields = [name for name in GLOWConfig.__dataclass_fields__ if name.startswith("glow")]
    assert glow_fields == list(GLOWArguments.__dataclass_fields__)
    for name in glow_fields:
        assert f"\n        {name} (`" in GLOWArguments.__doc__, name
        assert f"`{name}`" in GLOWConfig.__doc__, name
