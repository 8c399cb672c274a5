"""The ``embedcore tune`` and ``embedcore inspect`` commands (registered by :mod:`embedcore.cli`).

``tune`` measures every index configuration on the user's corpus and recommends the cheapest one
that keeps a recall target (:func:`embedcore.tuning.tune`); ``--apply DIR`` builds and saves it.
``inspect`` prints the health report of an embedding space (:func:`embedcore.inspection.inspect`).
Both write their tables/JSON/PNG into ``--output-dir`` atomically. Errors surface through the
``embedcore`` entry point as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from embedcore.corpus import load_npy

_TEXTS, _OFFSETS = "doc_text", "doc_offsets"  # the document store of an index folder (as `index build`)


def _ints(value: str) -> tuple[int, ...]:
    """A comma-separated list of positive ints (argparse type)."""
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {value!r}")
    return out




def _template(path: str | None) -> str | None:
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"template {path}: no such file")
    return Path(path).read_text(encoding="utf-8")


def _model(name: str | None) -> str:
    from embedcore.corpus import demo_model_path

    if name is None:
        return str(demo_model_path())
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def _corpus(args: argparse.Namespace) -> tuple[Any, list[str] | None, str | None]:
    """(embeddings or texts, texts or None, model or None) from --embeddings / --input."""
    from embedcore.corpus import read_texts

    if args.embeddings is not None:
        return load_npy(args.embeddings, "--embeddings"), None, args.model and _model(args.model)
    texts = read_texts(args.input, args.field)
    return texts, texts, _model(args.model)


def _output_dir(path: str | None) -> Path | None:
    if path is None:
        return None
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"--output-dir {path}: no such folder")
    return folder


def _plots_available(wanted: bool) -> bool:
    """False (with a note) when PNG output was asked for but matplotlib is missing."""
    if not wanted:
        return False
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        print("note: matplotlib is not installed (pip install 'embedcore[bench]'): no PNG written")
        return False
    return True


def _apply(result: Any, corpus: np.ndarray, texts: list[str] | None, model: str | None, path: str) -> None:
    """Builds the recommended index over ``corpus`` and saves it as an index folder at ``path``."""
    from embedcore.corpus import pack_texts
    from embedcore.index import Index

    target = Path(path)
    if not target.resolve().parent.is_dir():
        raise FileNotFoundError(f"--apply {path}: the folder {target.resolve().parent} does not exist")
    if target.exists() and not (target / "manifest.json").is_file():
        raise ValueError(f"--apply {path} exists and is not an embedcore index; refusing to replace it")
    index = Index.from_tune(result, corpus)
    index.metadata.update({"model": model, "prompt_name": None})
    extra = dict(zip((_TEXTS, _OFFSETS), pack_texts(texts))) if texts is not None else {}
    index.save(target, extra)
    print(f"wrote {path}: {len(index)} vectors, {index!r}")


def _cmd_tune(args: argparse.Namespace) -> int:
    from embedcore.tuning import encode_texts, tune

    corpus, texts, model = _corpus(args)
    folder = _output_dir(args.output_dir)
    plot = folder is not None and _plots_available(not args.no_plot)
    if args.query_embeddings is not None:
        queries: Any = load_npy(args.query_embeddings, "--query-embeddings")
    elif args.queries is not None:
        from embedcore.corpus import read_texts

        queries = read_texts(args.queries, args.field)
        if model is None:
            raise ValueError("--queries are texts: pass --model (the model of --embeddings) to encode them")
    else:
        queries = None
    if texts is not None:
        corpus = encode_texts(texts, model, args.batch_size)  # once: tune and --apply share it
    result = tune(
        corpus,
        queries,
        k=args.k,
        target_recall=args.target_recall,
        confidence=args.confidence,
        metric=args.metric,
        model=model,
        truncate_dims=args.truncate_dims,
        multipliers=args.multipliers,
        n_queries=args.n_queries,
        latency_queries=args.latency_queries,
        generator=args.generator,
        query_template=_template(args.query_template),
        batch_size=args.batch_size,
        texts=texts,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(
            f"{result.n_corpus} corpus vectors x {result.dim}, {result.n_queries} {result.query_source} "
            f"queries; latency over {result.latency_queries} single queries at {result.threads} threads; "
            f"swept in {result.seconds:.1f} s\n"
        )
        print(result.table())
        print("\n" + result.summary())
    if folder is not None:
        for path in result.save(folder, plot=plot):
            print(f"wrote {path}")
    if args.apply is not None:
        _apply(result, corpus, texts, model, args.apply)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from embedcore.corpus import read_texts
    from embedcore.inspection import format_report, inspect, save_report
    from embedcore.tuning import encode_texts

    if args.input is not None:
        texts: list[str] | None = read_texts(args.input, args.field)
        embeddings = encode_texts(texts, _model(args.model), args.batch_size)
    else:
        embeddings = load_npy(args.embeddings, "--embeddings")
        texts = read_texts(args.texts, args.field) if args.texts is not None else None
    folder = _output_dir(args.output_dir)
    plot = folder is not None and _plots_available(not args.no_plot)
    report = inspect(
        embeddings,
        texts,
        k=args.k,
        duplicate_threshold=args.duplicate_threshold,
        n_clusters=args.clusters,
        generator=args.generator,
        cluster_template=_template(args.cluster_template),
    )
    print(json.dumps(report, indent=1, ensure_ascii=False) if args.json else format_report(report, texts))
    if folder is not None:
        for path in save_report(report, folder, plot=plot):
            print(f"wrote {path}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="FILE", help="corpus texts: .txt (one per line), .jsonl or .csv")
    src.add_argument("--embeddings", metavar="FILE.npy", help="precomputed float embeddings (n, dim)")
    p.add_argument("--field", default="text", help="JSONL key or CSV column holding the text (default: text)")
    p.add_argument("--model", help="model folder or name (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")
    p.add_argument("-k", type=int, default=10, help="neighbours: recall@k / k-occurrence (default: 10)")
    p.add_argument("--generator", metavar="PATH", help="a causal LM checkpoint folder on disk (optional)")
    p.add_argument("--output-dir", metavar="DIR", help="existing folder for the CSV/JSON/PNG outputs")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of the text report")


def add_commands(sub: Any) -> None:
    """Adds ``tune`` and ``inspect`` to the ``embedcore`` subcommands ``sub``."""
    from embedcore.index import METRICS
    from embedcore.tuning import DEFAULT_MULTIPLIERS

    p = sub.add_parser(
        "tune",
        help="measure every index configuration and recommend the cheapest that keeps a recall target",
        description="Sweeps float32, float16, int8 (asymmetric, symmetric), binary and binary + int8 "
        "rescoring (and Matryoshka dims) on your corpus and queries, measures recall@k against exact "
        "float32 search, bytes per vector, p50/p99 latency and build time, and recommends the cheapest "
        "configuration whose recall lower confidence bound reaches the target.",
    )
    _common(p)
    q = p.add_mutually_exclusive_group()
    q.add_argument("--query-embeddings", metavar="FILE.npy", help="query embeddings (nq, dim)")
    q.add_argument("--queries", metavar="FILE", help="query texts (.txt/.jsonl/.csv, --field)")
    p.add_argument("--target-recall", type=float, default=0.95, metavar="R", help="in (0, 1) (default: 0.95)")
    p.add_argument(
        "--confidence", type=float, default=0.95, help="level of the recall bounds (default: 0.95)"
    )
    p.add_argument("--metric", default="cos", choices=METRICS)
    p.add_argument(
        "--truncate-dims", type=_ints, default=None, metavar="D,D", help="Matryoshka dims to sweep"
    )
    p.add_argument("--multipliers", type=_ints, default=DEFAULT_MULTIPLIERS, metavar="M,M",
                   help="binary + int8 rescoring multipliers (default: 1,2,4,8,16)")  # fmt: skip
    p.add_argument(
        "--n-queries", type=int, default=1000, help="held-out or generated queries (default: 1000)"
    )
    p.add_argument("--latency-queries", type=int, default=200, help="queries timed one by one (default: 200)")
    p.add_argument("--query-template", metavar="FILE", help="prompt for --generator with {text}")
    p.add_argument(
        "--apply", metavar="DIR", help="build the recommended index and save it as an index folder"
    )
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("inspect", help="report anisotropy, effective rank, hubness, near-duplicates, ...")
    _common(p)
    p.add_argument(
        "--texts", metavar="FILE", help="texts of --embeddings' rows, shown with hubs and clusters"
    )
    p.add_argument("--duplicate-threshold", type=float, default=0.98, help="cosine of near-duplicates")
    p.add_argument(
        "--clusters", type=int, default=None, help="k-means clusters to name (0: none; default: 8)"
    )
    p.add_argument("--cluster-template", metavar="FILE", help="prompt for --generator with {texts}")
    p.set_defaults(func=_cmd_inspect)
