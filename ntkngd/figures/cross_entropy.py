"""(i) Cross-entropy: placeholder until the cross-entropy dynamics land."""
NAME = "cross_entropy"
TITLE = "cross-entropy loss and accuracy against time"


def compute(ctx):
    raise NotImplementedError("cross-entropy figure not available yet")


def plot(res, ctx):
    raise NotImplementedError
