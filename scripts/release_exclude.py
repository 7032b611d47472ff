"""The images the shipped model must not train on, so that it can be compared with the recipe it
replaces on Sartaj's leak-free test split: the test images of Sartaj's ``dedup`` protocol (seed 0)
and every near-duplicate of them in any collection (groups formed across collections, as
training forms them): 1,099 of the 8,972 images of Sartaj + Masoud-Training.

(Sartaj's ``original`` test split is left to the model card's unpaired figures: with its copies
in both collections it would take 1,569 images, a sixth of the data, out of training.)

Usage: python scripts/release_exclude.py OUT.txt SARTAJ_DIR OTHER_DIR ...
Writes one path per line, relative to the collections' common parent (what ``train --exclude``
reads when trained with ``-d SARTAJ_DIR -d OTHER_DIR ...``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from braintumor.data.dataset import scan
from braintumor.data.duplicates import duplicate_groups
from braintumor.data.protocols import make_split


def main(out: str, sartaj: str, *others: str) -> None:
    own = scan(sartaj)
    split = make_split(own, "dedup", seed=0, progress=True)
    held = {own.paths[i].resolve() for i in split.test}
    pooled = scan([sartaj, *others])
    groups = duplicate_groups(pooled)
    rows = [i for i, p in enumerate(pooled.paths) if p.resolve() in held]
    chosen = np.flatnonzero(np.isin(groups, groups[rows]))
    lines = sorted(pooled.paths[i].relative_to(pooled.root).as_posix() for i in chosen)
    Path(out).write_text("# " + __doc__.splitlines()[0] + "\n" + "\n".join(lines) + "\n")
    print(f"{out}: {len(lines)} images ({len(held)} test images of Sartaj's dedup split and their copies)")


if __name__ == "__main__":
    main(*sys.argv[1:])
