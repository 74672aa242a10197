"""What a GLOW checkpoint records about the tokens its loss history was measured on, and the check a resume passes.

A resumed GLOW run computes each sample's gain against the loss the checkpoint recorded for it, so the resume must see
the same samples tokenized the same way: otherwise the first weights after the resume compare losses of different
token sequences. A checkpoint's `glow_state.pt` records a fingerprint of every column of the training data
([`~glowrl.glow.samples.data_fingerprint`]), the config keys that change the tokens or the tokens the loss counts
([`tokenization_settings`]), and a hash of the tokenized training data itself ([`token_fingerprint`], which also
catches another tokenizer). [`check_resume`] refuses a resume that differs in any of them, naming the key and the
fix. It does not check the model, the optimizer or other training settings: Trainer restores those or they may
legitimately change (a learning rate, a number of epochs).
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import RecipeError


STATE_NAME = "glow_state.pt"
STATE_VERSION = 2  # glow_state.pt with the data fingerprint, the tokenization settings and the token fingerprint

# SFTConfig keys that change the token sequences or which of their tokens the loss counts.
TOKEN_KEYS = (
    "max_length",
    "truncation_mode",
    "packing",
    "packing_strategy",
    "padding_free",
    "completion_only_loss",
    "assistant_only_loss",
    "dataset_text_field",
    "dataset_kwargs",
    "chat_template_path",
    "eos_token",
)
CHAT_TEMPLATE_KEY = "chat template"  # not a config key: the template the tokenizer applies (the model's, or a file's)
_TOKEN_COLUMNS = ("input_ids", "labels", "completion_mask", "assistant_masks", "_glow_index")


def tokenization_settings(args, processing_class, training_template: str | None = None) -> dict:
    """The values of [`TOKEN_KEYS`] in `args`, and a short hash of the chat template(s) in use."""
    settings = {key: getattr(args, key, None) for key in TOKEN_KEYS}
    settings = json.loads(json.dumps(settings, sort_keys=True, default=str))  # plain values, as stored and compared
    templates = [getattr(processing_class, "chat_template", None), training_template]
    settings[CHAT_TEMPLATE_KEY] = hashlib.sha256(json.dumps(templates, default=str).encode()).hexdigest()[:16]
    return settings


def token_fingerprint(dataset) -> str:
    """A hash of the tokenized training data: `input_ids`, labels or loss masks and the sample index of each row.

    Streams the Arrow columns (values and row lengths hashed apart, so the batching does not matter): 0.4 s for 10M
    token ids on a loaded 2-core machine.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = [c for c in _TOKEN_COLUMNS if c in dataset.column_names]
    digests = {c: (hashlib.sha256(), hashlib.sha256()) for c in columns}
    if columns:
        for table in dataset.select_columns(columns).with_format("arrow").iter(batch_size=4096):
            for column in columns:
                for chunk in table[column].chunks:
                    values, lengths = digests[column]
                    if pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type):
                        lengths.update(pc.list_value_length(chunk).to_numpy(zero_copy_only=False).astype(np.int64))
                        chunk = pc.list_flatten(chunk)
                    values.update(np.asarray(chunk.to_numpy(zero_copy_only=False), dtype=np.int64))
    digest = hashlib.sha256(json.dumps(columns).encode())
    for values, lengths in digests.values():
        digest.update(values.digest() + lengths.digest())
    return digest.hexdigest()


def write_state(checkpoint: str, history: torch.Tensor, data: str, settings: dict, tokens: str) -> None:
    """Save the loss history and what it was measured on as `<checkpoint>/glow_state.pt`."""
    state = {"version": STATE_VERSION, "loss_history": history.cpu(), "num_samples": len(history)}
    state.update(fingerprint=data, settings=settings, tokens=tokens)
    torch.save(state, os.path.join(checkpoint, STATE_NAME))


def read_state(checkpoint, num_samples: int, data: str, settings: dict, tokens, glow: bool = True) -> torch.Tensor:
    """The loss history saved in `checkpoint`, once [`check_resume`] has passed; `tokens` computes this run's
    [`token_fingerprint`]. `glow=False` is a baseline logging its per-sample losses (`glow_log_samples`)."""
    path = Path(checkpoint) / STATE_NAME
    if not path.is_file():
        fix = "or train from scratch" if glow else "set glow_log_samples: false to resume without the per-sample log"
        raise RecipeError(
            f"resume_from_checkpoint: {checkpoint} has no {STATE_NAME}, so the per-sample loss history cannot be "
            f"restored; resume from a checkpoint written by GLOWTrainer with the same glow settings, {fix}"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    check_resume(checkpoint, state, num_samples, data, settings, tokens)
    return state["loss_history"]


def check_resume(checkpoint, state: dict, num_samples: int, data: str, settings: dict, tokens) -> None:
    """Raise a [`RecipeError`] naming what differs when `state` (a checkpoint's `glow_state.pt`) was measured on other
    samples or other tokens than this run's; `tokens` is called for this run's [`token_fingerprint`] only when the
    cheaper checks pass."""
    scratch = "or train from scratch (without resume_from_checkpoint)"
    if state.get("version", 1) < STATE_VERSION or not state.get("fingerprint"):
        raise RecipeError(
            f"resume_from_checkpoint: {checkpoint} has no fingerprint of its training data and tokenization "
            "(written by an older glowrl), so resuming its loss history on other samples or tokens cannot be ruled "
            f"out; {scratch}"
        )
    if state["num_samples"] != num_samples:
        raise RecipeError(
            f"resume_from_checkpoint: {checkpoint} was trained on {state['num_samples']} samples but this dataset has "
            f"{num_samples}; resume with the same data and filters, {scratch}"
        )
    for key, value in settings.items():
        before = state["settings"].get(key)
        if before != value:
            if key == CHAT_TEMPLATE_KEY:
                fix = "resume with the chat template it was trained with (chat_template_path, or the same tokenizer)"
                raise RecipeError(
                    f"resume_from_checkpoint: the chat template differs from the one {checkpoint} was trained with, "
                    f"which changes the tokens its loss history was measured on; {fix}, {scratch}"
                )
            raise RecipeError(
                f"resume_from_checkpoint: {key} is {value!r} but {checkpoint} was trained with {key}: {before!r}, "
                f"which changes the tokens its loss history was measured on; set {key}: {before!r}, {scratch}"
            )
    if state["fingerprint"] != data:
        raise RecipeError(
            f"resume_from_checkpoint: {checkpoint} was trained on other data of the same size (its loss history "
            f"belongs to other samples); resume with the same data and filters, {scratch}"
        )
    if state["tokens"] != tokens():
        raise RecipeError(
            f"resume_from_checkpoint: the same data tokenizes to other tokens than when {checkpoint} was written "
            f"(another tokenizer); resume with the tokenizer it was trained with (model_name_or_path), {scratch}"
        )
