"""What --mixed-precision auto picks, and the warning for a slow combination."""

import pytest

from fastgan_tf.training import precision


@pytest.mark.parametrize("capabilities, expected", [
    ([], "off"),                    # a CPU, whatever its flags: float32 (precision.py says why)
    ([(8, 6)], "bf16"), ([(9, 0), (8, 0)], "bf16"),
    ([(7, 5)], "on"), ([(8, 6), (7, 0)], "on"),  # the slowest GPU decides
    ([(6, 1)], "off"), ([None], "off"),
])
def test_auto_precision(capabilities, expected):
    assert precision.auto_precision(capabilities) == expected


def test_bf16_with_determinism_on_a_cpu_is_warned_about():
    message = precision.slow_combination("bf16", deterministic=True, on_gpu=False)
    assert "--deterministic" in message and "--mixed-precision off" in message
    assert precision.slow_combination("bf16", deterministic=True, on_gpu=True) is None
    assert precision.slow_combination("bf16", deterministic=False, on_gpu=False) is None
    assert precision.slow_combination("off", deterministic=True, on_gpu=False) is None
