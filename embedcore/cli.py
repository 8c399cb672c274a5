"""The ``embedcore`` command.

``info`` (live backends), ``encode`` (texts -> .npy), ``index build`` / ``index add`` (an index folder
holding the vectors, their texts and the model that made them), ``search``, ``bench`` (the benchmark
runner of :mod:`embedcore.bench`), ``demo`` (the README's main job, :mod:`embedcore.demo`), and
``tune`` / ``inspect`` (:mod:`embedcore.cli_tune`).

Every usage error (a missing file, an empty corpus, a JSONL line without the field or not UTF-8, a
query of the wrong dim, a damaged model or index) is one line on stderr naming the file (and the line
of an input file) and exit code 2; anything unforeseen is one line and exit code 1. ``embedcore
--debug ...`` prints the traceback instead. Outputs are written atomically, so a failed command
leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from embedcore.corpus import MissingExtraError, load_npy

# Errors that mean "bad input or environment": reported as one line with exit code 2.
_USER_ERRORS = (ValueError, TypeError, KeyError, OSError, MissingExtraError, RecursionError, MemoryError)
_TEXTS, _OFFSETS = "doc_text", "doc_offsets"
# Precisions of Embedder.encode (all of them fit in a .npy file).
_ENCODE_PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2, as argparse's own)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- helpers


def _model_path(name: str | None) -> str:
    """The model to load: ``name`` (an absolute path if it is a local folder) or the bundled MiniLM."""
    from embedcore.corpus import demo_model_path

    if name is None:
        return str(demo_model_path())
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def _encode(
    model: str, texts: list[str], batch_size: int, prompt_name: str | None, precision: str = "float32"
) -> np.ndarray:
    """Encodes ``texts`` with a progress bar, reporting throughput on stderr."""
    from embedcore.models.embedder import Embedder

    try:
        embedder = Embedder.from_pretrained(model)
    except (ImportError, MissingExtraError):
        raise
    except Exception as exc:  # a truncated or altered model file surfaces as many exception types
        raise ValueError(f"model {model} cannot be loaded ({type(exc).__name__}: {exc})") from None
    start = time.perf_counter()
    out = embedder.encode(
        texts, batch_size=batch_size, show_progress_bar=True, prompt_name=prompt_name, precision=precision
    )
    seconds = time.perf_counter() - start
    print(
        f"encoded {len(texts)} texts in {seconds:.1f} s ({len(texts) / seconds:.1f} texts/s)", file=sys.stderr
    )
    return np.asarray(out)




def _vectors(args: argparse.Namespace, model: str | None) -> tuple[np.ndarray, list[str] | None]:
    """The float vectors to add (and their texts) from ``--embeddings`` or ``--input`` + model."""
    from embedcore.corpus import read_texts

    if args.embeddings is not None:
        return load_npy(args.embeddings, "--embeddings"), None
    if model is None:
        raise ValueError("this index was built from --embeddings and knows no model: add with --embeddings")
    texts = read_texts(args.input, args.field)
    return _encode(model, texts, args.batch_size, args.prompt_name), texts


def _texts_after_add(index: Any, texts: list[str] | None, first_id: int) -> dict[str, np.ndarray]:
    """The document store (text of id i at position i) with ``texts`` stored from ``first_id`` on."""
    from embedcore.corpus import pack_texts, unpack_text

    store = index.extra_arrays
    old = []
    if _TEXTS in store:
        old = [unpack_text(store[_TEXTS], store[_OFFSETS], i) for i in range(len(store[_OFFSETS]) - 1)]
    if texts is None and not old:
        return {}
    new = texts or []
    merged = old + [""] * (first_id - len(old)) + new
    data, offsets = pack_texts(merged)
    return {_TEXTS: data, _OFFSETS: offsets}


def _check_output_dir(path: str) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"--output {path}: the folder {parent} does not exist")
    from embedcore.persist import is_saved_folder

    out = Path(path)
    if out.exists() and not (is_saved_folder(out) or (out.is_dir() and not any(out.iterdir()))):
        raise ValueError(f"--output {path} exists and is not an embedcore index; refusing to replace it")


# ---------------------------------------------------------------------------- commands


def _cmd_info(args: argparse.Namespace) -> int:
    from embedcore._backend import info

    info()
    return 0


def _cmd_encode(args: argparse.Namespace) -> int:
    from embedcore.corpus import read_texts
    from embedcore.persist import save_npy_atomic

    if Path(args.output).suffix != ".npy":
        raise ValueError(f"--output {args.output} must end in .npy")
    if not Path(args.output).resolve().parent.is_dir():
        raise FileNotFoundError(f"--output {args.output}: its folder does not exist")
    texts = read_texts(args.input, args.field)
    out = _encode(_model_path(args.model), texts, args.batch_size, args.prompt_name, args.precision)
    save_npy_atomic(args.output, out)
    print(f"wrote {args.output}: {out.shape} {out.dtype}")
    return 0


def _cmd_index_build(args: argparse.Namespace) -> int:
    from embedcore.index import Index

    _check_output_dir(args.output)
    # Settings are checked before the (slow) encoding: an Index of the same settings validates them.
    Index(1, args.precision, args.metric, args.rescore, args.rescore_multiplier)
    if args.target_recall is not None and (args.rescore is None or not 0 < args.target_recall <= 1):
        raise ValueError("--target-recall needs --rescore and a value in (0, 1]")
    model = None if args.embeddings is not None else _model_path(args.model)
    vectors, texts = _vectors(args, model)
    index = Index(vectors.shape[1], args.precision, args.metric, args.rescore, args.rescore_multiplier)
    index.add(vectors)
    if args.target_recall is not None:
        mult, recall = index.tune_rescore_multiplier(args.target_recall, k=10, embeddings=vectors)
        print(f"rescore multiplier {mult}: estimated recall@10 {recall:.4f} on corpus rows as queries")
    index.metadata = {"model": model, "prompt_name": args.prompt_name}
    index.save(args.output, _texts_after_add(index, texts, 0))
    print(
        f"wrote {args.output}: {len(index)} vectors, {index.precision}"
        f"{' + ' + index.rescore + ' rescoring' if index.rescore else ''}, "
        f"{index.nbytes / len(index):.0f} bytes per vector"
    )
    return 0


def _cmd_index_add(args: argparse.Namespace) -> int:
    from embedcore.index import Index

    index = Index.load(args.index, mmap=False)
    vectors, texts = _vectors(args, index.metadata.get("model"))
    store = _texts_after_add(index, texts, index.next_id)
    index.add(vectors)
    index.save(args.index, store)
    print(f"added {len(vectors)} vectors to {args.index}: {len(index)} in all")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from embedcore.corpus import unpack_text
    from embedcore.index import Index

    index = Index.load(args.index)
    if args.query_embeddings is not None:
        queries = load_npy(args.query_embeddings, "--query-embeddings")
        labels = [f"query {i}" for i in range(len(queries))]
    else:
        model = args.model or index.metadata.get("model")
        if model is None:
            raise ValueError(
                "this index was built from --embeddings and knows no model: pass --model "
                "or --query-embeddings"
            )
        labels = args.query
        queries = _encode(
            _model_path(model), labels, 32, args.prompt_name or index.metadata.get("prompt_name")
        )
    if queries.shape[1] != index.dim:
        raise ValueError(f"the queries have dim {queries.shape[1]}, the index has dim {index.dim}")
    k = min(args.k, len(index))
    scores, ids = index.search(queries, k, rescore_multiplier=args.rescore_multiplier)
    store = index.extra_arrays

    def text(i: int) -> str | None:
        if _TEXTS not in store or i >= len(store[_OFFSETS]) - 1:
            return None
        return unpack_text(store[_TEXTS], store[_OFFSETS], i)

    results = [
        {
            "query": label,
            "results": [
                {"rank": r + 1, "id": int(i), "score": float(s), "text": text(int(i))}
                for r, (s, i) in enumerate(zip(srow, irow))
            ],
        }
        for label, srow, irow in zip(labels, scores, ids)
    ]
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
        return 0
    for item in results:
        print(f"\n{item['query']}")
        for hit in item["results"]:
            snippet = " ".join((hit["text"] or "").split())
            snippet = snippet if len(snippet) <= 90 else snippet[:87] + "..."
            print(f"  {hit['rank']:>3}  id {hit['id']:>8}  score {hit['score']:>9.4f}  {snippet}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from embedcore import bench

    return bench.run(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from embedcore import demo

    return demo.run(args)


# ---------------------------------------------------------------------------- parser


def _add_input(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="FILE", help="texts: .txt (one per line), .jsonl or .csv")
    src.add_argument("--embeddings", metavar="FILE.npy", help="precomputed float embeddings (n, dim)")
    p.add_argument("--field", default="text", help="JSONL key or CSV column holding the text (default: text)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at module level, so that `import embedcore.cli` stays cheap.
    from embedcore import bench
    from embedcore.demo import add_arguments as demo_arguments
    from embedcore.index import METRICS, PRECISIONS

    parser = _Parser(prog="embedcore", description="Fast, faithful text embeddings and exact retrieval.")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    model_help = "model folder or name (default: the bundled all-MiniLM-L6-v2 of embedcore[demo])"

    p = sub.add_parser("info", help="print the live backends (native ISA, CUDA, Triton, versions)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("encode", help="encode a file of texts into a .npy array")
    p.add_argument(
        "--input", required=True, metavar="FILE", help="texts: .txt (one per line), .jsonl or .csv"
    )
    p.add_argument("--field", default="text", help="JSONL key or CSV column holding the text (default: text)")
    p.add_argument("--output", required=True, metavar="FILE.npy", help="where the embeddings go")
    p.add_argument("--model", help=model_help)
    p.add_argument("--precision", default="float32", choices=_ENCODE_PRECISIONS)
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")
    p.add_argument("--prompt-name", help="a prompt of the model's configuration, e.g. query")
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser("index", help="build or extend an index folder")
    isub = p.add_subparsers(dest="index_command", required=True, parser_class=_Parser)
    b = isub.add_parser("build", help="encode a corpus (or take embeddings) and save an index folder")
    _add_input(b)
    b.add_argument(
        "--output", required=True, metavar="DIR", help="index folder to write (replaced atomically)"
    )
    b.add_argument("--model", help=model_help)
    b.add_argument("--prompt-name", help="a prompt of the model's configuration for the documents")
    b.add_argument("--precision", default="float32", choices=PRECISIONS, help="scanned format")
    b.add_argument("--metric", default="cos", choices=METRICS)
    b.add_argument(
        "--rescore",
        choices=("int8", "float32"),
        default=None,
        help="rescore the scan's candidates with int8 (binary only) or float32 vectors",
    )
    b.add_argument("--rescore-multiplier", type=int, default=4, help="candidates per result (default: 4)")
    b.add_argument(
        "--target-recall",
        type=float,
        default=None,
        metavar="R",
        help="pick the smallest rescore multiplier whose recall@10, estimated on corpus rows "
        "as queries, reaches R",
    )
    b.set_defaults(func=_cmd_index_build)
    a = isub.add_parser("add", help="encode more texts (or take embeddings) into an existing index")
    a.add_argument("--index", required=True, metavar="DIR")
    _add_input(a)
    a.add_argument("--prompt-name", help="a prompt of the model's configuration for the documents")
    a.set_defaults(func=_cmd_index_add)

    p = sub.add_parser("search", help="search an index folder")
    p.add_argument("--index", required=True, metavar="DIR")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", action="append", metavar="TEXT", help="a query text (repeatable)")
    q.add_argument("--query-embeddings", metavar="FILE.npy", help="precomputed query embeddings (n, dim)")
    p.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--model", help="model for the queries (default: the one the index was built with)")
    p.add_argument("--prompt-name", help="a prompt of the model's configuration for the queries")
    p.add_argument("--rescore-multiplier", type=int, default=None, help="override the index's multiplier")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("bench", help="run the benchmark suite against the baselines (embedcore.bench)")
    bench.add_arguments(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "demo",
        help="the main job: bundled model + Wikipedia corpus, index, search, table",
        description="Encodes ~10,000 bundled Wikipedia summaries with the bundled all-MiniLM-L6-v2 "
        "(cached on disk), builds a binary index with int8 rescoring, runs the articles' short "
        "descriptions as queries and prints recall@10 against exact float search, single-query latency "
        "against FAISS and numpy, bytes per vector and encode throughput. Needs embedcore[demo].",
    )
    demo_arguments(p)
    p.set_defaults(func=_cmd_demo)

    from embedcore.cli_tune import add_commands

    add_commands(sub)  # tune, inspect

    from embedcore.distributed.cli import add_ray_arguments  # --ray: imports Ray only when run

    add_ray_arguments(
        sub.choices["encode"], isub.choices["build"], sub.choices["search"],
        encode=_encode, load_npy=load_npy, model_path=_model_path,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = " ".join(filter(None, (args.command, getattr(args, "index_command", None))))
    for name in ("batch_size", "k", "rescore_multiplier"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            flag = "-k" if name == "k" else "--" + name.replace("_", "-")
            print(f"embedcore {command}: error: {flag} must be >= 1", file=sys.stderr)
            return 2
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        text = " ".join(str(message).split()) or type(exc).__name__
        if isinstance(exc, _USER_ERRORS):
            print(f"embedcore {command}: error: {text}", file=sys.stderr)
            return 2
        # Anything else is a bug or an unforeseen input: still one line, the traceback on request.
        print(f"embedcore {command}: error: {type(exc).__name__}: {text} (rerun with embedcore --debug "
              "for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
