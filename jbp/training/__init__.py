"""Training: the seed's update loop (fit), optimizer steps, checkpoints, sweeps, parallelism."""
