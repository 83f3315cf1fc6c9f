"""The functional core: pure, deterministic, no I/O and no clock reads."""
