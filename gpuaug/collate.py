"""Row selection inside a ``default_collate`` result, guided by one uncollated example.

``default_collate`` turns per-sample structures into per-field batches (a tuple of
fields becomes a list of columns, numbers become tensors, strings stay lists). To drop
or replace samples after collation we walk the collated batch alongside one sample's
uncollated structure, which tells a list of columns from a list of per-sample values.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def gather_rows(collated: Any, example: Any, rows: Sequence[int], extra: Any = None) -> Any:
    """Rows ``rows`` of ``collated``, where row ``len(batch) + k`` means row ``k`` of ``extra``.

    Args:
        collated: a ``default_collate`` result.
        example: one uncollated sample of the same structure.
        rows: the rows to keep, in output order.
        extra: an optional second collated batch of the same structure (replacements).
    """
    if isinstance(example, Mapping):
        return {k: gather_rows(collated[k], example[k], rows, None if extra is None else extra[k])
                for k in collated}
    if isinstance(example, Sequence) and not isinstance(example, (str, bytes)):
        cols = [gather_rows(c, e, rows, None if extra is None else extra[i])
                for i, (c, e) in enumerate(zip(collated, example))]
        return type(collated)(*cols) if hasattr(collated, "_fields") else type(collated)(cols)
    if isinstance(collated, torch.Tensor):
        full = collated if extra is None else torch.cat([collated, extra])
        return full[torch.as_tensor(list(rows), dtype=torch.int64)]
    full = list(collated) + ([] if extra is None else list(extra))
    return [full[r] for r in rows]
