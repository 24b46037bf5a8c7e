import math

import pytest

from lods.schedules import AnnealedTimesteps, ConstantSchedule, LinearSchedule, RandomTimesteps


def test_constant_allows_inf():
    assert ConstantSchedule(math.inf)(10) == math.inf


def test_linear_guidance():
    s = LinearSchedule(100, 10)
    s.setup(max_steps=10)
    assert [s(i) for i in (0, 5, 10, 20)] == [100, 55, 10, 10]


def test_linear_from_inf_interpolates_in_inverse():
    s = LinearSchedule(math.inf, 10, end_step=10)
    assert s(0) == math.inf and s(10) == pytest.approx(10) and s(5) == pytest.approx(20)


def test_nan_guidance_is_refused():
    with pytest.raises(ValueError, match="must be a number or inf"):
        ConstantSchedule(float("nan"))


def test_vsd_annealing():
    s = AnnealedTimesteps(0.02, 0.98, 0.5, anneal_fraction=0.2)
    s.setup(100)
    assert s.bounds(19) == (0.02, 0.98) and s.bounds(20) == (0.02, 0.5)


def test_bad_range_is_named():
    with pytest.raises(ValueError, match="t_min=0.9, t_max=0.1"):
        RandomTimesteps(0.9, 0.1)
