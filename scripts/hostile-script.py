#!/usr/bin/env python3
"""Write a hostile season script: many declared characters and many references to unknown ones.

Every unknown reference is a validation error, so the script measures what `dramaq plan` costs
when a script is wrong in bulk (memory, time, bytes of error output).

    scripts/hostile-script.py > /tmp/hostile.yaml                       # 8,000 declared, 40,000 unknown (~680 KB)
    scripts/hostile-script.py --characters 20000 --unknown 100000 > /tmp/hostile-big.yaml   # ~1.7 MB
    DRAMAQ_CONFIG=examples/dramaq.toml /usr/bin/time -v target/release/dramaq plan /tmp/hostile.yaml

The same shape is generated in Rust by `crates/producer/tests/support/mod.rs::hostile_script`
for the regression tests.
"""

import argparse
import sys


def hostile_script(characters: int, unknown: int, per_scene: int = 100) -> str:
    out = [
        "id: hostile",
        "title: Hostile",
        "defaults:",
        '  aspect_ratio: "9:16"',
        "  resolution: 720p",
        "  duration: 8",
        "  providers: { image: [sandbox-image], video: [sandbox-sora] }",
        "characters:",
    ]
    for i in range(characters):
        out.append(f"  - {{name: c{i:05}, appearance: a, seed: 1}}")
    out.append("episodes:")
    out.append("  - scenes:")
    left = unknown
    n = 0
    while left > 0:
        k = min(per_scene, left)
        refs = ", ".join(f"x{n + j:05}" for j in range(k))
        out.append(f"      - {{description: d, characters: [{refs}]}}")
        n += k
        left -= k
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--characters", type=int, default=8000, help="declared characters (default 8000)")
    ap.add_argument("--unknown", type=int, default=40000, help="references to undeclared characters (default 40000)")
    args = ap.parse_args()
    sys.stdout.write(hostile_script(args.characters, args.unknown))


if __name__ == "__main__":
    main()
