"""Multi-process encoding: one worker process per device, the model sent to each worker once.

The pool is sentence-transformers' design (``start_multi_process_pool``): a ``spawn`` context, an input
queue of ``(chunk_id, texts, options)`` and an output queue of ``(chunk_id, result)``. The Embedder is
pickled into each worker when the worker starts; afterwards only text chunks and float embeddings
cross the process boundary. Workers return floats; the parent quantizes once over all chunks, so int8
ranges are those of the whole input, exactly as in a single process.
"""

from __future__ import annotations

import math
import pickle
import queue
import traceback
from typing import Any

Pool = dict[str, Any]


def start(embedder: Any, target_devices: list[Any]) -> Pool:
    """Starts one daemon worker per entry of ``target_devices``.

    Args:
        embedder: The Embedder; moved to the CPU and put in shared memory before pickling.
        target_devices: Torch device strings, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu", "cpu"]``.

    Returns:
        ``{"input": Queue, "output": Queue, "processes": [Process, ...]}``.
    """
    import torch.multiprocessing as mp

    if not isinstance(target_devices, (list, tuple)) or not target_devices:
        raise ValueError(f"target_devices must be a non-empty list of devices, got {target_devices!r}")
    devices = [str(d) for d in target_devices]
    embedder.to("cpu")
    embedder.model.share_memory()
    ctx = mp.get_context("spawn")
    input_queue, output_queue = ctx.Queue(), ctx.Queue()
    processes = []
    for device in devices:
        p = ctx.Process(target=_worker, args=(device, embedder, input_queue, output_queue), daemon=True)
        p.start()
        processes.append(p)
    return {"input": input_queue, "output": output_queue, "processes": processes}


def stop(pool: Pool) -> None:
    """Terminates the workers of ``pool`` and closes its queues."""
    for p in pool["processes"]:
        p.terminate()
    for p in pool["processes"]:
        p.join()
        p.close()
    pool["input"].cancel_join_thread()
    pool["input"].close()
    pool["output"].close()


def check_pool(pool: Any) -> Pool:
    if not isinstance(pool, dict) or not {"input", "output", "processes"} <= set(pool):
        raise TypeError("pool must be the dict returned by Embedder.start_multi_process_pool()")
    if not pool["processes"]:
        raise ValueError("pool has no worker processes")
    return pool


def run(
    pool: Pool, texts: list[str], chunk_size: int | None, options: dict[str, Any], show_progress_bar: bool
) -> list[Any]:
    """Sends ``texts`` in chunks to the pool and returns the chunk results in input order.

    Args:
        pool: A started pool.
        texts: The (already prompt-resolved) texts.
        chunk_size: Texts per chunk; None picks ``ceil(n / workers / 10)`` capped at 5000.
        options: Keyword arguments of ``Embedder._embed`` (the same for every chunk).
        show_progress_bar: A tqdm bar over the chunks.

    Returns:
        One result per chunk: a (n_chunk, D) float CPU tensor or a list of per-text results.
    """
    from tqdm.auto import tqdm

    pool = check_pool(pool)
    if chunk_size is None:
        chunk_size = max(1, min(math.ceil(len(texts) / len(pool["processes"]) / 10), 5000))
    starts = range(0, len(texts), chunk_size)
    for chunk_id, start_index in enumerate(starts):
        pool["input"].put((chunk_id, texts[start_index : start_index + chunk_size], options))
    outputs: list[Any] = [None] * len(starts)
    for _ in tqdm(starts, desc="Chunks", disable=not show_progress_bar):
        chunk_id, result = _next_result(pool)
        outputs[chunk_id] = result
    for result in outputs:
        if isinstance(result, Exception):
            raise result
    return outputs


def _next_result(pool: Pool, poll_interval: float = 1.0) -> tuple[int, Any]:
    """The next (chunk_id, result); raises instead of waiting forever when a worker died."""
    while True:
        try:
            return pool["output"].get(timeout=poll_interval)
        except queue.Empty:
            pass
        dead = [p for p in pool["processes"] if not p.is_alive()]
        if dead:
            details = ", ".join(f"pid {p.pid} (exit code {p.exitcode})" for p in dead)
            raise RuntimeError(
                f"{len(dead)} encode worker(s) died: {details}; stop the pool and start a new one"
            )


def _worker(device: str, embedder: Any, input_queue: Any, output_queue: Any) -> None:
    embedder.to(device)
    while True:
        chunk_id, texts, options = input_queue.get()
        try:
            result = embedder._embed(texts, to_cpu=True, show_progress_bar=False, **options)
        except Exception as exc:
            try:  # the queue pickles in a feeder thread: an exception that cannot travel would be lost
                pickle.loads(pickle.dumps(exc))
            except Exception:
                exc = RuntimeError("".join(traceback.format_exception(exc)))
            output_queue.put((chunk_id, exc))
        else:
            output_queue.put((chunk_id, result))
