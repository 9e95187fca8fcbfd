"""The run's safety machinery: lock, fingerprint, interrupts, safe writes and saves, checkpoints, guards."""
