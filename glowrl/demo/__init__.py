"""`glowrl demo`: the whole method on a CPU with the built-in task and a tiny model; its report and plots."""
