"""Learning-rate schedules against values worked out by hand from the seeds' formulas."""

import math

import pytest

from landscape.ensembles import cycle_position, fge_lr, sse_lr, swa_lr


def test_fge_triangle_hand_values_and_minimum_at_mid_cycle():
    a1, a2, c = 0.05, 0.0005, 6
    # i = 2: t = 2/6 <= 1/2 -> (1 - 4/6) a1 + (4/6) a2
    assert fge_lr(2, a1, a2, c) == pytest.approx(a1 / 3 + 2 * a2 / 3)
    # i = 5: t = 5/6 > 1/2 -> (2 - 10/6) a2 + (10/6 - 1) a1
    assert fge_lr(5, a1, a2, c) == pytest.approx(a2 / 3 + 2 * a1 / 3)
    # i = 9 is in the second cycle with t = 3/6: the minimum a2
    assert fge_lr(9, a1, a2, c) == pytest.approx(a2)
    lrs = [fge_lr(i, a1, a2, c) for i in range(1, 61)]
    lows = [i for i, lr in zip(range(1, 61), lrs) if lr == pytest.approx(a2)]
    assert lows == [i for i in range(1, 61) if i % c == c // 2]
    highs = [i for i, lr in zip(range(1, 61), lrs) if lr == pytest.approx(a1)]
    assert highs == [i for i in range(1, 61) if i % c == 0]
    with pytest.raises(ValueError, match="even"):
        fge_lr(1, a1, a2, 5)
    with pytest.raises(ValueError, match="from 1"):
        fge_lr(0, a1, a2, 4)


def test_sse_cosine_restarts_with_a_ceiling_period():
    # T = 10, M = 3 -> period ceil(10/3) = 4; restarts at t = 1, 5, 9
    for t in (1, 5, 9):
        assert sse_lr(t, 0.2, 10, 3) == pytest.approx(0.2)
    # t = 3: mod(2, 4) = 2 -> 0.1 (cos(pi/2) + 1) = 0.1
    assert sse_lr(3, 0.2, 10, 3) == pytest.approx(0.1)
    # t = 8: mod(7, 4) = 3 -> 0.1 (cos(3 pi / 4) + 1)
    assert sse_lr(8, 0.2, 10, 3) == pytest.approx(0.1 * (math.cos(3 * math.pi / 4) + 1))


def test_swa_constant_and_cyclical():
    assert all(swa_lr(i, 0.01) == 0.01 for i in range(1, 20))
    # c = 5: t(i) = i/5 within a cycle; i = 7 -> t = 2/5
    assert swa_lr(7, 0.05, 0.01, 5) == pytest.approx(0.6 * 0.05 + 0.4 * 0.01)
    assert swa_lr(10, 0.05, 0.01, 5) == pytest.approx(0.01)  # end of a cycle: where SWA averages
    assert cycle_position(11, 5) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="alpha2"):
        swa_lr(1, 0.05, None, 5)
