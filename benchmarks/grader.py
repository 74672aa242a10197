"""The shared grader on real gold answers: recall, false positives, and labelling throughput against worker count.

    python benchmarks/grader.py --output grader.json      # recall/false positives + throughput for 1..cores workers
    python benchmarks/grader.py --workers 1,2 --pairs 400     # a shorter throughput sweep
    python benchmarks/grader.py --recall-only --timed         # recall/false positives only, pair by pair, slowest

Recall: each benchmark's gold answer, written as a model writes a final answer (`\\boxed{gold}`), must score 1 against
the gold; for MATH-500 and AIME24 also each row's own worked solution (its last box) against its answer. False
positives: pairs of golds that differ as text, each row's gold against the next row's plus `--random-pairs` seeded
random pairs a row, which must score 0 unless the two are genuinely equal (the pairs that score 1 are listed in the
JSON, to be read). `--timed` grades one pair at a time and reports each benchmark's slowest pairs.
The benchmarks are the seven shipped with glowrl (the five math ones here), rows unchanged.

Throughput: MATH-500's worked solutions against their own and the next row's answers (realistic completions), graded
with `verify_batch` in a fresh process per worker count, so no cache helps; pairs per second of wall time.
"""

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from harness import machine_info

from glowrl.io import read_jsonl, write_json, write_text_atomic


EVAL_SETS = Path(__file__).resolve().parents[1] / "glowrl" / "assets" / "eval_sets"
MATH_SETS = ("math500", "aime24", "amc23", "minerva_math", "olympiadbench")


def _timed(answers: list[str], golds: list[str]) -> tuple[list, list[float]]:
    """Scores and seconds of each pair, graded one at a time (so the slowest pair can be found)."""
    from glowrl.grading import verify_batch

    scores, seconds = [], []
    for answer, gold in zip(answers, golds, strict=True):
        start = time.perf_counter()
        scores.append(verify_batch([answer], [gold])[0])
        seconds.append(time.perf_counter() - start)
    return scores, seconds


def recall_and_false_positives(seed: int = 0, random_pairs: int = 2, timed: bool = False) -> list[dict]:
    """Per benchmark: recall of each gold (and worked solution) against itself, and false positives over pairs of
    golds that differ as text: each row against the next row's gold, plus `random_pairs` seeded random pairs a row."""
    from glowrl.grading import verify_batch

    grade = _timed if timed else lambda answers, golds: (verify_batch(answers, golds), [])
    rows = []
    rng = random.Random(seed)
    for name in MATH_SETS:
        data = read_jsonl(EVAL_SETS / f"{name}.jsonl")
        golds = [str(r["answer"]) for r in data]
        n = len(golds)
        own, own_seconds = grade([f"\\boxed{{{g}}}" for g in golds], golds)
        pairs = [(i, (i + 1) % n) for i in range(n)]
        pairs += [tuple(rng.sample(range(n), 2)) for _ in range(random_pairs * n)]
        pairs = [(i, j) for i, j in dict.fromkeys(pairs) if golds[i].strip() != golds[j].strip()]
        other, other_seconds = grade([f"\\boxed{{{golds[j]}}}" for _, j in pairs], [golds[i] for i, _ in pairs])
        row = {
            "benchmark": name,
            "rows": n,
            "gold_unparsed": sum(s is None for s in own),
            "recall": sum(s == 1.0 for s in own) / n,
            "recall_misses": [g for g, s in zip(golds, own, strict=True) if s != 1.0],
            "false_positive_pairs": len(pairs),
            "false_positives": [[golds[j], golds[i]] for (i, j), s in zip(pairs, other, strict=True) if s == 1.0],
        }
        if "solution" in data[0]:
            solutions, solution_seconds = grade([r["solution"] for r in data], golds)
            row["solution_recall"] = sum(s == 1.0 for s in solutions) / n
            row["solution_misses"] = [g for g, s in zip(golds, solutions, strict=True) if s != 1.0]
        else:
            solution_seconds = []
        if timed:
            timings = [(s, golds[i], golds[i]) for i, s in enumerate(own_seconds)]
            timings += [(s, golds[j], golds[i]) for (i, j), s in zip(pairs, other_seconds, strict=True)]
            timings += [(s, "(worked solution)", golds[i]) for i, s in enumerate(solution_seconds)]
            row["slowest_pairs"] = [{"seconds": s, "answer": a, "gold": g} for s, a, g in sorted(timings)[-3:]]
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
    parser.add_argument("--seed", type=int, default=0, help="seed of the random false-positive pairs")
    parser.add_argument("--random-pairs", type=int, default=2, help="random false-positive pairs per row")
    parser.add_argument("--timed", action="store_true", help="grade pair by pair and report the slowest pairs")
    parser.add_argument("--recall-only", action="store_true", help="skip the throughput sweep")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(throughput_child(args.child, args.pairs)))
        return 0
    from glowrl.grading import grading_workers

    counts = [int(w) for w in args.workers.split(",")] if args.workers else list(range(1, grading_workers() + 1))
    counts = [] if args.recall_only else counts
    recall = recall_and_false_positives(args.seed, args.random_pairs, args.timed)
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
    for r in recall:
        for s in r.get("slowest_pairs", [])[-1:]:
            pair = f"{s['answer'][:60]!r} vs {s['gold'][:60]!r}"
            lines.append(f"\n{r['benchmark']}: slowest pair {s['seconds']:.2f} s ({pair})")
    lines += (
        []
        if not speed
        else ["", "| grading workers | pairs | seconds | pairs/s | × 1 worker |", "|---|---|---|---|---|"]
    )
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
