"""CPU shares: one formula for pools, trainers and sweeps (no Ray needed: the cluster size is given)."""

from axion_ray.distributed.session import READ_TASK_CPUS, cpu_share


def test_a_share_leaves_a_read_task_room_and_respects_the_smallest_node():
    assert cpu_share(2, cpus=2.0) == round((2.0 - READ_TASK_CPUS) / 2, 3)
    assert cpu_share(1, cpus=2.0, per_node=1.0) == 1.0 - READ_TASK_CPUS
    assert cpu_share(8, cpus=2.0) == 0.25          # never below the floor
    assert cpu_share(1, cpus=2.0, reserve=0.26, floor=0.2) == 1.74
