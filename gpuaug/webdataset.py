"""Read WebDataset-style ``.tar`` shards with the standard library's :mod:`tarfile`.

A shard is a plain (optionally compressed) tar file whose members are grouped into
samples by name: ``n0144_10026.jpg`` and ``n0144_10026.cls`` are the fields ``"jpg"``
and ``"cls"`` of sample ``"n0144_10026"``. :class:`TarShards` streams the shards
(never loading a whole one), yields one dict of raw ``bytes`` per sample, and splits
the shards over ``torch.distributed`` ranks and DataLoader workers itself. Nothing is
decoded: the image bytes go to :class:`gpuaug.DataLoader`, which decodes and augments
whole batches; labels are the user's to decode (:func:`decode_label` for ``.cls``).

It needs no extra package and does not use or conflict with the ``webdataset`` package.

Example:
    >>> import io, tarfile, tempfile, os
    >>> from gpuaug.webdataset import TarShards, decode_label
    >>> root = tempfile.mkdtemp()
    >>> for s in range(2):                       # two shards of two samples each
    ...     with tarfile.open(os.path.join(root, f"shard-{s:02d}.tar"), "w") as tar:
    ...         for k in range(2):
    ...             for ext, value in (("jpg", b"\\xff\\xd8 fake jpeg"), ("cls", str(2 * s + k).encode())):
    ...                 info = tarfile.TarInfo(f"sample{2 * s + k}.{ext}")
    ...                 info.size = len(value)
    ...                 tar.addfile(info, io.BytesIO(value))
    >>> shards = TarShards(os.path.join(root, "shard-{00..01}.tar"))
    >>> [(s["__key__"], s["__index__"], decode_label(s["cls"])) for s in shards]
    [('sample0', (0, 0), 0), ('sample1', (0, 1), 1), ('sample2', (1, 0), 2), ('sample3', (1, 1), 3)]
    >>> sorted(next(iter(shards)))
    ['__index__', '__key__', '__url__', 'cls', 'jpg']
"""
from __future__ import annotations

import os
import random
import re
import tarfile
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

HANDLERS = ("raise", "warn", "skip")

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


class TarShardError(RuntimeError):
    """A shard could not be read; the message names the shard and, when known, the member."""


def expand_braces(pattern: str) -> list[str]:
    """Expand shell-style braces: numeric ranges ``{000..009}`` and lists ``{a,b}``.

    Ranges keep zero padding (the width of the wider bound when either bound has a
    leading zero, as bash does) and may count down; several braces give every
    combination, left to right; braces may nest. A brace holding neither a range nor a
    comma is kept literally.

    Args:
        pattern: e.g. ``"data/shard-{000000..000009}.tar"``.
    Returns:
        The expanded strings, in order.

    Example:
        >>> expand_braces("s-{08..11}-{a,b}.tar")
        ['s-08-a.tar', 's-08-b.tar', 's-09-a.tar', 's-09-b.tar', 's-10-a.tar', 's-10-b.tar', 's-11-a.tar', 's-11-b.tar']
        >>> expand_braces("{x,y{1..2}}.tar")
        ['x.tar', 'y1.tar', 'y2.tar']
    """
    start = pattern.find("{")
    if start < 0:
        if "}" in pattern:
            raise ValueError(f"unmatched '}}' in shard pattern {pattern!r}")
        return [pattern]
    end, parts = _split_brace(pattern, start)
    head, tail = pattern[:start], pattern[end + 1:]
    body = pattern[start + 1:end]
    match = _RANGE.match(body)
    if match:
        alternatives = _numeric_range(*match.groups())
    elif len(parts) > 1:
        alternatives = [a for part in parts for a in expand_braces(part)]
    else:                                   # "{x}": not an expansion, keep it as written
        return [head + "{" + b + "}" + t for b in expand_braces(body) for t in expand_braces(tail)]
    return [head + a + t for a in alternatives for t in expand_braces(tail)]


def _split_brace(pattern: str, start: int) -> tuple[int, list[str]]:
    """Position of the '}' closing the brace at ``start``, and its top-level comma parts."""
    depth, parts, begin = 0, [], start + 1
    for pos in range(start, len(pattern)):
        char = pattern[pos]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                parts.append(pattern[begin:pos])
                return pos, parts
        elif char == "," and depth == 1:
            parts.append(pattern[begin:pos])
            begin = pos + 1
    raise ValueError(f"unmatched '{{' in shard pattern {pattern!r}")


def _numeric_range(first: str, last: str) -> list[str]:
    lo, hi = int(first), int(last)
    padded = any(len(b.lstrip("-")) > 1 and b.lstrip("-").startswith("0") for b in (first, last))
    width = max(len(first), len(last)) if padded else 0
    step = 1 if hi >= lo else -1
    return [f"{v:0{width}d}" for v in range(lo, hi + step, step)]


def decode_label(value: bytes | str | int) -> int:
    """The integer class of a ``.cls`` field (ASCII digits, whitespace allowed).

    Example:
        >>> decode_label(b"42\\n")
        42
    """
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("ascii")
    return int(value.strip())


def split_name(name: str) -> tuple[str, str] | None:
    """(key, field) of a tar member name, or None when it names no sample field.

    The key is the path up to the first dot of the basename; the field is everything
    after it, lowercased. Names without an extension, or whose basename starts with a
    dot (``.DS_Store``), belong to no sample.

    Example:
        >>> split_name("train/n01440764_10026.JPEG"), split_name("a/b.seg.png"), split_name("README")
        (('train/n01440764_10026', 'jpeg'), ('a/b', 'seg.png'), None)
    """
    directory, _, base = name.rpartition("/")
    stem, dot, field = base.partition(".")
    if not stem or not dot or not field:
        return None
    return (f"{directory}/{stem}" if directory else stem), field.lower()


class _StrictTarInfo(tarfile.TarInfo):
    """Treats a shard that stops without tar's end-of-archive block as an error.

    Stream-mode ``tarfile`` quietly ends the archive at a missing, cut or garbled
    header after the first one, so a shard truncated between members would silently
    lose its last samples. Written tars always end with zero blocks (which tarfile
    reports separately, as the normal end), so anything else here is damage.
    """

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError) as e:
            raise tarfile.ReadError(f"truncated: the archive ends without its end-of-archive block ({e})") from None
        except tarfile.InvalidHeaderError as e:
            raise tarfile.ReadError(f"corrupt member header ({e})") from None


class TarShards(IterableDataset):
    """WebDataset-style tar shards as an iterable dataset of raw-bytes sample dicts.

    Each sample is a dict of its fields (member extension, lowercased, -> ``bytes``)
    plus ``"__key__"`` (member path up to the basename's first dot), ``"__url__"`` (the
    shard) and ``"__index__"`` = ``(shard number in the expanded list, position of the
    sample in that shard)``, a stable identity that :class:`gpuaug.DataLoader` uses to
    draw the sample's augmentation (so it does not depend on ranks, workers or shard
    order). Consecutive members with the same key form one sample. Nothing is decoded.

    Shards are split the way torch expects of an iterable dataset: first over ranks
    (shard ``i`` of the epoch's order goes to rank ``i % world_size``), then over the
    DataLoader workers of that rank (the rank's shard ``j`` goes to worker
    ``j % num_workers``). Every sample is read exactly once per epoch over all ranks
    and workers. When the shard count is not a multiple of ``world_size *
    num_workers``, the first ranks/workers get one shard more (so ranks may see
    different numbers of samples: under DDP, stop all ranks together, e.g. after a
    fixed number of steps); a worker with no shard at all yields nothing and warns (once
    per process).

    Args:
        urls: a shard path, a brace pattern (``"data/shard-{000000..000009}.tar"``,
            ``"{a,b}.tar"``, see :func:`expand_braces`), a ``pathlib.Path``, a readable
            binary file object, or a list of these (strings in the list are expanded
            too). Plain and compressed tars (gz, bz2, xz) are read as streams.
        shuffle_shards: shuffle the shard order every epoch, from ``(seed, epoch)``
            with :class:`random.Random`, identically on every rank and worker (before
            splitting). Samples keep their order within a shard.
        seed: seed of the shard shuffle.
        keys: field names to keep (e.g. ``("jpg", "cls")``, case-insensitive); other
            members are skipped without being held in memory, and samples with none of
            these fields are dropped. ``None`` keeps every field.
        handler: what a shard that cannot be read does: ``"raise"`` a
            :class:`TarShardError` naming the shard and member, ``"warn"`` and go on
            with the next shard, or ``"skip"`` to the next shard silently. Samples
            yielded before the damage stay yielded; the one being read is dropped.
        rank, world_size: this process's share; default: from ``torch.distributed``
            when it is initialized, else one process.

    ``set_epoch(epoch)`` picks the epoch's shard order; call it before creating the
    DataLoader iterator (with ``persistent_workers=True`` the workers keep the copy of
    the dataset they started with, so the new order does not reach them).
    :class:`gpuaug.DataLoader` calls it for you.

    Example:
        >>> import io, os, tarfile, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "one.tar")
        >>> with tarfile.open(path, "w") as tar:
        ...     for name in ("a/x.jpg", "a/x.seg.png", "a/y.jpg"):
        ...         info = tarfile.TarInfo(name); info.size = 3
        ...         tar.addfile(info, io.BytesIO(b"abc"))
        >>> [(s["__key__"], sorted(k for k in s if not k.startswith("__"))) for s in TarShards(path)]
        [('a/x', ['jpg', 'seg.png']), ('a/y', ['jpg'])]
    """

    #: Tells :class:`gpuaug.DataLoader` that this dataset splits itself over ranks and
    #: workers and names its samples with ``"__index__"``.
    splits_itself = True

    def __init__(self, urls, *, shuffle_shards: bool = False, seed: int = 0, keys: Iterable[str] | None = None,
                 handler: str = "raise", rank: int | None = None, world_size: int | None = None):
        if handler not in HANDLERS:
            raise ValueError(f"handler must be one of {HANDLERS}, got {handler!r}")
        if (rank is None) != (world_size is None):
            raise ValueError("pass both rank and world_size, or neither")
        if world_size is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.shards = _as_shard_list(urls)
        if not self.shards:
            raise ValueError(f"no shards in {urls!r}")
        self.shuffle_shards = shuffle_shards
        self.seed = int(seed)
        self.keys = None if keys is None else frozenset(k.lower() for k in ([keys] if isinstance(keys, str) else keys))
        self.handler = handler
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._warned_empty = False

    def set_epoch(self, epoch: int) -> None:
        """Use the shard order of ``epoch`` from the next iteration on."""
        self.epoch = int(epoch)

    def world(self) -> tuple[int, int]:
        """(rank, world_size): the constructor's, else ``torch.distributed``'s, else (0, 1)."""
        if self.world_size is not None:
            return self.rank, self.world_size
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __getstate__(self) -> dict[str, Any]:
        # Workers started with "spawn" do not join the process group, so they could not
        # ask torch.distributed for the rank: fix it when the dataset is sent to them.
        state = self.__dict__.copy()
        state["rank"], state["world_size"] = self.world()
        return state

    def shard_order(self, epoch: int | None = None) -> list[int]:
        """All shard numbers in the order of ``epoch`` (the same on every rank and worker)."""
        order = list(range(len(self.shards)))
        if self.shuffle_shards:
            # A str seed is hashed with SHA-512 by random.seed: the same in every process,
            # whatever PYTHONHASHSEED, and distinct for every (seed, epoch).
            random.Random(f"{self.seed}/{self.epoch if epoch is None else epoch}").shuffle(order)
        return order

    def my_shards(self) -> list[int]:
        """The shard numbers this rank and DataLoader worker read this epoch, in order."""
        rank, world_size = self.world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = self.shard_order()[rank::world_size][worker::workers]
        if not mine and not self._warned_empty:
            self._warned_empty = True
            warnings.warn(f"gpuaug.webdataset: rank {rank} worker {worker} has no shard to read "
                          f"({len(self.shards)} shard(s) for {world_size} rank(s) x {workers} worker(s)); "
                          "use fewer workers or more shards", stacklevel=3)
        return mine

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for shard in self.my_shards():
            yield from self._read_shard(shard)

    def _read_shard(self, shard: int) -> Iterator[dict[str, Any]]:
        source = self.shards[shard]
        url = _url_of(source, shard)
        where = ""                                   # the member being read, for error messages
        try:
            with _open_tar(source) as tar:
                sample: dict[str, Any] | None = None
                position = -1
                for info in tar:
                    where = f"after member {info.name!r}"   # a bad header shows up when moving on
                    parts = split_name(info.name) if info.isfile() else None   # directories, links: no data
                    if parts is None:
                        continue
                    key, field = parts
                    if sample is None or key != sample["__key__"]:
                        if _has_fields(sample):
                            yield sample
                        position += 1                # counts every sample, kept or not: a stable identity
                        sample = {"__key__": key, "__url__": url, "__index__": (shard, position)}
                    if self.keys is not None and field not in self.keys:
                        continue                     # not read: the stream skips its data on the next member
                    if field in sample:
                        raise tarfile.ReadError(f"duplicate field {field!r} in sample {key!r}")
                    where = f"member {info.name!r}"
                    sample[field] = tar.extractfile(info).read()
                    where = f"after member {info.name!r}"
                if _has_fields(sample):
                    yield sample
        except (tarfile.TarError, OSError, EOFError) as e:
            message = f"cannot read shard {shard} ({url})" + (f", {where}" if where else "") + f": {e}"
            if self.handler == "raise":
                raise TarShardError(message) from e
            if self.handler == "warn":
                warnings.warn(f"gpuaug.webdataset: {message}; going on with the next shard", stacklevel=2)

    def __repr__(self) -> str:
        return (f"TarShards({len(self.shards)} shard(s), shuffle_shards={self.shuffle_shards}, seed={self.seed}, "
                f"keys={sorted(self.keys) if self.keys else None}, handler={self.handler!r})")


class WebDataset(TarShards):
    """:class:`TarShards` under the name users of the ``webdataset`` package look for.

    The samples are the same as ``webdataset.WebDataset(urls)`` yields before any
    ``.decode()``: one dict per sample with ``"__key__"``, ``"__url__"`` and each member's
    raw ``bytes`` under its extension. Differences: ``shardshuffle`` is a flag (any true
    value, an int included, shuffles the whole shard order each epoch from
    ``(seed, epoch)``, with no buffer), ``handler`` is one of ``"raise"``, ``"warn"``,
    ``"skip"``, shards are split over ``torch.distributed`` ranks by default (the
    package refuses several nodes unless given a ``nodesplitter``), and there are no
    ``.decode()`` / ``.to_tuple()`` stages: :class:`gpuaug.DataLoader` decodes and
    augments the image field on the device, and the batch keeps the dict's keys.

    Args:
        urls: as for :class:`TarShards`.
        shardshuffle: shuffle the shard order every epoch.
        **kwargs: the other arguments of :class:`TarShards` (``seed``, ``keys``,
            ``handler``, ``rank``, ``world_size``).

    Example:
        >>> import io, os, tarfile, tempfile
        >>> import gpuaug
        >>> path = os.path.join(tempfile.mkdtemp(), "shard-0.tar")
        >>> with tarfile.open(path, "w") as tar:
        ...     for name, value in (("a.cls", b"3"), ("b.cls", b"5")):
        ...         info = tarfile.TarInfo(name); info.size = len(value)
        ...         tar.addfile(info, io.BytesIO(value))
        >>> [(s["__key__"], s["cls"]) for s in gpuaug.WebDataset(path, shardshuffle=True)]
        [('a', b'3'), ('b', b'5')]
    """

    def __init__(self, urls, *, shardshuffle: bool | int | None = False, **kwargs):
        if "shuffle_shards" in kwargs:
            raise TypeError("WebDataset takes shardshuffle= (TarShards calls it shuffle_shards=)")
        super().__init__(urls, shuffle_shards=bool(shardshuffle), **kwargs)


def _as_shard_list(urls) -> list:
    """Paths (str), path-likes and file objects of ``urls``, braces expanded."""
    if isinstance(urls, (str, os.PathLike)) or hasattr(urls, "read"):
        urls = [urls]
    shards = []
    for url in urls:
        if isinstance(url, str):
            shards += expand_braces(url)
        elif isinstance(url, os.PathLike):
            shards.append(os.fspath(url))      # a Path is taken literally, braces and all
        elif hasattr(url, "read"):
            shards.append(url)
        else:
            raise TypeError(f"a shard must be a path, a brace pattern or a binary file object, got {url!r}")
    return shards


def _has_fields(sample: dict[str, Any] | None) -> bool:
    """Whether a sample holds a field beyond ``__key__``, ``__url__`` and ``__index__``."""
    return sample is not None and len(sample) > 3


def _url_of(source, shard: int) -> str:
    if isinstance(source, str):
        return source
    return getattr(source, "name", None) or f"<{type(source).__name__} shard {shard}>"


def _open_tar(source) -> tarfile.TarFile:
    """Open a shard as a tar stream: sequential reads only, any compression, never loaded whole."""
    if isinstance(source, str):
        return tarfile.open(source, mode="r|*", tarinfo=_StrictTarInfo)
    if getattr(source, "seekable", lambda: False)():
        source.seek(0)                             # a file object is read from its start every epoch
    return tarfile.open(fileobj=source, mode="r|*", tarinfo=_StrictTarInfo)
