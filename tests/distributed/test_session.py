"""The session: CPU shares (one formula for pools, trainers and sweeps; no Ray needed there) and a local Ray's settings."""

from axion_ray.distributed.session import READ_TASK_CPUS, cpu_share


def test_a_share_leaves_a_read_task_room_and_respects_the_smallest_node():
    assert cpu_share(2, cpus=2.0) == round((2.0 - READ_TASK_CPUS) / 2, 3)
    assert cpu_share(1, cpus=2.0, per_node=1.0) == 1.0 - READ_TASK_CPUS
    assert cpu_share(8, cpus=2.0) == 0.25          # never below the floor
    assert cpu_share(1, cpus=2.0, reserve=0.26, floor=0.2) == 1.74


def test_a_local_ray_keeps_an_idle_worker_while_a_pool_holds_the_cpus(local_ray):
    """Ray keeps idle workers only for unreserved CPUs; beside a pool that reserves all but a read task's
    share it killed the read worker within a second, and the next task paid a new worker and its imports
    (bench/RESULTS.md: 2-3 s before the first tile). `local_system_config` keeps one per core."""
    import os
    import time

    import ray

    @ray.remote(num_cpus=READ_TASK_CPUS)
    def worker_pid() -> int:
        return os.getpid()

    @ray.remote
    class Pool:
        def ready(self) -> bool:
            return True

    free = ray.available_resources().get("CPU", 0.0)
    pool = Pool.options(num_cpus=free - READ_TASK_CPUS).remote()
    try:
        ray.get(pool.ready.remote())
        first = ray.get(worker_pid.remote())
        time.sleep(3.0)  # Ray kills idle workers above its limit after they idled ~1 s
        assert ray.get(worker_pid.remote()) == first
    finally:
        ray.kill(pool)
