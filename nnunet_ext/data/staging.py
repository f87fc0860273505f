"""Write outputs so that nothing is ever half-written, with the permissions the user's umask asks for.

* `staged_dataset_folder`: a raw dataset folder (or any output folder) is written into a hidden sibling first
  and renamed into place at the end, so an interrupted run never leaves a half-written dataset behind (shared
  by the synthetic cohorts, the converters and the post-processing). The staging folder's name carries the
  host and process id, so a later run can tell a folder left by a killed run (removed) from the live one of
  another process (kept).
* `write_files_together`: several files in place as a set: all new, or (on any error) all as they were.

Python's `tempfile.mkdtemp`/`mkstemp` create 0700 folders and 0600 files whatever the umask, which a lab that
shares datasets between users does not want; everything here is created with `os.mkdir`/`os.open`, which
apply the umask as every other file the project writes does.
"""
import json
import os
import re
import secrets
import shutil
import socket
from contextlib import contextmanager
from typing import Dict, Iterator, List, Mapping, Union

_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
# .<folder_name>.<kind>-<host>-<pid>-<token>
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[0-9a-f]+$")
_DATASET = re.compile(r"^Dataset(?P<id>\d{3})_")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _unique_name(prefix: str) -> str:
    return f"{prefix}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def make_staging_folder(parent: str, prefix: str) -> str:
    """A new, empty folder `parent/<prefix>-<host>-<pid>-<token>`, with the umask's permissions."""
    while True:
        path = os.path.join(parent, _unique_name(prefix))
        try:
            os.mkdir(path)  # mode 0o777 & ~umask, unlike tempfile.mkdtemp's 0o700
            return path
        except FileExistsError:
            continue


def _same_dataset(name: str, folder_name: str) -> bool:
    """Whether staging folder `name` belongs to `folder_name`: the same name, or the same nnU-Net dataset id."""
    if name == folder_name:
        return True
    ours, theirs = _DATASET.match(folder_name), _DATASET.match(name)
    return bool(ours and theirs and ours["id"] == theirs["id"])


def clean_stale_staging(parent: str, folder_name: str) -> List[str]:
    """Remove the staging folders that runs killed while writing `folder_name` (or a dataset of its id) left in
    `parent`; return what was removed. Folders of live processes, of other hosts (a shared file system) and
    of unknown form are kept. A killed run's `.old-` folder holds the previous dataset if the kill came between
    the two renames: it is put back when nothing took its place."""
    removed = []
    if not os.path.isdir(parent):
        return removed
    for entry in sorted(os.listdir(parent)):
        match = _STAGING.match(entry)
        if match is None or not _same_dataset(match["name"], folder_name) or match["host"] != _HOST:
            continue
        if _process_alive(int(match["pid"])):
            continue
        path = os.path.join(parent, entry)
        previous = os.path.join(path, "dataset")
        final = os.path.join(parent, match["name"])
        if match["kind"] == "old" and os.path.isdir(previous) and not os.path.exists(final):
            os.rename(previous, final)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


_PRIVATE = re.compile(r"^(?P<prefix>.+)-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[0-9a-f]+$")


def make_private_folder(parent: str, prefix: str) -> str:
    """A new folder `parent/<prefix>-<host>-<pid>-<token>` readable by its owner only (a temporary copy of the
    user's images), after removing the ones that killed processes of this host left there."""
    clean_stale_private_folders(parent, prefix)
    path = make_staging_folder(parent, prefix)
    os.chmod(path, 0o700)
    return path


def clean_stale_private_folders(parent: str, prefix: str) -> List[str]:
    """Remove `<prefix>-<host>-<pid>-<token>` folders of this host whose process is gone (killed with SIGKILL,
    which no clean-up survives); return what was removed. Live processes' folders and other hosts' are kept."""
    removed = []
    if not os.path.isdir(parent):
        return removed
    for entry in sorted(os.listdir(parent)):
        match = _PRIVATE.match(entry)
        if match is None or match["prefix"] != prefix or match["host"] != _HOST or _process_alive(int(match["pid"])):
            continue
        path = os.path.join(parent, entry)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def check_dataset_id_free(raw_root: str, folder_name: str) -> None:
    """Refuse `Dataset<ID>_<Name>` when another name already uses that id in `raw_root`: nnU-Net finds datasets
    by id and stops with "More than one dataset name found" for every command on it."""
    match = _DATASET.match(folder_name)
    if match is None or not os.path.isdir(raw_root):
        return
    others = sorted(entry for entry in os.listdir(raw_root)
                    if entry.startswith(f"Dataset{match['id']}_") and entry != folder_name
                    and os.path.isdir(os.path.join(raw_root, entry)))
    if others:
        raise ValueError(f"dataset id {int(match['id'])} is already used by {os.path.join(raw_root, others[0])}; "
                         f"choose another id")


@contextmanager
def staged_dataset_folder(raw_root: str, folder_name: str, overwrite: bool = False) -> Iterator[str]:
    """Yields an empty staging folder; on success it replaces `raw_root/folder_name`, on error it is removed.

    An existing dataset is kept unless `overwrite`; it is only removed once the new one is complete. A
    `Dataset<ID>_<Name>` whose id another dataset in `raw_root` uses is refused."""
    if not folder_name or folder_name in (".", "..") or folder_name.startswith(".") or os.sep in folder_name or \
            (os.altsep and os.altsep in folder_name):
        raise ValueError(f"{folder_name!r} is not a folder name (no path separators, not starting with '.'): "
                         f"the dataset would be written outside {raw_root}")
    final = os.path.join(raw_root, folder_name)
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True (--overwrite) to replace it")
    check_dataset_id_free(raw_root, folder_name)
    os.makedirs(raw_root, exist_ok=True)
    clean_stale_staging(raw_root, folder_name)
    staging = make_staging_folder(raw_root, f".{folder_name}.tmp")
    try:
        yield staging
        if os.path.exists(final):
            old = make_staging_folder(raw_root, f".{folder_name}.old")
            os.rename(final, os.path.join(old, "dataset"))
            os.rename(staging, final)
            shutil.rmtree(old)
        else:
            os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _create_new_file(folder: str, prefix: str) -> str:
    """A new empty file `folder/<prefix>-<host>-<pid>-<token>` with the umask's permissions (0o666 & ~umask)."""
    while True:
        path = os.path.join(folder, _unique_name(prefix))
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue


def write_files_together(files: Mapping[str, Union[str, bytes]]) -> None:
    """Write each {path: content} so that either every file has its new content or (on any error) every file is
    as it was: each is written to a hidden temporary beside it, the old files are moved aside, the new ones
    renamed into place, and on an error the moved-aside files are put back. A folder where a file should go
    is an error, before anything is written."""
    targets = {os.path.abspath(path): content for path, content in files.items()}
    for path in targets:
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path} is a folder; cannot write the file there")
    staged: Dict[str, str] = {}
    moved: Dict[str, str] = {}   # final path -> where its old version waits
    placed: List[str] = []
    try:
        for path, content in targets.items():
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            staged[path] = _create_new_file(folder, f".{os.path.basename(path)}.tmp")
            with open(staged[path], "wb" if isinstance(content, bytes) else "w") as f:
                f.write(content)
        for path in targets:
            if os.path.lexists(path):
                aside = _unique_name(os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.old"))
                os.rename(path, aside)
                moved[path] = aside
        for path, temporary in staged.items():
            os.rename(temporary, path)
            placed.append(path)
    except BaseException:
        for path in placed:
            os.remove(path)
        for path, aside in moved.items():
            os.rename(aside, path)
        for temporary in staged.values():
            if os.path.exists(temporary):
                os.remove(temporary)
        raise
    for aside in moved.values():
        os.remove(aside)


def write_json(path: str, content: Dict) -> None:
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
