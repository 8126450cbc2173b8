"""Files: content hashes, partition keys, and where a file of the inbox goes when done."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

PROCESSED = "processed"
FAILED = "failed"
HASH_PREFIX = 12
# Files the inbox leaves alone: being written, notes beside failed files, editors' swap files.
IGNORED_SUFFIXES = (".part", ".reason", ".tmp", ".swp")


def inbox_files(inbox: Path) -> list[Path]:
    """The files waiting in the inbox (not its folders, hidden or ignored files)."""
    if not inbox.is_dir():
        return []
    return sorted(
        p for p in inbox.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(IGNORED_SUFFIXES)
    )


def content_hash(path: Path, block_size: int = 1 << 20) -> str:
    """sha256 of the bytes: a file is known by its content, whatever its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "file"


def partition_key(name: str, digest: str) -> str:
    """'orders 2024.csv' + hash → 'orders_2024.csv-1a2b3c4d5e6f' (readable and unique per content)."""
    return f"{_safe_name(name)}-{digest[:HASH_PREFIX]}"


def split_partition_key(key: str) -> tuple[str, str]:
    name, _, prefix = key.rpartition("-")
    return name, prefix


def find_partition_file(key: str, folders: list[Path]) -> Path | None:
    """The file a partition was made from, looked for in the given folders (a re-executed run
    finds its file again after it moved to processed/ or failed/)."""
    name, prefix = split_partition_key(key)
    for folder in folders:
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            if candidate.is_file() and _safe_name(candidate.name).startswith(name):
                if content_hash(candidate).startswith(prefix):
                    return candidate
    return None


def move_aside(path: Path, inbox: Path, folder: str, reason: str | None = None) -> Path | None:
    """Move a finished inbox file into `<inbox>/<folder>/` (with `<name>.reason` beside it when
    a reason is given). Files outside the inbox are the user's own and stay where they are."""
    path = Path(path)
    inbox = Path(inbox)
    try:
        if path.resolve().parent != inbox.resolve() or not path.exists():
            return None
    except OSError:
        return None
    target_dir = inbox / folder
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    if target.exists():
        # Another file of that name went before: keep both, this one under its hash.
        target = target_dir / f"{path.stem}-{content_hash(path)[:HASH_PREFIX]}{path.suffix}"
    shutil.move(str(path), str(target))
    if reason is not None:
        target.with_name(target.name + ".reason").write_text(reason.rstrip() + "\n", encoding="utf-8")
    return target
