"""Start-up time of `ntkngd --help`, `import ntkngd` and the first use of the library, each in a
fresh interpreter (best of 5), against the targets (1 s and 2 s); also `import neural_tangents`
with and without TensorFlow. Prints seconds and ratios to the targets, measured in this run.

    python experiments/bench_startup.py
"""
from __future__ import annotations

import os
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


def best_of(args: list[str], repeats: int = 5) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    best, err = float("inf"), ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                             cwd=ROOT)
        best = min(best, time.perf_counter() - t0)
        err = out.stderr
    return best, err


def main() -> None:
    print(f"{'command':50s} {'seconds':>8s} {'target':>7s} {'ratio':>6s}  stderr lines")
    for label, (args, target) in CASES.items():
        t, err = best_of(args, 3 if "plain" in label else 5)
        ratio = f"{t / target:.2f}" if target else "-"
        print(f"{label:50s} {t:8.2f} {target or '-':>7} {ratio:>6s}  {len(err.splitlines())}")


if __name__ == "__main__":
    main()
