"""embedcore.peers: tier names -> Embedder arguments, fidelity statistics, the export cache, and the
sentence-transformers peers with an inference engine inside ``SentenceTransformer.encode``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedcore import peers
from embedcore._spec import FIDELITIES

from corpus import load_summaries, minilm_path


@pytest.mark.parametrize(
    "bad,error", [("fast", ValueError), ("EXACT", ValueError), (8, TypeError), (None, TypeError)]
)
def test_bad_tier_names_the_argument(bad, error):
    with pytest.raises(error, match="fidelity"):
        peers.check_fidelity(bad)


def test_every_peer_has_one_tier():
    assert set(peers.TIER_OF.values()) == set(FIDELITIES)
    assert sum(len(p) for p in peers.PEERS.values()) == len(peers.TIER_OF)


def test_cosine_stats_against_numpy(rng):
    ref = rng.standard_normal((37, 19)).astype(np.float32)
    ours = ref + 0.01 * rng.standard_normal(ref.shape).astype(np.float32)
    ours[5] = ref[5]
    stats = peers.cosine_stats(ours, ref)
    a64, b64 = ours.astype(float), ref.astype(float)
    cos = np.array([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(a64, b64)])
    assert stats["mean_cosine"] == pytest.approx(cos.mean(), abs=1e-12)
    assert stats["min_cosine"] == pytest.approx(cos.min(), abs=1e-12)
    assert stats["max_abs_diff"] == pytest.approx(np.abs(ours - ref).max(), rel=1e-6)
    same = peers.cosine_stats(ref, ref)
    assert same["max_abs_diff"] == 0 and same["min_cosine"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reference has shape"):
        peers.cosine_stats(ours, ref[:-1])


def test_cached_export_is_made_once_and_verified(tmp_path):
    calls = []

    def make(out):
        calls.append(out)
        (out / "weights.bin").write_bytes(b"abc" * 100)

    first = peers.cached_export(tmp_path, "engine", make)
    again = peers.cached_export(tmp_path, "engine", make)
    assert first == again == tmp_path / "engine" and len(calls) == 1
    manifest = json.loads((first / "manifest.json").read_text())
    assert set(manifest["files"]) == {"weights.bin"}
    # A damaged file fails verification: the export is made again, the old folder kept aside.
    (first / "weights.bin").write_bytes(b"xyz")
    peers.cached_export(tmp_path, "engine", make)
    assert len(calls) == 2 and (first / "weights.bin").read_bytes() == b"abc" * 100
    assert [p.name.startswith("engine.broken-") for p in tmp_path.iterdir()].count(True) == 1


def test_failed_export_leaves_nothing_behind(tmp_path):
    def make(out):
        (out / "half.bin").write_bytes(b"1")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        peers.cached_export(tmp_path, "engine", make)
    assert list(tmp_path.iterdir()) == []


def test_load_peer_rejects_bad_arguments(tmp_path):
    pytest.importorskip("sentence_transformers")
    with pytest.raises(ValueError, match="peer"):
        peers.load_peer("st-tensorrt", "unused", 1, tmp_path)
    with pytest.raises(ValueError, match="threads"):
        peers.load_peer("st-onnx", "unused", 0, tmp_path)
    with pytest.raises(ValueError, match="calibration_texts"):
        peers.load_peer("st-openvino-qint8", "unused", 1, tmp_path)


@pytest.fixture(scope="module")
def st_reference():
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    texts = [r["extract"] for r in load_summaries(6)] + ["a short query", "x"]
    model = SentenceTransformer(minilm_path(), device="cpu")
    return texts, model.encode(texts, batch_size=3), model


def test_engine_swap_keeps_sentence_transformers_output(st_reference):
    """The engine slot: a run() that calls the original transformer gives ST's embeddings exactly."""
    import torch
    from sentence_transformers import SentenceTransformer

    texts, reference, _ = st_reference
    original = SentenceTransformer(minilm_path(), device="cpu")
    inner = peers._hf_model(original)
    seen = []

    def run(feed):
        seen.append(feed["input_ids"].shape)
        with torch.no_grad():
            out = inner(**{k: torch.from_numpy(v) for k, v in feed.items()})
        return out.last_hidden_state.numpy()

    swapped = peers._swap_engine(SentenceTransformer(minilm_path(), device="cpu"), run)
    out = swapped.encode(texts, batch_size=3)
    assert seen and np.abs(out - reference).max() <= 1e-6
    assert swapped.encode("x").shape == (reference.shape[1],)


@pytest.mark.parametrize(
    "peer,engine,export",
    [
        ("st-onnx", "onnxruntime", "onnx/model.onnx"),
        ("st-openvino-f32", "openvino", "openvino/openvino_model.bin"),
    ],
)
def test_f32_engine_peers_are_exact_and_their_export_is_reused(st_reference, tmp_path, peer, engine, export):
    pytest.importorskip(engine)
    pytest.importorskip("onnx")
    texts, reference, _ = st_reference
    model = peers.load_peer(peer, minilm_path(), 1, tmp_path)
    stats = peers.cosine_stats(model.encode(texts, batch_size=3), reference)
    assert stats["max_abs_diff"] <= 1e-5
    assert np.abs(model.encode(texts[-1]) - reference[-1]).max() <= 1e-5  # one text, other shape
    (folder,) = (tmp_path / "st-backends").iterdir()
    stamp = (folder / export).stat().st_mtime_ns
    peers.load_peer(peer, minilm_path(), 2, tmp_path)
    assert (folder / export).stat().st_mtime_ns == stamp
