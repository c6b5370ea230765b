"""One-shot architecture search (TuNAS, Bender et al. 2020): one weight-sharing super-network holds every point of a
search space; its shared weights and a REINFORCE controller train in alternation, the controller rewarded with the
sampled child's validation accuracy plus the latency penalty from the project's Edge TPU latency model.

Rooms: layout (TF-free: positions, widths, each point's blocks from its resolved spec), supernet (the shared weights
and masks), child (a point's spec built by the builder, weights sliced out), controller (TF-free: distributions,
warm-up schedules, latency cache), run (the search loop, checkpoints, log, plots, results).
"""
