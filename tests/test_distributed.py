"""embedcore.distributed on a local Ray (2 CPUs, no dashboard), started once for this module.

Actor starts dominate the time (a worker process importing torch), so the inputs are small and
each test starts as few actors as it can.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import embedcore as ec  # noqa: E402
from embedcore.distributed import load_embeddings  # noqa: E402
from embedcore.distributed.sharded_index import ShardedIndex  # noqa: E402
from embedcore.persist import current_folder as _live  # noqa: E402  (a saved folder's live version)

# The fake embedders below travel to the Ray workers by value (this module is not importable there).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_path():
    from embedcore.corpus import demo_model_path

    return str(demo_model_path())


@pytest.fixture(scope="module")
def texts():
    from embedcore.corpus import load_wiki_summaries

    rows = load_wiki_summaries(90)
    # Odd lengths (1 to ~30 words) so length-sorting inside the blocks matters.
    return [" ".join(r["extract"].split()[: 1 + (i * 7) % 30]) for i, r in enumerate(rows)]


# ---------------------------------------------------------------------------- sharded index


def _heavy_ties(rng, n, dim):
    x = rng.integers(-2, 3, (n, dim)).astype(np.float32)  # few distinct values: many equal scores
    x[np.abs(x).sum(1) == 0, 0] = 1
    return x


CONFIGS = {
    "float32": dict(precision="float32"),
    "int8-asymmetric": dict(precision="int8"),
    "binary-int8-rescore": dict(precision="binary", rescore="int8", rescore_multiplier=3),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_sharded_index_equals_one_index(config, tmp_path):
    rng = np.random.default_rng(7)
    emb, queries = _heavy_ties(rng, 203, 37), _heavy_ties(rng, 9, 37)
    index = ec.Index(37, **CONFIGS[config])
    index.add(emb, ids=np.arange(203) * 3 + 5)  # ids unlike storage rows
    for shards in (1, 2, 3):
        with ShardedIndex.from_index(index, shards=shards) as sharded:
            assert len(sharded) == 203 and sharded.shards == shards
            for k in (1, 10, 203 if shards == 3 else 40):
                want = index.search(queries, k)
                got = sharded.search(queries, k)
                np.testing.assert_array_equal(got[1], want[1], err_msg=f"ids, {shards} shards, k={k}")
                np.testing.assert_array_equal(got[0], want[0], err_msg=f"scores, {shards} shards, k={k}")
                assert got[0].dtype == want[0].dtype and got[1].dtype == want[1].dtype
            if index.rescore is not None:
                want = index.search(queries, 5, rescore_multiplier=1)
                np.testing.assert_array_equal(sharded.search(queries, 5, rescore_multiplier=1)[1], want[1])
            if shards == 2:
                sharded.save(tmp_path / "saved")
    # A saved sharded index loads (verified) and answers the same; a tensor query gives tensors.
    with ShardedIndex.load(tmp_path / "saved") as loaded:
        import torch

        _, ids = loaded.search(torch.from_numpy(queries), 10)
        assert isinstance(ids, torch.Tensor)
        np.testing.assert_array_equal(ids.numpy(), index.search(queries, 10)[1])


def test_sharded_index_build_errors_and_dead_shards(tmp_path):
    rng = np.random.default_rng(3)
    emb, queries = _heavy_ties(rng, 50, 16), _heavy_ties(rng, 4, 16)
    index = ec.Index(16, precision="int8")
    index.add(emb)  # ranges from all 50 rows, as build() computes them
    with pytest.raises(ValueError, match="shards"):
        ShardedIndex.from_index(index, shards=51)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a sharded index"):
        ShardedIndex.from_index(index, shards=2, path=tmp_path / "user")
    assert (tmp_path / "user" / "notes.txt").read_text() == "mine"

    sharded = ShardedIndex.build(emb, shards=2, path=tmp_path / "idx", precision="int8", max_restarts=1)
    try:
        want = index.search(queries, 7)
        np.testing.assert_array_equal(sharded.search(queries, 7)[1], want[1])
        with pytest.raises(ValueError, match="k must be"):
            sharded.search(queries, 51)
        with pytest.raises(ValueError, match="dim"):
            sharded.search(queries[:, :5], 3)
        # A killed actor is restarted and the query answered.
        ray.kill(sharded._actors[1], no_restart=False)
        np.testing.assert_array_equal(sharded.search(queries, 7)[1], want[1])
        # A shard that cannot come back makes the search fail, naming it: never partial results.
        ray.kill(sharded._actors[1], no_restart=True)
        with pytest.raises(RuntimeError, match="shard 1"):
            sharded.search(queries, 7)
    finally:
        sharded.close()
    # A tampered shard is refused on load.
    codes = _live(tmp_path / "idx" / "shard_00000") / "codes.npy"
    data = bytearray(codes.read_bytes())
    data[-1] ^= 1
    codes.write_bytes(bytes(data))
    with pytest.raises((RuntimeError, ValueError), match=r"SHA-256|checksum|shard 0"):
        ShardedIndex.load(tmp_path / "idx").close()


# ---------------------------------------------------------------------------- encode


def test_encode_equals_single_process(model_path, texts):
    ref = ec.Embedder.from_pretrained(model_path).encode(texts, batch_size=8, normalize_embeddings=True)
    got = ec.distributed.encode(
        texts, model_path, concurrency=2, block_rows=40, batch_size=8, normalize_embeddings=True
    )
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)  # row i is text i: input order kept


class _HashEmbedder:
    """A deterministic stand-in model: 8 floats from each text's SHA-256. Exits its worker process
    on its first call if ``kill_marker`` does not exist yet (creating it), like a killed actor; logs
    every text it encodes to ``log``."""

    def __init__(self, kill_marker, log):
        self.kill_marker, self.log = kill_marker, log

    def encode(self, texts, **options):
        if self.kill_marker and not os.path.exists(self.kill_marker):
            open(self.kill_marker, "w").close()
            os._exit(1)
        with open(self.log, "a", encoding="utf-8") as f:
            f.writelines(t + "\n" for t in texts)
        return expected_hash_embeddings(texts)


def expected_hash_embeddings(texts):
    return np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], np.uint8) for t in texts]).astype(
        np.float32
    )


def test_encode_int8_ranges_come_from_the_whole_output(tmp_path):
    from embedcore.ops.quantize import quantization_ranges

    # Hash floats differ per row, so ranges taken per block or per shard would change the codes.
    texts = [f"row {i}" for i in range(90)]
    floats = expected_hash_embeddings(texts)
    log = str(tmp_path / "log")
    out = ec.distributed.encode(
        texts,
        lambda: _HashEmbedder(None, log),
        output=tmp_path / "out",
        rows_per_shard=40,
        block_rows=16,
        concurrency=1,
        precision="uint8",
    )
    assert sorted(os.listdir(out)) == ["manifest", "shard_00000", "shard_00001", "shard_00002"]
    np.testing.assert_array_equal(load_embeddings(out), ec.quantize(floats, "uint8"))
    calib = floats[::7] * 0.5
    codes = ec.distributed.encode(
        texts,
        lambda: _HashEmbedder(None, log),
        block_rows=16,
        precision="int8",
        calibration_embeddings=calib,
        concurrency=1,
    )
    np.testing.assert_array_equal(codes, ec.quantize(floats, "int8", ranges=quantization_ranges(calib)))


def test_encode_survives_a_killed_actor_and_resumes(tmp_path):
    texts = [f"text number {i}" for i in range(100)]
    marker, log = str(tmp_path / "killed"), str(tmp_path / "log")
    out = tmp_path / "out"
    ec.distributed.encode(
        texts, lambda: _HashEmbedder(marker, log), output=out, rows_per_shard=40, block_rows=10
    )
    assert os.path.exists(marker)  # an actor died mid-job
    np.testing.assert_array_equal(load_embeddings(out), expected_hash_embeddings(texts))

    # Corrupt one shard and drop the job's manifest: a restart recomputes that shard only.
    stat = {i: os.stat(_live(out / f"shard_0000{i}") / "embeddings.npy") for i in (0, 2)}
    bad = _live(out / "shard_00001") / "embeddings.npy"
    data = bytearray(bad.read_bytes())
    data[-3] ^= 0xFF
    bad.write_bytes(bytes(data))
    shutil.rmtree(out / "manifest")
    os.unlink(log)
    ec.distributed.encode(
        texts, lambda: _HashEmbedder(None, log), output=out, rows_per_shard=40, block_rows=10
    )
    with open(log, encoding="utf-8") as f:
        assert sorted(f.read().splitlines()) == sorted(texts[40:80])
    for i, before in stat.items():
        after = os.stat(_live(out / f"shard_0000{i}") / "embeddings.npy")
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    np.testing.assert_array_equal(load_embeddings(out), expected_hash_embeddings(texts))
    # The same folder with another job's settings is refused, not overwritten.
    with pytest.raises(ValueError, match="another encode job"):
        ec.distributed.encode(texts, lambda: _HashEmbedder(None, log), output=out, rows_per_shard=30)


def test_encode_sources_ray_dataset_and_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"document {i} " + "x" * (i % 5) for i in range(30)]
    want = expected_hash_embeddings(texts)
    log = str(tmp_path / "log")
    embedder = lambda: _HashEmbedder(None, log)
    # A Dataset with an id column: the ids fix the order, whatever order the rows come in.
    ds = ray.data.from_items([{"id": i, "text": texts[i]} for i in reversed(range(30))])
    np.testing.assert_array_equal(ec.distributed.encode(ds, embedder, concurrency=1, block_rows=8), want)
    # A Dataset without ids is numbered in its own order; a Parquet file and a JSONL file by line.
    pq.write_table(pa.table({"body": texts[:12]}), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts[12:]))
    files = [tmp_path / "a.parquet", tmp_path / "b.jsonl"]
    got = ec.distributed.encode(files, embedder, field="body", concurrency=1, block_rows=8)
    np.testing.assert_array_equal(got, want)
    ds = ray.data.from_items([{"text": t} for t in texts])
    np.testing.assert_array_equal(ec.distributed.encode(ds, embedder, concurrency=1, block_rows=8), want)


def test_encode_rejects_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="source"):
        ec.distributed.encode([1, 2], "m")
    with pytest.raises(TypeError, match="convert_to_tensor"):
        ec.distributed.encode(["a"], "m", convert_to_tensor=True)
    with pytest.raises(ValueError, match="concurrency"):
        ec.distributed.encode(["a"], "m", concurrency=0)
    with pytest.raises(ValueError, match="precision"):
        ec.distributed.encode(["a"], "m", precision="int4")
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match=r"mine\.txt"):
        ec.distributed.encode(["a"], "m", output=tmp_path)


# ---------------------------------------------------------------------------- command line


def test_cli_index_build_and_search_with_ray(tmp_path, capsys):
    from embedcore.cli import main

    rng = np.random.default_rng(5)
    emb, queries = _heavy_ties(rng, 60, 24), _heavy_ties(rng, 3, 24)
    np.save(tmp_path / "emb.npy", emb)
    np.save(tmp_path / "q.npy", queries)
    out = tmp_path / "idx"
    rc = main(
        [
            "index",
            "build",
            "--ray",
            "--shards",
            "2",
            "--embeddings",
            str(tmp_path / "emb.npy"),
            "--output",
            str(out),
            "--precision",
            "binary",
            "--rescore",
            "int8",
        ]
    )
    assert rc == 0
    capsys.readouterr()
    assert (
        main(
            [
                "search",
                "--ray",
                "--index",
                str(out),
                "--query-embeddings",
                str(tmp_path / "q.npy"),
                "-k",
                "5",
                "--json",
            ]
        )
        == 0
    )
    got = [[hit["id"] for hit in item["results"]] for item in json.loads(capsys.readouterr().out)]
    index = ec.Index(24, precision="binary", rescore="int8")
    index.add(emb)
    assert got == index.search(queries, 5)[1].tolist()
    assert (
        main(
            [
                "index",
                "build",
                "--shards",
                "2",
                "--embeddings",
                str(tmp_path / "emb.npy"),
                "--output",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "--shards needs --ray" in capsys.readouterr().err
