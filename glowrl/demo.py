"""`glowrl demo`: the whole method on a laptop CPU, with its own task and model, nothing downloaded.

It writes the built-in arithmetic trajectories and a tiny Qwen2 model into the output directory, writes a recipe for
them, and runs GLOW SFT through exactly the code path a real recipe takes (`glowrl sft --config ...`).
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import yaml

from .arithmetic import generate_trajectories, tokenizer_corpus, write_jsonl
from .tiny_model import build_tiny_model


def demo_recipe(root: Path, size: str) -> dict:
    """The demo's SFT recipe: the tiny model, the generated trajectories, the published GLOW defaults."""
    full = size == "full"
    return {
        "model_name_or_path": str(root / "base"),
        "dataset_paths": [str(root / "data" / "train.jsonl")],
        "trajectories": "all",
        "glow": True,
        # α=2, β=10 (from the authors' sweep): a gain of 0 maps to weight 1, so stalled samples (often negatives) get
        # up to 2 and well-learned ones down to 0.5. With the published α=1 every sample whose loss fell sits at the
        # 0.5 floor, which on a task this easy is nearly every sample.
        "glow_alpha": 2.0,
        "glow_beta": 10.0,
        "glow_log_samples": True,
        "output_dir": str(root / "sft"),
        "num_train_epochs": 4 if full else 2,
        "per_device_train_batch_size": 16,
        "learning_rate": 3.0e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.1,
        "max_length": 256,
        "logging_steps": 5,
        "save_strategy": "no",
        "seed": 42,
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glowrl demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/demo", help="where data, models and the report go")
    parser.add_argument("--size", choices=["full", "ci"], default="full", help="ci: fewer steps, same code path")
    parser.add_argument("--overwrite", action="store_true", help="start again in an existing output directory")
    args = parser.parse_args(argv)
    root = Path(args.output_dir)
    if root.exists() and any(root.iterdir()):
        if not args.overwrite:
            raise ValueError(f"--output_dir: {root} is not empty; pass --overwrite or choose another directory")
        shutil.rmtree(root)
    start = time.time()
    print(f"== glowrl demo -> {root}")
    num_problems = 150 if args.size == "full" else 24
    write_jsonl(generate_trajectories(num_problems, seed=0), root / "data" / "train.jsonl")
    build_tiny_model(root / "base", tokenizer_corpus(seed=0))
    recipe_path = root / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(demo_recipe(root, args.size), sort_keys=False))
    print(f"== stage sft: glowrl sft --config {recipe_path}")
    from .sft import cli as sft_cli

    sft_cli(["--config", str(recipe_path)])
    log = [json.loads(line) for line in (root / "sft" / "glow_samples.jsonl").read_text().splitlines()]
    print(f"== done in {time.time() - start:.0f}s: model in {root / 'sft'}, {len(log)} GLOW sample visits logged")
    return 0
