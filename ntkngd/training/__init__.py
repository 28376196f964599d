"""Finite-width training: `train` (loop.py), one loop for every method, loss and network, over
the device step of `ntkngd.engine`; what it measures beside the steps (observers.py); the
`TrainLog` it returns (log.py). `ntkngd` exports `train` and `TrainLog`."""
