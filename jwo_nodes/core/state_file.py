"""Small state a node keeps across its restarts: one JSON document per file.

No rclpy here. A write goes to a temporary file in the same folder, is flushed to the
disk (fsync) and renamed over the old file, then the folder is synced: a crash or a
power cut at any moment leaves the old document or the new one, never a torn one.
Files are created readable by their owner only (they may hold salted hashes).
"""
import json
import os
import tempfile
from pathlib import Path
from typing import Optional


class StateFileError(ValueError):
    """A state file that exists but cannot be read back as a document."""


def write_state(path, document: dict) -> None:
    """Replaces the document at ``path`` atomically; OSError when it cannot."""
    path = Path(path)
    data = json.dumps(document, sort_keys=True).encode('utf-8')
    # mkstemp creates the file with mode 0600.
    fd, temporary = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_state(path) -> Optional[dict]:
    """The document at ``path``; None when there is no file; StateFileError when the
    file is unreadable or not a JSON object."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StateFileError(f'{path}: {error}') from error
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StateFileError(f'{path}: not JSON ({error})') from error
    if not isinstance(document, dict):
        raise StateFileError(f'{path}: not a JSON object')
    return document
