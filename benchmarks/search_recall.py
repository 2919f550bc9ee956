"""Text-to-video search quality on the demo's motion videos: index a split with a model that
``claver demo`` trained, query every class by its name, report recall@1, recall@5 and
R-precision (the share of a class's videos among its top-R hits, R = videos per class).

    claver demo --out runs/demo
    python benchmarks/search_recall.py runs/demo/claver-tiny-kmt.safetensors \
        runs/demo/actionclip-tiny-meanp.safetensors
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import claver
from claver.demo import DemoRecipe, default_data_dir
from claver.synthetic import MOTION_PHRASES

TEMPLATE = "a video of a {}."  # the demo's training template


def recall(model: str, videos: Path, out: Path) -> dict[str, float]:
    """Index ``videos`` (``<shape>_<motion>_<n>.mp4``) and query each class by its name."""
    idx = claver.index([str(videos)], str(out), model=model)
    files = sorted(videos.glob("*.mp4"))
    classes = sorted({re.match(r"(\w+?)_(\w+)_\d+$", f.stem).groups() for f in files})
    r1 = r5 = rprec = 0.0
    for shape, motion in classes:
        relevant = {str(f) for f in files if f.stem.startswith(f"{shape}_{motion}_")}
        hits = idx.search(f"{shape} {MOTION_PHRASES[motion]}", k=len(relevant),
                          templates=TEMPLATE)
        top = [str(h.file) for h in hits]
        r1 += top[0] in relevant
        r5 += any(t in relevant for t in top[:5])
        rprec += sum(t in relevant for t in top) / len(relevant)
    n = len(classes)
    return {"classes": n, "videos": len(files), "recall@1": r1 / n, "recall@5": r5 / n,
            "R-precision": rprec / n, "chance": 1 / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="checkpoints written by claver demo")
    parser.add_argument("--data", type=Path, help="demo dataset folder (default: the cached one)")
    args = parser.parse_args()
    data = args.data or default_data_dir(DemoRecipe())
    print(f"{'model':<28} {'split':<10} {'queries':>7} {'videos':>6} {'R@1':>5} {'R@5':>5} "
          f"{'R-prec':>6} {'chance':>6}")
    with tempfile.TemporaryDirectory(prefix="claver-recall-") as tmp:
        for i, model in enumerate(args.models):
            for split in ("val", "zero_shot"):
                r = recall(model, data / "videos" / split, Path(tmp) / f"{i}-{split}.idx")
                print(f"{Path(model).stem:<28} {split:<10} {r['classes']:>7} {r['videos']:>6} "
                      f"{r['recall@1']:>5.2f} {r['recall@5']:>5.2f} {r['R-precision']:>6.2f} "
                      f"{r['chance']:>6.2f}")


if __name__ == "__main__":
    main()
