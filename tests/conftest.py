"""Test configuration: float64 everywhere for the analytic paths, quiet TensorFlow."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import ntkngd  # noqa: E402,F401  (first: keeps neural-tangents' TensorFlow port unloaded)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def sphere_points(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.RandomState(seed).randn(n, d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.RandomState(1234)
