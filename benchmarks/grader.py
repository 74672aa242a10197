"""The shared grader on real gold answers: recall, false positives, and labelling throughput against worker count.

    python benchmarks/grader.py --output grader.json      # recall/false positives + throughput for 1..cores workers
    python benchmarks/grader.py --workers 1,2 --pairs 400     # a shorter throughput sweep

Recall: each benchmark's gold answer, written as a model writes a final answer (`\\boxed{gold}`), must score 1 against
the gold; for MATH-500 also each row's own worked solution (its last box) against its answer. False positives: each
row's answer against the next row's gold (rows whose golds differ as strings), which must score 0 unless the two are
genuinely equal. The benchmarks are the seven shipped with glowrl (the five math ones here), rows unchanged.

Throughput: MATH-500's worked solutions against their own and the next row's answers (realistic completions), graded
with `verify_batch` in a fresh process per worker count, so no cache helps; pairs per second of wall time.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import machine_info

from glowrl.io import read_jsonl, write_json, write_text_atomic


EVAL_SETS = Path(__file__).resolve().parents[1] / "glowrl" / "assets" / "eval_sets"
MATH_SETS = ("math500", "aime24", "amc23", "minerva_math", "olympiadbench")


def recall_and_false_positives() -> list[dict]:
    from glowrl.grading import verify_batch

    rows = []
    for name in MATH_SETS:
        data = read_jsonl(EVAL_SETS / f"{name}.jsonl")
        golds = [str(r["answer"]) for r in data]
        own = verify_batch([f"\\boxed{{{g}}}" for g in golds], golds)
        pairs = [(i, (i + 1) % len(golds)) for i in range(len(golds)) if golds[i] != golds[(i + 1) % len(golds)]]
        other = verify_batch([f"\\boxed{{{golds[j]}}}" for _, j in pairs], [golds[i] for i, _ in pairs])
        row = {
            "benchmark": name,
            "rows": len(golds),
            "gold_unparsed": sum(s is None for s in own),
            "recall": sum(s == 1.0 for s in own) / len(golds),
            "false_positive_pairs": len(pairs),
            "false_positives": [[golds[j], golds[i]] for (i, j), s in zip(pairs, other, strict=True) if s == 1.0],
        }
        if "solution" in data[0]:
            solutions = verify_batch([r["solution"] for r in data], golds)
            row["solution_recall"] = sum(s == 1.0 for s in solutions) / len(golds)
        rows.append(row)
    return rows


def throughput_child(workers: int, pairs: int) -> dict:
    from glowrl.grading import set_grading_workers, verify_batch

    data = read_jsonl(EVAL_SETS / "math500.jsonl")
    completions = [r["solution"] for r in data] * 2
    golds = [r["answer"] for r in data] + [data[(i + 1) % len(data)]["answer"] for i in range(len(data))]
    completions, golds = completions[:pairs], golds[:pairs]
    set_grading_workers(workers)
    verify_batch([r"\boxed{1}"], ["1"])  # start one worker outside the clock, as a long labelling run amortises it
    start = time.perf_counter()
    verify_batch(completions, golds)
    seconds = time.perf_counter() - start
    return {"workers": workers, "pairs": len(golds), "seconds": seconds, "pairs_per_s": len(golds) / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("grader.json"))
    parser.add_argument("--workers", help="comma-separated worker counts (default: 1 up to the usable cores)")
    parser.add_argument("--pairs", type=int, default=1000, help="pairs graded per worker count (at most 1000)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(throughput_child(args.child, args.pairs)))
        return 0
    from glowrl.grading import grading_workers

    counts = [int(w) for w in args.workers.split(",")] if args.workers else list(range(1, grading_workers() + 1))
    recall = recall_and_false_positives()
    speed = []
    for workers in counts:
        command = [sys.executable, __file__, "--child", str(workers), "--pairs", str(args.pairs)]
        speed.append(json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
        print(f"{workers} workers: {speed[-1]['pairs_per_s']:.1f} pairs/s", flush=True)
    lines = ["| benchmark | rows | gold unparsed | recall (boxed gold) | recall (worked solution) | false positives |"]
    lines.append("|---|---|---|---|---|---|")
    for r in recall:
        solution = f"{r['solution_recall']:.1%}" if "solution_recall" in r else "-"
        lines.append(
            f"| {r['benchmark']} | {r['rows']} | {r['gold_unparsed']} | {r['recall']:.1%} | {solution} | "
            f"{len(r['false_positives'])} of {r['false_positive_pairs']} |"
        )
    lines += ["", "| grading workers | pairs | seconds | pairs/s | × 1 worker |", "|---|---|---|---|---|"]
    for s in speed:
        lines.append(
            f"| {s['workers']} | {s['pairs']} | {s['seconds']:.2f} | {s['pairs_per_s']:.1f} | "
            f"{s['pairs_per_s'] / speed[0]['pairs_per_s']:.2f} |"
        )
    machine = machine_info("cpu")
    write_json({"machine": machine, "recall": recall, "throughput": speed}, args.output)
    write_text_atomic(args.output.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
