"""Generation throughput of `glowrl generate`'s transformers backend at batch 1 and batch B, against plain sampling.

    python benchmarks/speed_generate.py --output gen.json                  # tiny shape, batch 1 vs 8, 3 repeats
    python benchmarks/speed_generate.py --batch 16 --new-tokens 128 --shape qwen2.5-0.5b --device cuda

Variants, on the same saved random init and the same prompt (an arithmetic problem rendered with the chat template):
- `glowrl`: `TransformersSampler`, which draws every sample with its own seed (Gumbel-max sampling, one generator per
  row), `samples_per_problem` samples in chunks of the batch size, as the generate stage runs it;
- `transformers`: `model.generate(do_sample=True)` on the same batch with the same temperature and top-p: plain
  sampling, the speed a run without per-sample seeds would have.
A random init never emits its end-of-turn token, so every sample runs to `--new-tokens`: tokens/s is the decoding
speed. Each (variant, batch) is timed in turn, the order rotated every repeat; the table gives medians and the
glowrl/transformers ratio at each batch size. Labelling throughput is `benchmarks/grader.py`'s.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import harness

from glowrl.io import write_json, write_text_atomic


def plain_sample(model, ids, n: int, args, config):
    import torch

    with torch.inference_mode():
        return model.generate(ids.expand(n, -1), generation_config=config)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("speed_generate.json"))
    parser.add_argument("--batch", type=int, default=8, help="the batch size compared with batch 1")
    parser.add_argument("--samples", type=int, default=16, help="samples drawn per timed run")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--shape", choices=("tiny", *harness.SHAPES), default="tiny")
    parser.add_argument("--smoke", action="store_true", help="4 samples of 8 tokens, one repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.samples, args.new_tokens, args.repeats, args.batch = 4, 8, 1, 2
    shape = {"vocab_size": 512, **dict(zip(harness.SHAPE_KEYS[1:], (64, 256, 2, 4, 2), strict=True))}
    shape |= harness.SHAPES.get(args.shape, {})
    model_args = argparse.Namespace(model_dir=None, seed=0, bf16=False, device=args.device, **shape)
    harness.quiet_libraries()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from glowrl.chat import prompt_messages
    from glowrl.teacher.sampler import TransformersSampler, sample_seed

    runs = []
    with harness.saved_model(model_args, "speed_generate") as model_dir:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        prompt = tokenizer.apply_chat_template(
            prompt_messages("Start with 7. Add 5. Subtract 9. What is the result?"),
            tokenize=False,
            add_generation_prompt=True,
        )
        sampler = TransformersSampler(
            str(model_dir),
            tokenizer,
            temperature=1.0,
            top_p=0.95,
            top_k=0,
            max_new_tokens=args.new_tokens,
            batch_size=1,
            dtype=torch.float32,
            device=args.device,
        )
        plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(args.device).eval()
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(args.device)
        config = GenerationConfig(
            do_sample=True,
            temperature=1.0,
            top_p=0.95,
            top_k=0,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            eos_token_id=None,
            pad_token_id=tokenizer.pad_token_id,
        )
        sampler.config.min_new_tokens = args.new_tokens  # the same number of tokens for both variants
        cells = [(variant, batch) for batch in (1, args.batch) for variant in ("glowrl", "transformers")]
        for repeat in range(args.repeats):
            for variant, batch in cells[repeat % len(cells) :] + cells[: repeat % len(cells)]:
                sync = harness.device_sync(args.device)
                sync()
                start = time.perf_counter()
                if variant == "glowrl":
                    sampler.batch_size = batch
                    samples = sampler.sample(prompt, [sample_seed(0, "p", i) for i in range(args.samples)])
                    tokens = sum(s.num_tokens for s in samples)
                else:
                    tokens = 0
                    for first in range(0, args.samples, batch):
                        out = plain_sample(plain, ids, min(batch, args.samples - first), args, config)
                        tokens += (out.shape[1] - ids.shape[1]) * out.shape[0]
                sync()
                seconds = time.perf_counter() - start
                runs.append(
                    {"variant": variant, "batch": batch, "repeat": repeat, "seconds": seconds, "tokens": tokens}
                )
                harness.log(
                    f"{variant} batch {batch}: {args.samples / seconds:.2f} samples/s, {tokens / seconds:.0f} tok/s"
                )
    lines = ["| batch | variant | samples/s | tokens/s | × transformers (same batch) |", "|---|---|---|---|---|"]
    summary = {}
    for batch in (1, args.batch):
        for variant in ("glowrl", "transformers"):
            cell = [r for r in runs if r["variant"] == variant and r["batch"] == batch]
            seconds = statistics.median(r["seconds"] for r in cell)
            summary[f"{variant}@{batch}"] = {
                "samples_per_s": args.samples / seconds,
                "tokens_per_s": statistics.median(r["tokens"] / r["seconds"] for r in cell),
            }
        for variant in ("glowrl", "transformers"):
            s = summary[f"{variant}@{batch}"]
            ratio = s["samples_per_s"] / summary[f"transformers@{batch}"]["samples_per_s"]
            lines.append(f"| {batch} | {variant} | {s['samples_per_s']:.2f} | {s['tokens_per_s']:.0f} | {ratio:.3f} |")
    machine = harness.machine_info(args.device)
    settings = {k: getattr(args, k) for k in ("batch", "samples", "new_tokens", "repeats", "device", "shape")}
    write_json({"machine": machine, "settings": settings, "summary": summary, "runs": runs}, args.output)
    write_text_atomic(args.output.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
