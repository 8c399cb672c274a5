"""The ``--ray`` paths of the ``embedcore`` command: encode, index build and search on Ray.

:func:`add_ray_arguments` adds ``--ray`` (and its options) to the ``encode``, ``index build`` and
``search`` subcommands of :mod:`embedcore.cli`'s parser and routes a command given ``--ray`` here;
without ``--ray`` the command runs as before. The command's own helpers (model path, reading a
``.npy``, encoding with a progress report) are passed in, so this module never imports the CLI.

* ``embedcore encode --ray --input F --output X`` encodes with :func:`embedcore.distributed.encode`:
  ``X.npy`` gets the array, any other ``X`` is a folder of resumable shards.
* ``embedcore index build --ray --shards S ...`` builds the index as usual (encoding on Ray) and
  writes a sharded index folder (:class:`~embedcore.distributed.ShardedIndex`).
* ``embedcore search --ray --index DIR ...`` serves that folder with one actor per shard.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedcore.distributed._ray import MissingRayError


def _ray_options(p: argparse.ArgumentParser, shards: bool, encodes: bool) -> None:
    g = p.add_argument_group("Ray (embedcore[ray])")
    g.add_argument("--ray", action="store_true", help="run on Ray (a local cluster unless --address)")
    g.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)")
    if shards:
        g.add_argument("--shards", type=int, default=None, help="shards of the index (with --ray)")
    if encodes:
        g.add_argument("--concurrency", type=int, default=2, help="encoder actors (default: 2)")
        g.add_argument(
            "--rows-per-shard", type=int, default=100_000, help="rows per output shard (default: 100000)"
        )


def _route(p: argparse.ArgumentParser, ray_func: Callable[[argparse.Namespace], int]) -> None:
    plain = p.get_default("func")

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "shards", None) is not None and not args.ray:
            raise ValueError("--shards needs --ray")
        if not args.ray:
            return plain(args)
        for flag in ("concurrency", "rows_per_shard", "shards"):
            value = getattr(args, flag, None)
            if value is not None and value < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be >= 1")
        try:
            return ray_func(args)
        except (MissingRayError, RuntimeError) as exc:
            print(f"embedcore: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2

    p.set_defaults(func=run)


def add_ray_arguments(
    encode_parser: argparse.ArgumentParser,
    build_parser: argparse.ArgumentParser,
    search_parser: argparse.ArgumentParser,
    *,
    encode: Callable[..., Any],
    load_npy: Callable[[str, str], Any],
    model_path: Callable[[str | None], str],
) -> None:
    """Adds ``--ray`` to the ``encode``, ``index build`` and ``search`` subcommand parsers.

    Args:
        encode_parser, build_parser, search_parser: the three subcommands' parsers (their ``func``
            default is the plain command, kept for runs without ``--ray``).
        encode: ``(model, texts, batch_size, prompt_name) -> array``, the command's single-process
            encode (for search queries).
        load_npy: ``(path, flag name) -> (n, dim) array``, the command's ``.npy`` reader.
        model_path: ``name or None -> model`` (None: the bundled model).
    """
    helpers = {"encode": encode, "load_npy": load_npy, "model_path": model_path}
    for parser, command, shards in (
        (encode_parser, _cmd_encode, False),
        (build_parser, _cmd_index_build, True),
        (search_parser, _cmd_search, False),
    ):
        _ray_options(parser, shards=shards, encodes=command is not _cmd_search)
        _route(parser, lambda args, command=command: command(args, helpers))


def _encode_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "field": args.field,
        "concurrency": args.concurrency,
        "rows_per_shard": args.rows_per_shard,
        "address": args.address,
        "batch_size": args.batch_size,
        "prompt_name": args.prompt_name,
    }


def _cmd_encode(args: argparse.Namespace, helpers: dict[str, Any]) -> int:
    from embedcore.distributed.encoding import encode
    from embedcore.persist import save_npy_atomic

    model = helpers["model_path"](args.model)
    out = Path(args.output)
    if out.suffix == ".npy":
        if not out.resolve().parent.is_dir():
            raise FileNotFoundError(f"--output {args.output}: its folder does not exist")
        emb = encode(Path(args.input), model, precision=args.precision, **_encode_kwargs(args))
        save_npy_atomic(out, emb)
        print(f"wrote {out}: {emb.shape} {emb.dtype}")
    else:
        encode(Path(args.input), model, precision=args.precision, output=out, **_encode_kwargs(args))
        print(f"wrote {out}: verified shards and their manifest (embedcore.distributed.load_embeddings)")
    return 0


def _cmd_index_build(args: argparse.Namespace, helpers: dict[str, Any]) -> int:
    from embedcore.distributed.sharded_index import ShardedIndex
    from embedcore.index import Index

    shards = args.shards or 1
    Index(1, args.precision, args.metric, args.rescore, args.rescore_multiplier)  # settings first
    model = None
    if args.embeddings is not None:
        vectors = helpers["load_npy"](args.embeddings, "--embeddings")
    else:
        from embedcore.distributed.encoding import encode

        model = helpers["model_path"](args.model)
        vectors = encode(Path(args.input), model, **_encode_kwargs(args))
    index = Index(vectors.shape[1], args.precision, args.metric, args.rescore, args.rescore_multiplier)
    index.add(vectors)
    if args.target_recall is not None:
        if args.rescore is None or not 0 < args.target_recall <= 1:
            raise ValueError("--target-recall needs --rescore and a value in (0, 1]")
        mult, recall = index.tune_rescore_multiplier(args.target_recall, k=10, embeddings=vectors)
        print(f"rescore multiplier {mult}: estimated recall@10 {recall:.4f} on corpus rows as queries")
    index.metadata = {"model": model, "prompt_name": args.prompt_name}
    sharded = ShardedIndex.from_index(index, shards, args.output, address=args.address)
    sharded.close()
    print(f"wrote {args.output}: {len(index)} vectors in {shards} shards, {index.precision}")
    return 0


def _cmd_search(args: argparse.Namespace, helpers: dict[str, Any]) -> int:
    from embedcore.distributed.sharded_index import ShardedIndex

    with ShardedIndex.load(args.index, address=args.address) as index:
        if args.query_embeddings is not None:
            queries = helpers["load_npy"](args.query_embeddings, "--query-embeddings")
            labels = [f"query {i}" for i in range(len(queries))]
        else:
            model = args.model or index.metadata.get("model")
            if model is None:
                raise ValueError("this index knows no model: pass --model or --query-embeddings")
            labels = args.query
            prompt = args.prompt_name or index.metadata.get("prompt_name")
            queries = helpers["encode"](helpers["model_path"](model), labels, 32, prompt)
        if queries.shape[1] != index.dim:
            raise ValueError(f"the queries have dim {queries.shape[1]}, the index has dim {index.dim}")
        scores, ids = index.search(queries, min(args.k, len(index)), args.rescore_multiplier)
    results = [
        {
            "query": label,
            "results": [
                {"rank": r + 1, "id": int(i), "score": float(s)} for r, (s, i) in enumerate(zip(sr, ir))
            ],
        }
        for label, sr, ir in zip(labels, scores.tolist(), ids.tolist())
    ]
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
        return 0
    print("query\trank\tid\tscore")  # tab-separated: one line per hit
    for item in results:
        print(
            "\n".join(f"{item['query']}\t{h['rank']}\t{h['id']}\t{h['score']:.6g}" for h in item["results"])
        )
    return 0
