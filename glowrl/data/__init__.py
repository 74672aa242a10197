"""Data: tables (local files or Hub datasets), labelled reasoning trajectories for SFT, and problems for RL.

`tables` loads one table by the local-or-Hub rule; `trajectories` reads, labels (with the shared grader), selects the
paper's data arm and numbers trajectories; `problems` turns problems with gold answers into chat prompts. Imports
`datasets` only inside the functions that load data, so the argument dataclasses stay cheap to import.
"""

from .problems import ProblemArguments, build_problem_dataset
from .tables import load_table
from .trajectories import (
    TRAJECTORY_ARMS,
    TrajectoryArguments,
    build_trajectory_dataset,
    label_counts,
    label_trajectories,
    normalize_trajectories,
    select_arm,
)


__all__ = [
    "TRAJECTORY_ARMS",
    "ProblemArguments",
    "TrajectoryArguments",
    "build_problem_dataset",
    "build_trajectory_dataset",
    "label_counts",
    "label_trajectories",
    "load_table",
    "normalize_trajectories",
    "select_arm",
]
