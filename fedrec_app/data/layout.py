"""Names inside a partition set (``partitions/NAME``), shared by writers and by nodes.

Imports nothing heavy: the ClientApp resolves a node's partition folder with it.
"""

from __future__ import annotations


def partition_dir_name(index: int) -> str:
    return f"partition-{index}"
