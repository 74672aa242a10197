"""A generation run: problems in, labelled trajectories out, resumable, shardable, with a summary.

[`generate`] loads the problems, keeps this shard's, skips what the output already holds, samples the rest from the
teacher (one problem at a time with transformers, chunks of problems with vLLM), labels each sample with the shared
grader, appends the rows, and finally writes `generate.json` (the summary) and `pass_rate.png` next to the data.
[`merge`] joins the shards of a sharded run. The settings a run samples with are kept in `generate_config.json`; a
re-run with other settings is refused (its samples would not be comparable), unless `overwrite`.
"""

import hashlib
import json
import os
import time
from pathlib import Path

from ..chat import prompt_messages
from ..data.problems import answer_column
from ..data.tables import load_table
from ..errors import GlowrlError
from ..grading import set_grading_workers, verify_batch
from ..io import pyplot, save_figure, write_json
from ..outputs import check_output, clear_dir
from .store import TrajectoryFile, merge_shards, parse_shard, shard_file
from .templates import AssistantTurn, check_round_trip


CONFIG_NAME = "generate_config.json"
SUMMARY_NAME = "generate.json"
SAMPLING_KEYS = ("num_samples", "temperature", "top_p", "top_k", "max_new_tokens", "seed")


def load_problems(args) -> list[dict]:
    """Every problem of the run, in file order: `problem_id` (the id column, else `<file stem>-<row>`), text, gold.

    A row repeating an earlier one (same id and problem, as in a trajectory file) is skipped; the same id with
    another problem is an error.
    """
    problems, seen = [], {}
    for path in args.dataset_paths:
        table = load_table(path, args.dataset_split)
        gold = answer_column(set(table.column_names), args, path)
        ids = table[args.id_column] if args.id_column in table.column_names else None
        for index, row in enumerate(table):
            problem_id = str(ids[index]) if ids is not None else f"{Path(path).stem}-{index}"
            text = row[args.problem_column]
            if text is None or not str(text).strip():
                raise GlowrlError(
                    f"dataset {path} row {index}: {args.problem_column} is empty or null; give the problem's text or "
                    "remove the row"
                )
            text = str(text)
            answer = row[gold]
            answer = None if answer is None or str(answer).strip() == "" else str(answer)
            if problem_id in seen:
                if seen[problem_id][0] != text:
                    raise GlowrlError(f"dataset {path} row {index}: problem id {problem_id!r} names two problems")
                if seen[problem_id][1] != answer:
                    raise GlowrlError(
                        f"dataset {path} row {index}: problem id {problem_id!r} has two gold answers "
                        f"({seen[problem_id][1]!r} and {answer!r}); keep the right one"
                    )
                continue
            seen[problem_id] = (text, answer)
            problems.append({"problem_id": problem_id, "problem": text, "answer": answer})
    return problems


def run_config(args, tokenizer) -> dict:
    """What the samples depend on: a re-run with anything else different would mix incomparable samples."""
    template = hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest()[:16]
    keys = ("teacher", "dataset_paths", "problem_column", "answer_column", "instruction", "system_prompt")
    return {
        **{k: getattr(args, k) for k in (*keys, *SAMPLING_KEYS)},
        "chat_template_kwargs": args.chat_template_kwargs,
        "chat_template_sha256": template,
    }


def _prepare_output(args, config: dict, shard) -> None:
    """Refuse an output holding anything but this run's own samples (same settings); start again with `overwrite`."""
    output_dir = Path(args.output_dir)
    config_path = output_dir / CONFIG_NAME
    previous = json.loads(config_path.read_text()) if config_path.is_file() else None
    if previous is not None and previous != config and not args.overwrite:
        changed = sorted(k for k in set(config) | set(previous) if config.get(k) != previous.get(k))
        raise GlowrlError(
            f"output_dir: {output_dir} holds samples drawn with other settings ({', '.join(changed)}); re-run with "
            "the same settings to resume, pass --overwrite to start again, or choose another output_dir"
        )
    inputs = {"teacher": args.teacher, "dataset_paths": args.dataset_paths}
    check_output(output_dir, "output_dir", overwrite=args.overwrite, resume=previous == config, inputs=inputs)
    if args.overwrite:
        if shard is None:
            clear_dir(output_dir)
        else:  # one shard starts again; the others' files stay
            shard_file(output_dir, shard).unlink(missing_ok=True)
    write_json(config, config_path)


def sample_rows(problem: dict, turn: AssistantTurn, prompt: list, samples, indices, teacher: str) -> list[dict]:
    """The trajectory rows of one problem's samples, labelled by the shared grader; an empty sample (nothing but
    whitespace: the teacher ended its turn at once) is `correct: false` and `empty: true`."""
    completions = [turn.completion(s.text) for s in samples]
    labels = verify_batch(completions, [problem["answer"]] * len(samples))
    return [
        {
            "problem_id": problem["problem_id"],
            "sample_index": index,
            "problem": problem["problem"],
            "prompt": prompt,
            "completion": completion,
            "answer": problem["answer"],
            # an empty sample (the teacher ended its turn at once) has no answer: incorrect, and marked so that SFT
            # leaves it out (it has no tokens to train on)
            "correct": False if empty else None if label is None else label == 1.0,
            "empty": empty,
            "truncated": sample.finish_reason == "length",
            "finish_reason": sample.finish_reason,
            "num_tokens": sample.num_tokens,
            "teacher": teacher,
        }
        for index, sample, completion, label in zip(indices, samples, completions, labels, strict=True)
        for empty in [not sample.text.strip()]
    ]


def _distributed_shard() -> tuple[int, int] | None:
    """Under `accelerate launch`/`torchrun` with several processes, each process is one shard of the run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def _sampler(args, tokenizer):
    from ..vllm_support import engine_memory
    from .sampler import TransformersSampler, VLLMSampler

    settings = {k: getattr(args, k) for k in ("temperature", "top_p", "top_k", "max_new_tokens")}
    if args.backend == "vllm":
        engine = {
            "tensor_parallel_size": args.tensor_parallel_size,
            "data_parallel_size": args.data_parallel_size if args.data_parallel_size > 1 else None,
            **engine_memory(args.gpu_memory_utilization),
            "dtype": args.dtype,
            "seed": args.seed,
            "revision": args.teacher_revision,
        }
        return VLLMSampler(args.teacher, tokenizer, **settings, **engine)
    import torch

    device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    return TransformersSampler(
        args.teacher, tokenizer, **settings, batch_size=args.batch_size, dtype=args.dtype, device=device
    )


def generate(args) -> dict:
    """Sample, label and write this run's (or shard's) trajectories; returns the summary of the whole file."""
    from tqdm.auto import tqdm

    from ..models import load_tokenizer
    from .sampler import sample_seed

    problems = load_problems(args)
    shard = parse_shard(args.shard) or _distributed_shard()
    mine = [p for i, p in enumerate(problems) if shard is None or i % shard[1] == shard[0]]
    tokenizer = load_tokenizer(
        args.teacher, args.teacher_revision, args.chat_template_path, field="teacher", require_chat_template=True
    )
    trainee = tokenizer  # the tokenizer SFT will train with: the student's when given, else the teacher's
    if args.model_name_or_path and args.model_name_or_path != args.teacher:
        trainee = load_tokenizer(args.model_name_or_path, field="model_name_or_path", require_chat_template=True)
    _prepare_output(args, run_config(args, tokenizer), shard)
    store = TrajectoryFile(shard_file(args.output_dir, shard))
    todo = [p for p in mine if any((p["problem_id"], s) not in store.done for s in range(args.num_samples))]
    print(f"generate: {len(mine)} problems x {args.num_samples} samples; {len(mine) - len(todo)} already written")
    if args.grading_workers:
        set_grading_workers(args.grading_workers)
    start, generated = time.time(), 0
    if todo:
        sampler = _sampler(args, tokenizer)
        chunk = 1 if args.backend == "transformers" else max(1, args.vllm_chunk_problems)
        for first in tqdm(range(0, len(todo), chunk), desc="generate", unit="problem" if chunk == 1 else "chunk"):
            batch = todo[first : first + chunk]
            prompts = [prompt_messages(p["problem"], args.instruction, args.system_prompt) for p in batch]
            turns = [AssistantTurn.of(tokenizer, prompt, args.chat_template_kwargs) for prompt in prompts]
            seeds = [[sample_seed(args.seed, p["problem_id"], s) for s in range(args.num_samples)] for p in batch]
            if args.backend == "vllm":
                requests = [(turn.generation_prompt, s) for turn, row in zip(turns, seeds, strict=True) for s in row]
                flat = sampler.sample_many(requests)
                samples = [flat[i * args.num_samples : (i + 1) * args.num_samples] for i in range(len(batch))]
            else:
                samples = [sampler.sample(turns[0].generation_prompt, seeds[0])]
            rows = []
            for problem, prompt, turn, drawn in zip(batch, prompts, turns, samples, strict=True):
                for sample in drawn:
                    check_round_trip(trainee, prompt, turn.completion(sample.text), args.chat_template_kwargs)
                missing = [s for s in range(args.num_samples) if (problem["problem_id"], s) not in store.done]
                chosen = [drawn[s] for s in missing]
                rows += sample_rows(problem, turn, prompt, chosen, missing, args.teacher)
            store.append(rows)
            generated += len(rows)
    seconds = time.time() - start
    if shard is not None and shard[0] == 0 and _distributed_shard():
        _wait_for_shards(args, problems, shard[1])
        merge_shards(args.output_dir, [p["problem_id"] for p in problems], args.num_samples, shard[1])
    path = shard_file(args.output_dir, None if _distributed_shard() else shard)
    return summarize(args, TrajectoryFile(path).rows, generated, seconds, Path(path))


def _wait_for_shards(args, problems, count: int) -> None:
    """Rank 0 of a multi-process run waits until every shard file holds its problems' samples."""
    expected = {i: len(problems[i::count]) * args.num_samples for i in range(count)}
    while any(len(TrajectoryFile(shard_file(args.output_dir, (i, count))).rows) < n for i, n in expected.items()):
        time.sleep(2)


def merge(args) -> dict:
    """`glowrl generate --merge`: join the shard files of `output_dir` into one, checked complete."""
    counts = {int(p.stem.rsplit("-of-", 1)[1]) for p in Path(args.output_dir).glob("trajectories.shard-*-of-*.jsonl")}
    if len(counts) != 1:
        found = "no shard files" if not counts else f"shards of {sorted(counts)} runs"
        raise GlowrlError(f"merge: {args.output_dir} holds {found}; merge the shards of one sharded run")
    problems = load_problems(args)
    path = merge_shards(args.output_dir, [p["problem_id"] for p in problems], args.num_samples, counts.pop())
    return summarize(args, TrajectoryFile(path).rows, 0, 0.0, path)


def summarize(args, rows: list[dict], generated: int, seconds: float, path: Path) -> dict:
    """Counts, shares, tokens, speed and the per-problem pass rates of a trajectory file; written and printed."""
    by_problem = {}
    for row in rows:
        by_problem.setdefault(row["problem_id"], []).append(row)
    labelled = [r for r in rows if r["correct"] is not None]
    rates = [sum(bool(r["correct"]) for r in g) / len(g) for g in by_problem.values()]
    summary = {
        "file": str(path),
        "teacher": args.teacher,
        "problems": len(by_problem),
        "samples": len(rows),
        "share_correct": sum(r["correct"] for r in labelled) / len(labelled) if labelled else None,
        "share_truncated": sum(r["truncated"] for r in rows) / len(rows) if rows else None,
        "share_unlabelled": (len(rows) - len(labelled)) / len(rows) if rows else None,
        "empty": sum(bool(r.get("empty")) for r in rows),
        "problems_always_solved": sum(rate == 1.0 for rate in rates),
        "problems_never_solved": sum(rate == 0.0 for rate in rates),
        "mean_tokens": sum(r["num_tokens"] for r in rows) / len(rows) if rows else None,
        "generated_this_run": generated,
        "wall_seconds_this_run": seconds,
        "samples_per_second": generated / seconds if seconds > 0 else None,
        "tokens_per_second": (sum(r["num_tokens"] for r in rows[-generated:]) / seconds) if generated else None,
        "pass_rates": rates,
    }
    output_dir = Path(args.output_dir)
    write_json(summary, output_dir / SUMMARY_NAME)
    _plot_pass_rates(rates, args.num_samples, output_dir / "pass_rate.png")
    shown = {k: v for k, v in summary.items() if k != "pass_rates"}
    parts = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    print("generate summary: " + ", ".join(parts))
    return summary


def _plot_pass_rates(rates: list[float], num_samples: int, output: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(5, 3))
    ax.hist(rates, bins=[(i - 0.5) / num_samples for i in range(num_samples + 2)], color="tab:blue", rwidth=0.9)
    ax.set_xlabel(f"share of the {num_samples} samples that are correct")
    ax.set_ylabel("problems")
    ax.set_title("teacher pass rate per problem")
    save_figure(fig, output)
