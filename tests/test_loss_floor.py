"""`figures.common.loss_floor`: the loss below which round-off in the outputs moves the
convergence figure's recorded digits (checked against the first-order bound it states)."""
import numpy as np
import pytest

from ntkngd.figures.common import loss_floor


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_worst_case_round_off_moves_the_floor_loss_by_exactly_the_last_digit(dtype):
    """Outputs off by delta = sqrt(width) eps max|y| in the worst direction move L = floor by
    10^-digits relative (first order; the second-order term delta^2 / 2 is ~1e-4 of it), and a
    loss 100x above the floor by 10x less."""
    width, digits = 1024, 4
    y = np.array([[0.5], [-0.5], [0.25]])
    floor = loss_floor(width, y, dtype, digits)
    delta = np.sqrt(width) * np.finfo(dtype).eps * 0.5
    for loss, want in [(floor, 10.0 ** -digits), (100 * floor, 10.0 ** -(digits + 1))]:
        residual = np.full(50, np.sqrt(2 * loss))           # 1/2 mean r^2 = loss
        moved = 0.5 * np.mean((residual + delta) ** 2)
        assert (moved - loss) / loss == pytest.approx(want, rel=1e-3)


def test_floor_scales_with_eps_squared_width_and_targets():
    y = np.array([1.0, -2.0])
    base = loss_floor(256, y, "float64", 4)
    eps_ratio = np.finfo(np.float32).eps / np.finfo(np.float64).eps
    assert loss_floor(256, y, "float32", 4) == pytest.approx(base * eps_ratio ** 2, rel=1e-12)
    assert loss_floor(1024, y, "float64", 4) == pytest.approx(4 * base, rel=1e-12)
    assert loss_floor(256, 3 * y, "float64", 4) == pytest.approx(9 * base, rel=1e-12)
    assert loss_floor(256, y, "float64", 5) == pytest.approx(100 * base, rel=1e-12)
