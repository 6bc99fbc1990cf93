"""The Celery side of ./scripts/bench-distributed: the same trivial task,
the same Redis, two worker processes, measured the way the Rust bench
measures routine. Prints one line: the median round trip in nanoseconds and
the throughput in tasks per second.

Usage: peer.py REDIS_URL TASKS ROUNDS (./scripts/bench-distributed installs
Celery in target/celery-venv and runs it).
"""

import os
import subprocess
import sys
import time

from celery import Celery, group

# The workers import this module: they learn the Redis URL from the parent.
REDIS = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379")
app = Celery("peer", broker=REDIS, backend=REDIS)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=64,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


@app.task(name="peer.trivial")
def trivial(i):
    return i + 1


def median(xs):
    return sorted(xs)[len(xs) // 2]


def main():
    redis_url, tasks, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    app.conf.update(broker_url=redis_url, result_backend=redis_url)
    env = dict(os.environ, PEER_REDIS_URL=redis_url)
    here = os.path.dirname(os.path.abspath(__file__))
    # Two workers, as for routine, in Celery's fastest pool for this task
    # here: threads (prefork and solo measured 5-30% fewer tasks/s).
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "peer", "worker", "--pool=threads",
             "--concurrency=16", "--loglevel=ERROR", "--without-heartbeat",
             "--without-gossip", "--without-mingle", "-n", f"peer{n}@%h"],
            cwd=here, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for n in range(2)
    ]
    try:
        # Warm up: both workers up, connections open.
        group(trivial.s(i) for i in range(200))().get(timeout=120)
        per_round = 100
        trips = []
        for _ in range(rounds):
            started = time.perf_counter_ns()
            for i in range(per_round):
                trivial.delay(i).get(timeout=60)
            trips.append((time.perf_counter_ns() - started) / per_round)
        started = time.perf_counter()
        results = group(trivial.s(i) for i in range(tasks))().get(timeout=600)
        elapsed = time.perf_counter() - started
        assert results == [i + 1 for i in range(tasks)]
        print(f"{median(trips):.0f} {tasks / elapsed:.1f}")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait()


if __name__ == "__main__":
    main()
