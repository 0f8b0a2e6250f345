#!/usr/bin/env python3
"""Who holds the heap at its peak, from a heaptrack recording of the operator.

    LOAD_OPERATOR_WRAPPER=heaptrack cargo bench --bench load -- --tenants 4000 --memory-only
    scripts/heap-owners.py heaptrack.mailsec-operator.<pid>.zst [how many lines]

Each allocation still held at the peak is charged to the innermost frame of its stack that
belongs to the operator or to kube-runtime (clones skipped, so a cached copy is charged to the
cache that made it), named with the frame it called. Needs heaptrack_print (Debian: heaptrack).
"""

import collections
import re
import subprocess
import sys
import tempfile

OWNERS = ("mailsec_operator", "kube_runtime")


def readable(frame: str) -> str:
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    for mangled, plain in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","),
                           ("$u7b$$u7b$closure$u7d$$u7d$", "{closure}"), ("..", "::")):
        frame = frame.replace(mangled, plain)
    return frame[:120]


def owner(frames: list[str]) -> str:
    for i, frame in enumerate(frames):
        if any(o in frame for o in OWNERS) and "clone" not in frame.lower():
            via = readable(frames[i - 1])[:60] if i else ""
            return f"{readable(frame)}  [via {via}]"
    return "elsewhere: " + readable(frames[0] if frames else "")


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    with tempfile.NamedTemporaryFile(suffix=".fg") as stacks:
        summary = subprocess.run(
            ["heaptrack_print", "-f", sys.argv[1], "--print-peaks", "0", "--print-allocators", "0",
             "--print-temporary", "0", "--print-leaks", "0", "--print-flamegraph", stacks.name,
             "--flamegraph-cost-type", "peak"],
            check=True, capture_output=True, text=True).stdout
        held = collections.Counter()
        for line in open(stacks.name):
            stack, _, cost = line.rstrip().rpartition(" ")
            held[owner(stack.split(";")[::-1])] += int(cost)
    print(next((l for l in summary.splitlines() if "peak heap" in l), "").strip())
    print(f"{sum(held.values()) / 1e6:8.2f} MB held at the peak, by owner:")
    for who, size in held.most_common(lines):
        print(f"{size / 1e6:8.2f} {who}")


if __name__ == "__main__":
    main()
