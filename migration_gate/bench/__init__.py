"""Measurement: the benchmark of the migrations, the gate and the whole maintenance window."""
