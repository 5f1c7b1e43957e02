"""The resume key of a local stack (``make run``): one random key per run directory, kept there.

Every interface of a fleet must hold the same ``CHANNELS_FLEET_RESUME_KEY`` (a token issued by
one is checked by another), and a restarted ``make run`` keeps it, so a browser tab left open
across the restart is told its session is gone (a new session) rather than that its token is
forged. The file is created readable by its owner only (0600), as the chart's Secret is private.

    key = resume_key(Path(".run"))   # 48 letters and digits, the same on every call
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path

FILE_NAME = "resume-key"
KEY_LENGTH = 48  # 48 characters of 62: 285 bits, above the 32 bytes the interface asks for
_ALPHABET = string.ascii_letters + string.digits


def resume_key(run_dir: Path) -> str:
    """The key kept in ``run_dir/resume-key``, made (mode 0600) on the first call."""
    path = run_dir / FILE_NAME
    run_dir.mkdir(parents=True, exist_ok=True)
    key = "".join(secrets.choice(_ALPHABET) for _ in range(KEY_LENGTH))
    try:
        # O_EXCL: a kept key is never overwritten.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        kept = path.read_text(encoding="ascii").strip()
        if len(kept) < KEY_LENGTH:
            raise ValueError(f"{path}: not a resume key (delete it to make a new one)") from None
        return kept
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key + "\n")
    return key
