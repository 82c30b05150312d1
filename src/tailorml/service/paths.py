"""Errors an API caller reads carry no server paths (its data directory, a job's private
folder): each absolute path becomes its last part. The service log keeps the whole message.
"""

from __future__ import annotations

import re

PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"/]+/)+([^\s'\"/]*)")


def without_paths(message: str) -> str:
    return PATH.sub(lambda match: match.group(1) or "(a folder)", message)
