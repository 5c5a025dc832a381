"""Local dataset folders as the hub lays them out: Parquet files per split and a README.md whose
`configs:` block names each config's splits, so `datasets.load_dataset(folder, config,
split=...)` reads them offline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

Rows = Sequence[Mapping[str, Any]]


def write_parquet(path: Path, rows: Rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)
    return path


def write_dataset(root: Path, configs: Mapping[str, Mapping[str, Rows]]) -> Path:
    """`configs`: config name -> split name -> rows; each split one file, data/{config}/{split}."""
    card = ["---", "configs:"]
    for config, splits in configs.items():
        card += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            write_parquet(root / "data" / config / f"{split}.parquet", rows)
            card += [f"  - split: {split}", f"    path: data/{config}/{split}.parquet"]
    (root / "README.md").write_text("\n".join([*card, "---", "# A test dataset", ""]))
    return root


def use_own_cache(monkeypatch: Any, folder: Path) -> None:
    """`datasets` writes its Arrow cache under `folder` for the test, not the user's cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", folder)
