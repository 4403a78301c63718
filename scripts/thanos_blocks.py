"""Blocks made by promtool, put into a Thanos bucket as a sidecar uploads them (bench/global's backfill, the Thanos
tests' overlapping blocks)."""

import json
import pathlib


def blocks_in(directory: pathlib.Path) -> list[pathlib.Path]:
    """The blocks promtool wrote into directory, oldest first (ULIDs sort by time)."""
    return sorted(path for path in directory.iterdir() if (path / "meta.json").is_file())


def upload_block(s3, bucket: str, block: pathlib.Path, labels: dict[str, str]) -> None:
    """Upload a block under the external labels given, with the Thanos section of its meta.json (Thanos 0.42,
    pkg/block/metadata): its files without tombstones, and meta.json last, as until then Thanos sees no block."""
    meta = json.loads((block / "meta.json").read_text())
    meta["thanos"] = {"version": 1, "labels": labels, "downsample": {"resolution": 0}, "source": "sidecar"}
    for file in sorted(block.rglob("*")):
        if file.is_file() and file.name not in ("meta.json", "tombstones"):
            s3.upload_file(str(file), bucket, f"{block.name}/{file.relative_to(block)}")
    s3.put_object(Bucket=bucket, Key=f"{block.name}/meta.json", Body=json.dumps(meta).encode())
