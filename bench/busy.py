"""Embedding throughput on a CPU that another process keeps busy: the thread policy against fixed thread counts.

One line to rerun (on an idle machine, from the repository root; about 5 minutes on 2 cores):

    nice -n 5 .venv/bin/python bench/busy.py --n 64 --repeats 3 --out bench/BENCHMARKS.md

On the default backbone, ``embed`` of ``--n`` SST-2 sentences (no feature cache) is timed
(best of ``--repeats``) idle and while ``--competitors`` CPU-bound processes (a Python
busy loop each) run, under three thread settings: tenshot's policy
(``core.model.device.apply_threads``: torch threads only on the cores other runnable
threads leave free), one intra-op thread, and one per core (torch's default). The
issue's bar: busy throughput >= 0.5x idle under the policy. "Idle" is whatever else the
machine runs, so the 1-minute load average before each measurement is printed with it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import DATA, machine  # noqa: E402
import core.model.forward  # noqa: E402
from core.evaluate import load_split  # noqa: E402
from core.model.device import usable_cores  # noqa: E402
from core.model.embed import embed  # noqa: E402
from core.model.loading import load_backbone  # noqa: E402

PROMPT = "Review: {text}\nSentiment:"


@contextmanager
def competing(n: int):
    """``n`` CPU-bound processes running for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(1.0)  # let them be scheduled, so the policy sees them
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def fixed_threads(n: int | None):
    """A context in which every forward loop uses ``n`` torch threads (None: one per core,
    torch's default and the behaviour before the policy)."""

    @contextmanager
    def fixed():
        import torch

        policy = core.model.forward.apply_threads
        core.model.forward.apply_threads = lambda **_: torch.set_num_threads(n or usable_cores())
        try:
            yield
        finally:
            core.model.forward.apply_threads = policy
    return fixed


def rate(bb, texts, repeats: int) -> float:
    """Best sentences/s of ``embed`` (no cache, so every call runs the network)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        embed(bb, texts, prompt=PROMPT)
        best = min(best, time.perf_counter() - t)
    return len(texts) / best


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--competitors", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    texts = load_split(DATA / "sst2", "train")[0][: args.n]
    bb = load_backbone("smollm2-135m", device="cpu")
    embed(bb, texts[:8], prompt=PROMPT)  # warm-up
    load_before = os.getloadavg()
    results = {}
    settings = (("tenshot's policy", nullcontext), ("1 thread", fixed_threads(1)),
                (f"{usable_cores()} threads (torch default)", fixed_threads(None)))
    for name, threads in settings:
        with threads():
            idle_load = os.getloadavg()[0]
            idle = rate(bb, texts, args.repeats)
            idle_threads = torch.get_num_threads()
            with competing(args.competitors):
                busy_load = os.getloadavg()[0]
                busy = rate(bb, texts, args.repeats)
                busy_threads = torch.get_num_threads()
        results[name] = (idle, idle_threads, idle_load, busy, busy_threads, busy_load)
        print(f"{name}: idle {idle:.1f}/s ({idle_threads} threads, load {idle_load:.1f}), busy "
              f"{busy:.1f}/s ({busy_threads} threads, load {busy_load:.1f})", file=sys.stderr, flush=True)
    lines = ["### Embedding on a busy CPU (`bench/busy.py`)",
             f"- date {datetime.date.today()}; machine: {machine()}; {usable_cores()} usable cores",
             f"- load average (1/5/15 min) before: {load_before[0]:.1f} / {load_before[1]:.1f} / "
             f"{load_before[2]:.1f}; after: {os.getloadavg()[0]:.1f}"
             + (" (other jobs were running: 'idle' is not idle)" if load_before[0] > 0.5 else ""),
             f"- command: `nice -n 5 .venv/bin/python bench/busy.py {' '.join(sys.argv[1:])}`; {args.n} SST-2 sentences, "
             f"{args.competitors} competing busy-loop process(es), best of {args.repeats}", "",
             "| torch threads | idle sent/s (threads; load) | busy sent/s (threads; load) | busy / idle |",
             "|---|---|---|---|"]
    for name, (idle, it, il, busy, bt, bl) in results.items():
        lines.append(f"| {name} | {idle:.1f} ({it}; {il:.1f}) | {busy:.1f} ({bt}; {bl:.1f}) | {busy / idle:.2f} |")
    report = "\n".join(lines + [""])
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
