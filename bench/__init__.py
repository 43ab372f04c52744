"""`make bench`: speed, size and memory of respaldo against the bare tools (see bench/run.py)."""
