"""Write a raw dataset folder atomically: into a hidden sibling first, renamed into place at the end, so an
interrupted run never leaves a half-written dataset behind (shared by the synthetic cohorts)."""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Dict, Iterator


@contextmanager
def staged_dataset_folder(raw_root: str, folder_name: str, overwrite: bool = False) -> Iterator[str]:
    """Yields an empty staging folder; on success it replaces `raw_root/folder_name`, on error it is removed.

    An existing dataset is kept unless `overwrite`; it is only removed once the new one is complete."""
    final = os.path.join(raw_root, folder_name)
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True (--overwrite) to replace it")
    os.makedirs(raw_root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{folder_name}.tmp-", dir=raw_root)
    try:
        yield staging
        if os.path.exists(final):
            old = tempfile.mkdtemp(prefix=f".{folder_name}.old-", dir=raw_root)
            os.rename(final, os.path.join(old, "dataset"))
            os.rename(staging, final)
            shutil.rmtree(old)
        else:
            os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json(path: str, content: Dict) -> None:
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
