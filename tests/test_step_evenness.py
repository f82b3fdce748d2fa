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


def test_the_parts_of_the_difference_add_up_to_it():
    """Steps after the first tenth both over and under the median: their excess alone (3 s) is more
    than the whole difference (2 s), which the note once gave as "3.00 s of 2.00 s"."""
    steps = [1.5] + [0.5] * 4 + [1.0, 4.0, 1.0, 1.0, 1.0]  # steady median 1.0
    e = step_evenness(12.0, steps, 1.0, False)
    where = e["where_s"]
    assert where == {"first_tenth_s": 0.5, "slow_steps_after_s": 3.0, "fast_steps_after_s": -2.0,
                     "between_steps_s": 0.5}
    assert sum(where.values()) == 12.0 - 10 * 1.0
    assert "3.00 s of 2.00 s" not in e["note"]
    assert ("the wall time is 2.00 s over 10 steps at the median: +0.50 s in the first tenth of the steps, "
            "+1.00 s in the steps after it (3.00 s above the median, 2.00 s below), +0.50 s between the steps; "
            "the largest part: steps after the first tenth were uneven") in e["note"]
