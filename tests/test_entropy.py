"""Rollout-entropy summaries: pure tensor functions, hand-derived values.

python -m pytest tests/test_entropy.py
"""

import math

import torch

from glowrl.rollout_entropy import entropy_sums, sequence_entropy, summarize_rollout_entropy


ENTROPIES = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 9.0], [4.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])


def test_sequence_entropy_is_the_masked_mean_per_rollout():
    seq = sequence_entropy(ENTROPIES, MASK)
    # (1+2+3)/3 = 2; (0.5+0.5)/2 = 0.5 (the masked 9 is ignored); no tokens -> NaN
    assert seq[:2].tolist() == [2.0, 0.5] and math.isnan(seq[2])


def test_entropy_sums_split_by_correctness():
    sums = entropy_sums(ENTROPIES, MASK, torch.tensor([1.0, 0.0, math.nan]))
    # all: 6 + 1 over 3 + 2 tokens; correct: rollout 0; incorrect: rollout 1; rollout 2 unscored and empty
    assert sums.tolist() == [7.0, 5.0, 6.0, 3.0, 1.0, 2.0]
    unscored = entropy_sums(ENTROPIES, MASK, torch.tensor([math.nan, math.nan, math.nan]))
    assert unscored.tolist() == [7.0, 5.0, 0.0, 0.0, 0.0, 0.0]


def test_summary_quantiles_and_token_weighted_means():
    seq = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, math.nan])
    figures = summarize_rollout_entropy(seq, torch.tensor([7.0, 5.0, 6.0, 3.0, 1.0, 2.0]))
    # linear-interpolated quantiles of [1..5]: p10 = 1 + 0.1*4 = 1.4, p50 = 3, p90 = 1 + 0.9*4 = 4.6
    assert figures["entropy/seq_p10"] == 1.4 and figures["entropy/seq_p50"] == 3.0
    assert abs(figures["entropy/seq_p90"] - 4.6) < 1e-12
    assert figures["entropy/correct"] == 2.0 and figures["entropy/incorrect"] == 0.5
    # the token-weighted combination of the two recovers the overall mean: (3*2 + 2*0.5) / 5 = 7/5
    combined = (figures["entropy/tokens_correct"] * 2.0 + figures["entropy/tokens_incorrect"] * 0.5) / 5
    assert combined == 7.0 / 5.0


def test_summary_omits_a_side_with_no_rollouts():
    figures = summarize_rollout_entropy(torch.tensor([1.0]), torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 1.0]))
    assert "entropy/correct" not in figures and figures["entropy/incorrect"] == 1.0


def test_a_resume_keeps_the_logged_steps_up_to_its_checkpoint(tmp_path):
    """After an RL resume, entropy.jsonl holds each step once: steps past the checkpoint are dropped, then rerun."""
    from types import SimpleNamespace

    from glowrl.io import read_jsonl, write_jsonl
    from glowrl.rollout_entropy import ENTROPY_LOG_NAME, _EntropyStepEnd

    path = tmp_path / ENTROPY_LOG_NAME
    write_jsonl([{"step": s, "entropy": 0.1 * s} for s in range(1, 6)], path)
    args = SimpleNamespace(output_dir=str(tmp_path))
    _EntropyStepEnd(None).on_train_begin(args, SimpleNamespace(global_step=3, is_world_process_zero=True), None)
    assert [row["step"] for row in read_jsonl(path)] == [1, 2, 3]
    _EntropyStepEnd(None).on_train_begin(args, SimpleNamespace(global_step=0, is_world_process_zero=True), None)
    assert not path.exists()  # a fresh run starts a fresh log
