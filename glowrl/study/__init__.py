"""`glowrl study`: the paper's comparison of SFT data arms, every arm x seed, as one command.

- [`~glowrl.study.design`]: the study recipe (base pipeline recipe, arms of overrides, seeds, the SFT step budget)
  and every run's pipeline recipe;
- [`~glowrl.study.run`]: running (or submitting to Slurm) the runs, skipping finished ones, and writing the results;
- [`~glowrl.study.aggregate`]: each run's metrics, means and 95% intervals over seeds, paired differences from the
  reference arm (pure functions);
- [`~glowrl.study.plots`]: the figures.
"""
