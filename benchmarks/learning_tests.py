"""The learning tests' score distributions: each test of the suite's learning files run many times, as CI runs it.

    python benchmarks/learning_tests.py --repeats 10 --out-dir benchmarks/results/learning_tests
    python benchmarks/learning_tests.py --seeds 2 3 4 5 6 7 8 9 10 11 --repeats 1 \
        --out-dir benchmarks/results/learning_tests
    python benchmarks/learning_tests.py --load 1 --repeats 5 --out-dir benchmarks/results/learning_tests

Each repeat runs `pytest <test id>` alone, with the seed the tests read from LEARNING_TEST_SEED (CI's is 1; the
repeats of one seed differ only by Hogwild's timing, other seeds by their initial weights and envs too), its temporary
directory in <out-dir>/<test>/seed<s>/repeat<k>/tmp; the runs' progress.csv, eval.json and config.json are kept there
and the rest deleted, and result.json beside tmp records whether the test passed, its wall time and, per run, the
final evaluation and the best periodic one. A repeat with a result.json is skipped when the command is repeated, so
an interrupted measurement continues where it stopped. <out-dir>/summary.json gathers, per test, over every repeat
measured (any seed), the passes and the spread (min, median, max) of those scores, with each seed's passes: the
figures the tests' comments quote. --load N runs N busy processes beside each repeat, a noisy CI machine: its
repeats go in seed<s>_load<N>.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from conftest import evaluation_means  # noqa: E402

KEEP = ("progress.csv", "eval.json", "config.json")


@dataclass
class Args:
    out_dir: str
    seeds: list[int] = field(default_factory=lambda: [1])
    repeats: int = 10  # per seed
    load: int = 0  # busy processes sharing the cores with each repeat
    files: list[str] = field(default_factory=lambda: ["tests/test_a3c_learning.py",
                                                      "tests/test_value_based_learning.py"])
    select: str = ""  # run only the tests whose id contains this string


def test_ids(files, select):
    """file::test[params] of each test in `files`, the file as given (pytest's own ids are relative to its rootdir)."""
    ids = []
    for file in files:
        command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", file]
        listed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True).stdout
        ids += [f"{file}::{line.split('::', 1)[1]}" for line in listed.splitlines() if "::" in line]
    return [test_id for test_id in ids if select in test_id]


def run_once(test_id, seed, load, out):
    tmp = os.path.join(out, "tmp")
    spin = f"import os\nwhile os.getppid() == {os.getpid()}: pass"  # busy until killed or orphaned
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(load)]
    start = time.time()
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", tmp,
                                 test_id], capture_output=True, text=True, cwd=ROOT,
                                env={**os.environ, "LEARNING_TEST_SEED": str(seed)})
    finally:
        for process in busy:
            process.kill()
            process.wait()
    seconds = time.time() - start
    runs = {}
    for directory, subdirectories, names in sorted(os.walk(tmp)):
        for name in [*names, *subdirectories]:  # pytest's "<test>current" links (to absolute paths) go too
            path = os.path.join(directory, name)
            if os.path.islink(path) or (name in names and name not in KEEP):
                os.remove(path)
        if "eval.json" in names:
            means = evaluation_means(directory)
            runs[os.path.relpath(directory, tmp)] = {
                "final": json.load(open(os.path.join(directory, "eval.json")))["mean"], "best": max(means)}
    record = {"seed": seed, "load": load, "passed": result.returncode == 0, "seconds": round(seconds, 1), "runs": runs,
              "failure": "" if result.returncode == 0 else result.stdout[-2000:]}
    json.dump(record, open(os.path.join(out, "result.json"), "w"), indent=1)
    return record


def spread(values):
    return {"min": min(values), "median": float(np.median(values)), "max": max(values)}


def scores_of(records):
    """{run: {"final": spread, "best": spread}} over the records that got as far as that run's eval.json."""
    runs = sorted({run for r in records for run in r["runs"]})
    return {run: {score: spread([r["runs"][run][score] for r in records if run in r["runs"]])
                  for score in ("final", "best")} for run in runs}


def main():
    args = tyro.cli(Args)
    summary = {}
    for test_id in test_ids(args.files, args.select):
        name = test_id.split("::")[-1].replace("[", "__").rstrip("]")
        for seed in args.seeds:
            for k in range(1, args.repeats + 1):
                setting = f"seed{seed}" + (f"_load{args.load}" if args.load else "")
                out = os.path.join(args.out_dir, name, setting, f"repeat{k}")
                if not os.path.exists(os.path.join(out, "result.json")):
                    shutil.rmtree(out, ignore_errors=True)
                    os.makedirs(out)
                    record = run_once(test_id, seed, args.load, out)
                    print(f"{name} {setting} repeat {k}: {'passed' if record['passed'] else 'FAILED'} in "
                          f"{record['seconds']:.0f} s {record['runs']}", flush=True)
        records = [json.load(open(path)) for path in sorted(glob.glob(os.path.join(args.out_dir, name, "seed*",
                                                                                    "repeat*", "result.json")))]
        settings = sorted({(r["seed"], r.get("load", 0)) for r in records})
        of = {setting: [r for r in records if (r["seed"], r.get("load", 0)) == setting] for setting in settings}
        summary[test_id] = {"repeats": len(records), "passed": sum(r["passed"] for r in records),
                            "seconds": spread([r["seconds"] for r in records]), "scores": scores_of(records),
                            "settings": {f"seed {seed}" + (f", load {load}" if load else ""): {
                                "passed": f"{sum(r['passed'] for r in of[seed, load])}/{len(of[seed, load])}",
                                "scores": scores_of(of[seed, load])} for seed, load in settings}}
    os.makedirs(args.out_dir, exist_ok=True)
    json.dump(summary, open(os.path.join(args.out_dir, "summary.json"), "w"), indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
