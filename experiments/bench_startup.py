"""Start-up time of `ntkngd --help`, `import ntkngd` and the first use of the library, each in a
fresh interpreter (best of 5), against the targets (1 s and 2 s); also plain
`import neural_tangents`, which loads TensorFlow. Prints wall-clock and CPU seconds (user + sys of
the child: less sensitive to a busy machine) and the ratio of wall-clock to target, measured in
this run.

    python experiments/bench_startup.py
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "ntkngd --help": (["-m", "ntkngd", "--help"], 1.0),
    "import ntkngd": (["-c", "import ntkngd"], 2.0),
    "import ntkngd; first use (ntkngd.mlp)": (["-c", "import ntkngd; ntkngd.mlp(2, 8)"], None),
    "import every public name": (["-c", "import ntkngd; [getattr(ntkngd, n) for n in "
                                  "ntkngd.__all__]"], None),
    "import neural_tangents (plain, loads TensorFlow)": (["-c", "import neural_tangents"], None),
}


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def best_of(args: list[str], repeats: int = 5) -> tuple[float, float, str]:
    """Best wall-clock and best CPU seconds over `repeats` fresh interpreters, and the stderr."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    best, best_cpu, err = float("inf"), float("inf"), ""
    for _ in range(repeats):
        c0, t0 = _child_cpu(), time.perf_counter()
        out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                             cwd=ROOT)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, _child_cpu() - c0)
        err = out.stderr
    return best, best_cpu, err


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'command':50s} {'wall s':>7s} {'cpu s':>6s} {'target':>7s} {'ratio':>6s}  "
          f"stderr lines")
    for label, (args, target) in CASES.items():
        t, cpu, err = best_of(args, 3 if "plain" in label else 5)
        ratio = f"{t / target:.2f}" if target else "-"
        print(f"{label:50s} {t:7.2f} {cpu:6.2f} {target or '-':>7} {ratio:>6s}  "
              f"{len(err.splitlines())}")


if __name__ == "__main__":
    main()
