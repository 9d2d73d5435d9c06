"""Time and peak memory of our converter and `spacy convert -c ner` on the same file, in one run.

    python experiments/scripts/bench_convert.py CONLL_FILE [--rounds 2]

Each command runs under /usr/bin/time -v (wall time, maximum resident set
size), alternating ours and spaCy's; the best of `rounds` is reported.
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the product


def measure(cmd):
    result = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{cmd} failed:\n{result.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", result.stderr).group(1)
    seconds = sum(float(x) * 60**i for i, x in enumerate(reversed(wall.split(":"))))
    rss_mb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1)) / 1024
    return seconds, rss_mb


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("conll_file", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours_cmd = [sys.executable, str(ROOT / "scripts" / "convert.py"), str(args.conll_file), f"{tmp}/ours.spacy"]
        spacy_cmd = [sys.executable, "-m", "spacy", "convert", "-c", "ner", str(args.conll_file), tmp]
        best = {"ours": (float("inf"), 0.0), "spacy convert": (float("inf"), 0.0)}
        for _ in range(args.rounds):
            for name, cmd in (("ours", ours_cmd), ("spacy convert", spacy_cmd)):
                seconds, rss = measure(cmd)
                if seconds < best[name][0]:
                    best[name] = (seconds, rss)
    for name, (seconds, rss) in best.items():
        print(f"{name:>14}: {seconds:5.2f} s wall, {rss:6.0f} MB peak RSS")
    (o_s, o_m), (s_s, s_m) = best["ours"], best["spacy convert"]
    print(f"ours / spacy convert: time {o_s / s_s:.2f}x, peak memory {o_m / s_m:.2f}x")


if __name__ == "__main__":
    main()
