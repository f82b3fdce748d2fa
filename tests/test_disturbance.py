"""Disturbance marks from hand-made window records: quiet runs stay clean, busy ones are flagged."""

from __future__ import annotations

from tier1 import disturbance


def window(pid, wall=10.0, own=9.5, busy=19.2, steal=0.0, total=20.0, gpu=None):
    return {"pid": pid, "wall_s": wall, "own_cpu_s": own, "machine_busy_s": busy, "steal_s": steal,
            "machine_total_s": total, "gpu": gpu or {"sampled": False}}


def test_a_quiet_machine_is_clean_and_sibling_ranks_do_not_count():
    # two ranks, each busy 9.5 of 10 s on a 2-core machine; 0.2 s of other work (Snakemake polling)
    summary, marks = disturbance.judge([window(1), window(2)], cores=2)
    assert marks == []
    assert abs(summary["other_processes_cores"] - 0.02) < 1e-9


def test_a_cpu_hog_beside_the_run_is_flagged():
    # one rank using 1 core for 10 s while the machine's 2 cores were busy throughout
    summary, marks = disturbance.judge([window(1, own=10.0, busy=20.0)], cores=2)
    assert summary["other_processes_cores"] == 1.0
    assert marks == ["disturbed: other processes used 1.00 of 2 cores during the timed window"]


def test_steal_and_gpu_neighbours_and_throttling_are_flagged():
    gpu = {"sampled": True, "other_process_ids": [2, 4242], "throttle_reasons": ["hardware thermal slowdown"]}
    _, marks = disturbance.judge([window(1, steal=2.0, gpu=gpu), window(2)], cores=2)
    assert "disturbed: the hypervisor took 10% of the CPU time (steal)" in marks
    assert "disturbed: rank 0's GPU also ran process(es) [4242]" in marks  # pid 2 is rank 1, not a stranger
    assert "disturbed: rank 0's GPU throttled (hardware thermal slowdown)" in marks


def test_repeats_add_up():
    combined = disturbance.combine([window(1, wall=5, own=4, busy=5), window(1, wall=5, own=4, busy=9)])
    assert combined["wall_s"] == 10 and combined["own_cpu_s"] == 8 and combined["machine_busy_s"] == 14


def test_the_watch_measures_its_own_process():
    import torch

    with disturbance.Watch(torch.device("cpu")) as watch:
        sum(i * i for i in range(300_000))
    r = watch.record
    assert r["wall_s"] > 0 and r["own_cpu_s"] > 0 and r["gpu"] == {"sampled": False}
