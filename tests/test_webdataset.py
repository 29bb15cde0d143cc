"""gpuaug.webdataset.TarShards: brace expansion, grouping, splitting, shuffling, errors, the loader."""
from __future__ import annotations

import gzip
import io
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
from conftest import encode, photo_like
from torch.utils.data import DataLoader as TorchDataLoader

import gpuaug
from gpuaug import transforms as T
from gpuaug.webdataset import TarShardError, TarShards, decode_label, expand_braces, split_name

SHARDS, PER_SHARD = 4, 5
ALL_LABELS = list(range(SHARDS * PER_SHARD))


def write_tar(path, members):
    """A tar at ``path`` holding ``members``: (name, bytes) pairs, or (name, None) for a directory."""
    with tarfile.open(path, "w") as tar:
        for name, value in members:
            info = tarfile.TarInfo(name)
            if value is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return path


@pytest.fixture
def shard_pattern(tmp_path):
    """4 shards x 5 samples of ``key.jpg`` (a real JPEG) + ``key.cls``; label = 5 * shard + position."""
    for s in range(SHARDS):
        members = []
        for k in range(PER_SHARD):
            label = PER_SHARD * s + k
            jpeg = encode(photo_like(20 + k, 24 + s, seed=label), quality=90)
            members += [(f"s{s}/img{label:03d}.jpg", jpeg), (f"s{s}/img{label:03d}.cls", str(label).encode())]
        write_tar(tmp_path / f"shard-{s:06d}.tar", members)
    return str(tmp_path / "shard-{000000..000003}.tar")


def labels_of(samples):
    return [decode_label(s["cls"]) for s in samples]


# -- names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, expected", [
    ("a.tar", ["a.tar"]),
    ("s-{0..2}.tar", ["s-0.tar", "s-1.tar", "s-2.tar"]),
    ("s-{000008..000011}.tar", ["s-000008.tar", "s-000009.tar", "s-000010.tar", "s-000011.tar"]),
    ("s-{3..1}.tar", ["s-3.tar", "s-2.tar", "s-1.tar"]),
    ("{a,b,c}.tar", ["a.tar", "b.tar", "c.tar"]),
    ("{train,val}/s-{0..1}.tar", ["train/s-0.tar", "train/s-1.tar", "val/s-0.tar", "val/s-1.tar"]),
    ("{x,y{1..2}}.tar", ["x.tar", "y1.tar", "y2.tar"]),
    ("{a,}b", ["ab", "b"]),
    ("lit{x}.tar", ["lit{x}.tar"]),
])
def test_expand_braces(pattern, expected):
    assert expand_braces(pattern) == expected


@pytest.mark.parametrize("bad", ["s-{0..2.tar", "s-0..2}.tar"])
def test_expand_braces_unmatched(bad):
    with pytest.raises(ValueError, match="unmatched"):
        expand_braces(bad)


def test_split_name():
    assert split_name("n01440764_10026.JPEG") == ("n01440764_10026", "jpeg")
    assert split_name("a/b.seg.png") == ("a/b", "seg.png")
    assert split_name("dir.v2/x.jpg") == ("dir.v2/x", "jpg")      # dots in directories are not extensions
    assert split_name("README") is None and split_name("a/.hidden") is None and split_name("a/b.") is None


def test_decode_label():
    assert decode_label(b" 7\n") == 7 and decode_label("3") == 3 and decode_label(5) == 5


# -- reading --------------------------------------------------------------------------------

def test_grouping_fields_keys_and_directories(tmp_path):
    path = write_tar(tmp_path / "g.tar", [
        ("data", None),                                         # directories are skipped
        ("data/n01440764_10026.JPEG", b"jpeg0"),
        ("data/n01440764_10026.seg.png", b"png0"),
        ("data/n01440764_10026.cls", b"3"),
        ("data/README", b"no extension: not a field"),
        ("data/sub/b.jpg", b"jpeg1"),
        ("data/sub/b.json", b"{}"),
        ("c.txt", b"only text"),
    ])
    samples = list(TarShards(path))
    assert [s["__key__"] for s in samples] == ["data/n01440764_10026", "data/sub/b", "c"]
    first = samples[0]
    assert first == {"__key__": "data/n01440764_10026", "__url__": str(path), "__index__": (0, 0),
                     "jpeg": b"jpeg0", "seg.png": b"png0", "cls": b"3"}
    assert [s["__index__"] for s in samples] == [(0, 0), (0, 1), (0, 2)]
    # keys= keeps some fields and drops samples without any; positions still count every sample.
    kept = list(TarShards(path, keys=("JPG", "jpeg")))
    assert [(s["__key__"], s["__index__"], sorted(k for k in s if not k.startswith("__"))) for s in kept] == [
        ("data/n01440764_10026", (0, 0), ["jpeg"]), ("data/sub/b", (0, 1), ["jpg"])]


def test_pattern_list_path_fileobj_and_gzip_inputs(shard_pattern, tmp_path):
    paths = expand_braces(shard_pattern)
    from_pattern = labels_of(TarShards(shard_pattern))
    assert from_pattern == ALL_LABELS
    assert labels_of(TarShards([paths[0], tmp_path / "shard-000001.tar"])) == ALL_LABELS[:10]
    gz = tmp_path / "shard.tar.gz"
    gz.write_bytes(gzip.compress(Path(paths[2]).read_bytes()))
    assert labels_of(TarShards(gz)) == ALL_LABELS[10:15]               # pathlib.Path, compressed
    stream = io.BytesIO(Path(paths[3]).read_bytes())
    shards = TarShards(stream)
    assert labels_of(shards) == labels_of(shards) == ALL_LABELS[15:]   # a file object, read again each epoch
    with pytest.raises(ValueError, match="no shards"):
        TarShards([])
    with pytest.raises(ValueError, match="handler"):
        TarShards(paths, handler="ignore")


def test_values_are_raw_bytes_and_index_identifies_samples(shard_pattern):
    samples = list(TarShards(shard_pattern))
    assert all(isinstance(s["jpg"], bytes) and s["jpg"][:2] == b"\xff\xd8" for s in samples)
    indices = [s["__index__"] for s in samples]
    assert len(set(indices)) == len(indices) == SHARDS * PER_SHARD
    assert all(decode_label(s["cls"]) == PER_SHARD * shard + pos for s, (shard, pos) in zip(samples, indices))
    assert all(s["__url__"] == expand_braces(shard_pattern)[s["__index__"][0]] for s in samples)


# -- splitting ------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_torch_dataloader_reads_every_sample_once(shard_pattern, workers):
    shards = TarShards(shard_pattern, shuffle_shards=True, seed=3)
    loader = TorchDataLoader(shards, batch_size=None, num_workers=workers)
    for epoch in range(2):
        shards.set_epoch(epoch)
        assert sorted(labels_of(loader)) == ALL_LABELS


@pytest.mark.parametrize("workers", [0, 2])
def test_explicit_ranks_get_disjoint_shards_covering_all(shard_pattern, workers):
    per_rank = []
    for rank in range(2):
        shards = TarShards(shard_pattern, rank=rank, world_size=2, shuffle_shards=True, seed=1)
        shards.set_epoch(5)
        per_rank.append(list(TorchDataLoader(shards, batch_size=None, num_workers=workers)))
    urls = [{s["__url__"] for s in samples} for samples in per_rank]
    assert len(urls[0]) == len(urls[1]) == 2 and not urls[0] & urls[1]
    assert sorted(labels_of(per_rank[0] + per_rank[1])) == ALL_LABELS


def test_uneven_split_and_a_rank_without_shards(shard_pattern):
    counts = [len(list(TarShards(shard_pattern, rank=r, world_size=3))) for r in range(3)]
    assert counts == [2 * PER_SHARD, PER_SHARD, PER_SHARD]          # 4 shards over 3 ranks: rank 0 gets one more
    idle = TarShards(shard_pattern, rank=5, world_size=6)
    with pytest.warns(UserWarning, match="rank 5 worker 0 has no shard"):
        assert list(idle) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")                               # warned once only
        assert list(idle) == []
    with pytest.raises(ValueError, match="both"):
        TarShards(shard_pattern, rank=0)


def test_shard_shuffle_is_deterministic_per_seed_and_epoch(shard_pattern):
    def order(seed, epoch):
        shards = TarShards(shard_pattern, shuffle_shards=True, seed=seed)
        shards.set_epoch(epoch)
        return [s["__index__"][0] for s in shards if s["__index__"][1] == 0]

    orders = [order(0, epoch) for epoch in range(6)]
    assert orders == [order(0, epoch) for epoch in range(6)]       # same (seed, epoch), same order
    assert all(sorted(o) == list(range(SHARDS)) for o in orders)
    assert len({tuple(o) for o in orders}) > 1                     # epochs differ
    assert [order(1, e) for e in range(6)] != orders               # seeds differ
    assert TarShards(shard_pattern).shard_order(epoch=3) == list(range(SHARDS))   # no shuffle: file order


# -- errors ---------------------------------------------------------------------------------

@pytest.fixture
def truncated(shard_pattern, tmp_path):
    """Shard 1 cut in the middle of its third image."""
    path = expand_braces(shard_pattern)[1]
    data = Path(path).read_bytes()
    cut = data.index(b"img007.jpg") + 512 + 100                   # header of sample 7's image, then some of it
    Path(path).write_bytes(data[:cut])
    return shard_pattern, path


def test_truncated_shard_raises_naming_shard_and_member(truncated):
    pattern, path = truncated
    with pytest.raises(TarShardError, match=rf"shard 1 \({path}\), member 's1/img007.jpg'"):
        list(TarShards(pattern))


def test_truncated_shard_warn_and_skip_continue(truncated):
    pattern, _ = truncated
    expected = [v for v in ALL_LABELS if not 7 <= v < 10]           # samples 5 and 6 were read before the cut
    with pytest.warns(UserWarning, match="cannot read shard 1.*next shard"):
        assert labels_of(TarShards(pattern, handler="warn")) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert labels_of(TarShards(pattern, handler="skip")) == expected


@pytest.mark.parametrize("cut", [1024, 1024 + 100, 1536 + 100])
def test_shard_cut_anywhere_before_its_end_block_is_an_error(tmp_path, cut):
    # Stream-mode tarfile alone would end quietly at a cut between members or in a header.
    path = write_tar(tmp_path / "t.tar", [("a.cls", b"1"), ("b.cls", b"2")])   # a.cls: blocks 0-1, b.cls: 2-3
    with open(path, "r+b") as f:
        f.truncate(cut)
    with pytest.raises(TarShardError, match=r"cannot read shard 0 .*(truncated|unexpected end)"):
        list(TarShards(path))


def test_missing_shard(tmp_path):
    with pytest.raises(TarShardError, match="shard 0"):
        list(TarShards(tmp_path / "nope.tar"))


# -- through gpuaug.DataLoader -----------------------------------------------------------------

def test_gpuaug_dataloader_reads_tar_shards(shard_pattern):
    transform = T.Compose([T.RandomResizedCrop(12), T.RandomHorizontalFlip()])

    def run(workers):
        loader = gpuaug.DataLoader(TarShards(shard_pattern, shuffle_shards=True), batch_size=4, num_workers=workers,
                                   image_key="jpg", device="cpu", transform=transform, seed=5)
        seen = {}
        for batch in loader:
            assert batch["jpg"].shape[0] <= 4 and batch["jpg"].shape[1:] == (3, 12, 12)
            shard, position = batch["__index__"]
            assert loader.indices.tolist() == ((shard << 32) | position).tolist()   # identity = (shard, position)
            for image, label in zip(batch["jpg"], batch["cls"]):
                assert decode_label(label) not in seen
                seen[decode_label(label)] = image
        return seen

    alone, split = run(0), run(2)
    assert sorted(alone) == sorted(split) == ALL_LABELS
    # A sample's augmentation depends on its (shard, position), not on which worker read it.
    assert all(torch.equal(alone[k], split[k]) for k in ALL_LABELS)


def test_rank_from_torch_distributed_reaches_spawned_workers(shard_pattern, monkeypatch):
    # As under torchrun: the main process knows its rank, "spawn" workers never join the group.
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
    shards = TarShards(shard_pattern)
    assert {s["__index__"][0] for s in shards} == {1, 3}
    loader = TorchDataLoader(shards, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    assert {s["__index__"][0] for s in loader} == {1, 3}


def test_loader_finds_the_image_field_by_extension(shard_pattern):
    """No image_key: the ``jpg`` member is the image (not a KeyError from a worker)."""
    loader = gpuaug.DataLoader(TarShards(shard_pattern), batch_size=5, num_workers=2, device="cpu",
                               transform=T.Compose([T.CenterCrop(12)]), seed=0)
    labels = []
    for batch in loader:
        assert batch["jpg"].shape[1:] == (3, 12, 12) and batch["jpg"].dtype == torch.uint8
        labels += [decode_label(v) for v in batch["cls"]]
    assert sorted(labels) == ALL_LABELS


@pytest.mark.parametrize("workers", [0, 2])
def test_sample_without_an_image_field_is_a_named_bad_sample(tmp_path, workers):
    jpeg = encode(photo_like(20, 24, seed=1), quality=90)
    members = [("a/x0.jpg", jpeg), ("a/x0.cls", b"0"), ("a/x1.txt", b"caption only"), ("a/x1.cls", b"1"),
               ("a/x2.jpg", jpeg), ("a/x2.cls", b"2")]
    path = str(write_tar(tmp_path / "one.tar", members))

    def loader(on_error, image_key=None):
        return gpuaug.DataLoader(TarShards(path), batch_size=3, num_workers=workers, device="cpu",
                                 transform=T.Compose([T.CenterCrop(8)]), on_error=on_error, image_key=image_key)

    with pytest.raises(gpuaug.BadSampleError) as caught:
        list(loader("raise"))
    message = str(caught.value)
    assert f"{path}:a/x1" in message                                  # names the sample: shard and key
    assert "no image field 'image'" in message and "'cls', 'txt'" in message and "jpg" in message
    assert caught.value.sample.index == 1                             # (shard 0, position 1)

    skipping = loader("skip")
    with pytest.warns(UserWarning):
        batches = list(skipping)
    assert [decode_label(v) for v in batches[0]["cls"]] == [0, 2] and batches[0]["jpg"].shape == (2, 3, 8, 8)
    assert [b.path for b in skipping.bad_samples] == [f"{path}:a/x1"]

    with pytest.raises(gpuaug.BadSampleError, match="no image field 'png'.*'cls', 'jpg'"):
        list(loader("raise", image_key="png"))                        # a wrong key: each sample says what it has


def test_mixup_reads_cls_bytes_as_classes(shard_pattern):
    transform = T.Compose([T.CenterCrop(12), T.ToDtype(torch.float32, scale=True), T.MixUp(alpha=1.0, num_classes=20)])
    loader = gpuaug.DataLoader(TarShards(shard_pattern), batch_size=5, device="cpu", transform=transform, seed=3)
    for batch in loader:
        soft = batch["cls"]
        assert soft.shape == (5, 20) and torch.allclose(soft.sum(1), torch.ones(5), atol=1e-6)
        shard, position = batch["__index__"]
        own = (PER_SHARD * shard + position).tolist()          # the fixture's label of each sample
        # Each row's weight sits on its own class and its partner's: nowhere else.
        assert all(soft[b, own[b]] > 0 and (soft[b] > 0).sum() <= 2 for b in range(5))
