"""GLOW: Gain-based LOss Weighting for SFT on unfiltered reasoning trajectories.

Paper: [Learning from Mistakes: Negative Reasoning Samples Enhance Out-of-Domain
Generalization](https://huggingface.co/papers/2601.04992). The maths is in [`~glowrl.glow.weights.glow_weights`];
[`GLOWTrainer`] only wires it into TRL's [`~trl.SFTTrainer`] (its private TRL hooks are listed in
`glowrl._trl_compat`).

How this differs from the published code (a LLaMA-Factory fork), and why:
- the per-sample losses come from TRL's fused LM head in the training forward itself; the published code upcasts the
  full `(B, T, V)` logits to fp32 a second time;
- the loss history is a tensor indexed by a sample id assigned once after mixing and filtering, so ids never collide
  across the datasets of a mixture; it is saved in every checkpoint and restored on resume (the published history is a
  module-level dict, lost on resume);
- ranks merge their visits with one tensor all-gather per epoch and per checkpoint, instead of a barrier and a
  pickled `all_gather_object` every micro-step;
- a sample with no recorded loss gets weight 1, instead of a gain measured against the batch mean;
- the reduction is exact under gradient accumulation and multi-process training (see `GLOWConfig.glow_reduction`).
"""

import json
import math
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from .._trl_compat import FUSED_LM_HEAD_FLAG, checkpoint_dir, training_chat_template
from ..checkpoints import last_complete_checkpoint
from ..errors import RecipeError
from ..io import read_trainer_state, write_text_atomic
from .arguments import check_parallelism
from .config import GLOWConfig
from .resume import read_state, token_fingerprint, tokenization_settings, write_state
from .samples import INDEX_COLUMN, SampleIndexCollator, data_fingerprint, with_sample_index
from .weights import glow_weights


GLOW_SAMPLES_NAME = "glow_samples.jsonl"
# Columns of a pending visit row (float64 keeps sample indices exact up to 2**53).
_ID, _STEP, _EPOCH, _LOSS, _PREV, _WEIGHT = range(6)


class _GLOWForward:
    """Calls the model and rescales each row of the fused LM head's per-token log-probs by its GLOW factor.

    TRL's `compute_loss` turns `-outputs.log_probs` into the loss and nothing else (its metrics read `entropy`,
    `is_top1` and `label_mask`), so rescaling the rows here changes the loss and its gradient while TRL keeps the
    forward, the normalisation by `num_items_in_batch` and every metric.
    """

    def __init__(self, model, trainer: "GLOWTrainer", sample_ids: torch.Tensor, num_items_in_batch):
        self.model, self.trainer, self.sample_ids, self.num_items_in_batch = (
            model,
            trainer,
            sample_ids,
            num_items_in_batch,
        )

    def __call__(self, **inputs):
        outputs = self.model(**inputs)
        if not inputs.get(FUSED_LM_HEAD_FLAG):
            return outputs
        num_tokens = outputs.label_mask.sum(-1).clamp(min=1)  # (B,)
        sample_loss = -outputs.log_probs.detach().sum(-1) / num_tokens  # (B,) mean token NLL of each sample
        weights = self.trainer._glow_visit(self.sample_ids, sample_loss)  # (B,)
        if not self.trainer.args.glow:
            return outputs  # glow: false with glow_log_samples: the visit is logged, the loss is TRL's, untouched
        if self.trainer.args.glow_reduction == "token":
            scale = weights
        else:
            # TRL divides the summed token losses by `num_items_in_batch` (all tokens of the optimizer step, on every
            # rank when averaging across devices); this factor turns that into the mean over the step's samples of
            # weight × per-sample mean loss.
            if self.num_items_in_batch is None:
                denominator, num_samples = outputs.label_mask.sum(), len(sample_loss)
            else:
                denominator, num_samples = self.num_items_in_batch, self.trainer._glow_step_samples
            scale = weights * denominator / (num_tokens * num_samples)
        outputs.log_probs = outputs.log_probs * scale.to(outputs.log_probs.dtype)[:, None]
        return outputs


class _GLOWHistorySync(TrainerCallback):
    """Merges every rank's visits into the loss history at the end of each epoch and of training."""

    def __init__(self, trainer: "GLOWTrainer"):
        self.trainer = trainer

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer._sync_glow_history()

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer._sync_glow_history()


class GLOWTrainer(SFTTrainer):
    """
    Trainer for GLOW (Gain-based LOss Weighting), from [Learning from Mistakes: Negative Reasoning Samples Enhance
    Out-of-Domain Generalization](https://huggingface.co/papers/2601.04992).

    The only change w.r.t. [`~trl.SFTTrainer`] is that each training sample's loss is multiplied by its GLOW weight
    ([`glow_weights`] of its inter-epoch gain), computed from the same fused forward as the loss. For that it carries
    each sample's index through the collator, keeps the per-sample loss history (4 bytes a sample, whatever the
    dataset's `sample_id` values: any unique values, the row index when there is no such column), and saves it in
    every checkpoint with fingerprints of the data and its tokens, so a resume on other data or tokens is refused
    (`glowrl.glow.resume`). Evaluation loss is unweighted and never touches the history. With `args.glow=False` it
    trains exactly as [`~trl.SFTTrainer`]; with `glow_log_samples` as well, it logs the same per-sample losses
    (weight 1) to `glow_samples.jsonl`, so a baseline arm can be compared with a GLOW arm sample by sample.

    Logged on top of SFT's metrics: `glow/weight_mean`, `glow/weight_std`, `glow/weight_min`, `glow/weight_max` (over
    the sample visits since the last log), `glow/gain_mean` and `glow/frac_regressed` (share of gains < 0) over the
    visits that have a previous loss.
    """

    _tag_names = ["trl", "sft", "glow"]
    _name = "GLOW"

    def __init__(self, model, args: GLOWConfig | None = None, train_dataset=None, **kwargs):
        if args is None:
            args = GLOWConfig(output_dir="glow-output")
        # Per-sample losses are tracked (history, log, checkpoint state) for GLOW and for a baseline's log; weighted
        # only for GLOW (`args.glow`).
        self._glow_on = (args.glow or args.glow_log_samples) and train_dataset is not None
        if self._glow_on:
            train_dataset, self._glow_ids = with_sample_index(train_dataset)
            self._glow_fingerprint = data_fingerprint(train_dataset)
        output_dir_existed = Path(args.output_dir).exists()
        super().__init__(model, args=args, train_dataset=train_dataset, **kwargs)
        if not self._glow_on:
            return
        self._glow_settings = tokenization_settings(args, self.processing_class, training_chat_template(self))
        self._glow_tokens = None  # token_fingerprint of the tokenized data, computed when first needed
        check_parallelism(self.accelerator.parallelism_config, "the accelerate config")
        dropped = sorted(set(range(len(self._glow_ids))) - set(self.train_dataset[INDEX_COLUMN]))
        if dropped and args.glow:
            output_dir = Path(self.args.output_dir)
            if not output_dir_existed and output_dir.is_dir() and not any(output_dir.iterdir()):
                output_dir.rmdir()  # Trainer.__init__ made it; a refused run leaves nothing behind
            shown = [self._glow_ids[i] for i in dropped[:10]]
            raise RecipeError(
                f"{len(dropped)} trajectories have no trainable tokens after tokenization (sample_id {shown}"
                f"{' ...' if len(dropped) > 10 else ''}): their completion is empty or truncated away by "
                f"max_length={self.args.max_length}; raise max_length or remove those rows"
            )
        num_samples = len(self._glow_ids)
        device = self.accelerator.device
        self._glow_history = torch.full((num_samples,), math.nan, dtype=torch.float32, device=device)  # (N,)
        self._glow_correct = None
        if "correct" in self.train_dataset.column_names:
            self._glow_correct = torch.full((num_samples,), -1, dtype=torch.int8)
            labels = [-1 if c is None else int(c) for c in self.train_dataset["correct"]]  # -1: unlabelled
            index = torch.tensor(self.train_dataset[INDEX_COLUMN])
            self._glow_correct[index] = torch.tensor(labels, dtype=torch.int8)
        self._glow_pending: list[torch.Tensor] = []  # visits not yet merged into the history, rows as in _ID.._WEIGHT
        self._glow_window: list[torch.Tensor] = []  # visits since the last log, for the glow/* metrics
        self._glow_step_samples = None
        self.data_collator = SampleIndexCollator(self.data_collator)
        self.add_callback(_GLOWHistorySync(self))

    @property
    def compute_loss_func(self):
        return self.__dict__.get("_compute_loss_func")

    @compute_loss_func.setter
    def compute_loss_func(self, value):
        # A property, so that the refusal holds however it is set: the constructor (Trainer.__init__ assigns it) or
        # an assignment afterwards.
        if value is not None and self.__dict__.get("_glow_on") and self.args.glow:
            raise RecipeError(
                "compute_loss_func replaces the per-token loss that GLOW reweights, so GLOW would silently train "
                "unweighted; drop compute_loss_func, or set glow: false"
            )
        self.__dict__["_compute_loss_func"] = value

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._glow_on and INDEX_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, INDEX_COLUMN]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sample_ids = inputs.pop(INDEX_COLUMN, None)
        if self._glow_on and self.model.training and sample_ids is not None:
            model = _GLOWForward(model, self, sample_ids, num_items_in_batch)
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._glow_on and self.args.glow and self.args.glow_reduction == "sample":
            # Number of samples in this optimizer step, counted like `num_items_in_batch` counts tokens.
            num_samples = torch.tensor(sum(len(b[INDEX_COLUMN]) for b in batch_samples), device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                num_samples = self.accelerator.gather(num_samples).sum()
            self._glow_step_samples = num_samples
        return batch_samples, num_items_in_batch

    def _glow_visit(self, sample_ids: torch.Tensor, sample_loss: torch.Tensor) -> torch.Tensor:
        """Weights for a micro-batch visit, from the history as it stood before this epoch; records the visit."""
        prev = self._glow_history[sample_ids]  # (B,) NaN where never visited
        epoch = int(self.state.epoch or 0)
        weighted = ~prev.isnan() & (epoch >= self.args.glow_warmup_epochs)
        args = self.args
        weights = glow_weights(
            prev - sample_loss,
            args.glow_alpha,
            args.glow_beta,
            args.glow_offset,
            args.glow_min_weight,
            args.glow_max_weight,
        )
        weights = torch.where(weighted & args.glow, weights, torch.ones_like(weights))
        visit = torch.stack(
            [
                sample_ids.double(),
                torch.full_like(sample_loss, self.state.global_step + 1, dtype=torch.float64),
                torch.full_like(sample_loss, epoch, dtype=torch.float64),
                sample_loss.double(),
                prev.double(),
                weights.double(),
            ],
            dim=1,
        )  # (B, 6)
        self._glow_pending.append(visit)
        if args.glow:  # the glow/* metrics are GLOW's; a baseline's log has them per sample
            self._glow_window.append(visit[:, _LOSS:])  # loss, prev, weight (a slice: no index copy to the device)
        return weights

    def _sync_glow_history(self):
        """Gather every rank's pending visits, write them into the history (latest visit wins), log them to JSONL."""
        if not self._glow_on:
            return
        device = self.accelerator.device
        local = torch.cat(self._glow_pending) if self._glow_pending else torch.empty(0, 6, dtype=torch.float64)
        self._glow_pending = []
        if self.accelerator.num_processes > 1:
            local = self.accelerator.pad_across_processes(local.to(device), dim=0, pad_index=-1)
            visits = self.accelerator.gather(local)
            visits = visits[visits[:, _ID] >= 0]
        else:
            visits = local
        if len(visits) == 0:
            return
        # Sort by (id, step) so that the last row of each id is its latest visit.
        order = torch.argsort(visits[:, _ID] * (visits[:, _STEP].max() + 1) + visits[:, _STEP], stable=True)
        visits = visits[order]
        ids = visits[:, _ID].long()
        latest = torch.ones_like(ids, dtype=torch.bool)
        latest[:-1] = ids[1:] != ids[:-1]
        self._glow_history[ids[latest].to(device)] = visits[latest, _LOSS].float().to(device)
        if self.args.glow_log_samples and self.accelerator.is_main_process:
            self._write_glow_samples(visits[torch.argsort(visits[:, _STEP], stable=True)].cpu())

    def _write_glow_samples(self, visits: torch.Tensor):
        path = Path(self.args.output_dir) / GLOW_SAMPLES_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            for sample_id, step, epoch, loss, prev, weight in visits.tolist():
                row = {
                    "epoch": int(epoch),
                    "step": int(step),
                    "sample_id": self._glow_ids[int(sample_id)],
                    "loss": loss,
                    "prev_loss": None if math.isnan(prev) else prev,
                    "gain": None if math.isnan(prev) else prev - loss,
                    "weight": weight,
                }
                if self._glow_correct is not None and self._glow_correct[int(sample_id)] >= 0:
                    row["correct"] = bool(self._glow_correct[int(sample_id)])
                f.write(json.dumps(row) + "\n")

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._glow_on and self.args.glow and self.model.training:
            logs.update(self._glow_window_metrics())
        super().log(logs, start_time)

    def _glow_window_metrics(self) -> dict[str, float]:
        """Reduce the visits since the last log over all ranks into the glow/* metrics (one small all-gather)."""
        window = torch.cat(self._glow_window) if self._glow_window else torch.empty(0, 3, dtype=torch.float64)
        self._glow_window = []
        loss, prev, weight = window.unbind(1)
        gain = (prev - loss)[~prev.isnan()]
        inf = torch.tensor(math.inf, dtype=torch.float64, device=window.device)
        stats = torch.stack(
            [
                torch.tensor(float(len(weight)), dtype=torch.float64, device=window.device),
                weight.sum(),
                (weight**2).sum(),
                weight.min() if len(weight) else inf,
                -weight.max() if len(weight) else inf,
                torch.tensor(float(len(gain)), dtype=torch.float64, device=window.device),
                gain.sum(),
                (gain < 0).sum().double(),
            ]
        )
        if self.accelerator.num_processes > 1:
            stats = self.accelerator.gather(stats.to(self.accelerator.device)[None]).cpu()  # (world, 8)
            stats = torch.cat([stats[:, :3].sum(0), stats[:, 3:5].min(0).values, stats[:, 5:].sum(0)])
        count, total, total_sq, wmin, neg_wmax, gain_count, gain_total, regressed = stats.tolist()
        if count == 0:
            return {}
        mean = total / count
        metrics = {
            "glow/weight_mean": mean,
            "glow/weight_std": math.sqrt(max(total_sq / count - mean**2, 0.0)),
            "glow/weight_min": wmin,
            "glow/weight_max": -neg_wmax,
        }
        if gain_count:
            metrics["glow/gain_mean"] = gain_total / gain_count
            metrics["glow/frac_regressed"] = regressed / gain_count
        return metrics

    def _save_checkpoint(self, model, trial):
        self._sync_glow_history()
        super()._save_checkpoint(model, trial)
        if self._glow_on and self.args.should_save:
            fingerprints = (self._glow_fingerprint, self._glow_settings, self._token_fingerprint())
            write_state(checkpoint_dir(self, trial), self._glow_history, *fingerprints)

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        if self._glow_on:
            if resume_from_checkpoint is True:
                resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
                if resume_from_checkpoint is None:
                    raise RecipeError(f"resume_from_checkpoint: no complete checkpoint in {self.args.output_dir}")
            if resume_from_checkpoint:
                self._load_glow_state(resume_from_checkpoint)
            elif self.args.glow_log_samples and self.accelerator.is_main_process:
                (Path(self.args.output_dir) / GLOW_SAMPLES_NAME).unlink(missing_ok=True)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _load_glow_state(self, checkpoint: str):
        fingerprints = (self._glow_fingerprint, self._glow_settings, self._token_fingerprint)
        history = read_state(checkpoint, len(self._glow_history), *fingerprints, glow=self.args.glow)
        self._glow_history.copy_(history.to(self._glow_history.device))
        # Keep the per-visit log consistent with the restored state: drop visits logged after the checkpoint.
        log_path = Path(self.args.output_dir) / GLOW_SAMPLES_NAME
        if self.accelerator.is_main_process and log_path.is_file():
            step = read_trainer_state(checkpoint)["global_step"]
            lines = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= step]
            write_text_atomic(log_path, "".join(f"{line}\n" for line in lines))

    def _token_fingerprint(self) -> str:
        if self._glow_tokens is None:
            self._glow_tokens = token_fingerprint(self.train_dataset)
        return self._glow_tokens
