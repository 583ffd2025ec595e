"""Compute pi on a Dask cluster: Monte Carlo over many tasks, then shut it down.
Usage: python3 pi.py SCHEDULER_FILE NWORKERS [TASKS [SAMPLES]]"""
import random
import sys

from distributed import Client


def count_inside(seed, samples):
    rng = random.Random(seed)
    inside = 0
    for _ in range(samples):
        x, y = rng.random(), rng.random()
        inside += x * x + y * y <= 1.0
    return inside


def main():
    sched, nworkers = sys.argv[1], int(sys.argv[2])
    tasks = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    samples = int(sys.argv[4]) if len(sys.argv) > 4 else 20000
    client = Client(scheduler_file=sched, timeout=60)
    client.wait_for_workers(nworkers, timeout=120)
    workers = client.scheduler_info()["workers"]
    print(f"workers {len(workers)}", flush=True)
    futures = client.map(count_inside, range(tasks), [samples] * tasks)
    inside = client.submit(sum, futures).result()
    who = set(client.who_has(futures).values())
    pi = 4.0 * inside / (tasks * samples)
    print(f"pi {pi:.4f} from {tasks * samples} samples on {len(workers)} workers", flush=True)
    client.shutdown()   # stops the scheduler and the workers: the job ends cleanly
    print("dask shutdown", flush=True)


if __name__ == "__main__":
    main()
