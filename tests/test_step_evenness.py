"""The wall-average step beside the steady median, and the record's account of a difference."""

from tier1.training.record import step_evenness


def test_even_steps_need_no_explanation():
    e = step_evenness(10.2, [1.0] * 10, 1.0, False)
    assert abs(e["excess"] - 0.02) < 1e-9 and e["note"] is None


def test_a_slow_start_is_named():
    e = step_evenness(15.0, [6.0] + [1.0] * 9, 1.0, False)
    assert e["wall_average_step_s"] == 1.5 and "first tenth" in e["note"] and e["where_s"]["first_tenth_s"] == 5.0


def test_time_between_steps_is_named():
    e = step_evenness(20.0, [1.0] * 10, 1.0, True)
    assert e["where_s"]["between_steps_s"] == 10.0
    assert "between the steps" in e["note"] and "shared the machine" in e["note"]
