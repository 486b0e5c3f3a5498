"""Build a manual-download dataset: `python -m hourglass_jax.data.prepare DATASET --manual_dir=DIR`.

DATASET is h36m, mpi_inf_3dhp or mpii (docs/datasets.md lists the layout each expects).
`--config` is small (64 px crops, default) or full (256 px); `--data_dir` the TFDS data directory
the experiments read (default: TFDS's).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import time

from hourglass_jax.data.realdata import REAL_DATASETS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(REAL_DATASETS))
    parser.add_argument("--manual_dir", required=True, help="where the downloaded files are")
    parser.add_argument("--config", default="small", help="small (64 px) or full (256 px)")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory to write to")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes decoding videos in parallel (h36m, mpi_inf_3dhp)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    mod = importlib.import_module(REAL_DATASETS[args.dataset])
    start = time.time()
    b = mod.prepare(args.manual_dir, args.config, args.data_dir, workers=args.workers)
    counts = {k: v.num_examples for k, v in b.info.splits.items()}
    print(f"{args.dataset}/{args.config} prepared in {b.data_dir} in {time.time() - start:.0f} s: "
          f"{counts}")


if __name__ == "__main__":
    main()
