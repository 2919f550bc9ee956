"""``claver prompts generate | check | import``: interpretive descriptions of action classes."""

from __future__ import annotations

import argparse
import os
import sys

_KINDS_HELP = "comma-separated kinds (default: decomposition,body,synonyms,scene)"


def _kinds(value: str | None) -> list[str] | None:
    if value is None:
        return None
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    if not kinds:
        raise argparse.ArgumentTypeError("give at least one kind")
    return kinds


def _seed(value: str) -> int | None:
    return None if value.lower() in ("none", "off") else int(value)


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_env is None:
        return None  # never send a key the user did not name (it could leak to any server)
    key = os.environ.get(args.api_key_env)
    if not key:
        raise ValueError(f"--api-key-env {args.api_key_env}: that environment variable is not "
                         f"set or empty; export {args.api_key_env}=... first")
    return key


def _backend(args: argparse.Namespace):
    if bool(args.base_url) == bool(args.hf_model):
        raise ValueError("choose one backend: --base-url URL [--model NAME] for an "
                         "OpenAI-compatible server (vLLM, llama.cpp, Ollama ...), or "
                         "--hf-model PATH_OR_ID for a local transformers model")
    if args.hf_model:
        from claver.prompts.hf_backend import HFBackend

        return HFBackend(args.hf_model, device=args.device, dtype=args.dtype,
                         batch_size=args.batch_size, style=args.endpoint or "auto")
    from claver.prompts.backends import OpenAIBackend

    return OpenAIBackend(args.base_url, args.model, api_key=_api_key(args),
                         endpoint=args.endpoint or "chat", concurrency=args.concurrency,
                         timeout=args.timeout, retries=args.retries)


def _cmd_generate(args: argparse.Namespace) -> int:
    from claver.data.sources import read_labels
    from claver.prompts.backends import SamplingParams
    from claver.prompts.fewshot import KINDS
    from claver.prompts.generate import default_cache_path, generate_descriptions

    names = read_labels(args.labels)
    params = SamplingParams(args.temperature, args.top_p, args.max_tokens, args.seed)
    backend = _backend(args)
    cache = args.cache or default_cache_path(args.out)
    print(f"{len(names)} classes x {len(args.kinds or KINDS)} kinds x {args.samples} "
          f"samples with {backend.model_name} ({backend.style}); cache {cache}", file=sys.stderr)
    try:
        report = generate_descriptions(
            names, args.out, backend, kinds=args.kinds, samples=args.samples,
            prompts=args.prompts_file, params=params, cache=cache,
            max_attempts=args.max_attempts, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished generation is saved in {cache}; rerun the same "
              "command to resume", file=sys.stderr)
        return 130
    print(report.summary())
    return 0 if report.ok else 1


def _read_any(path: str, class_names: list[str] | None, shorten: bool):
    from claver.prompts.formats import read_claver_csv, read_descriptions

    if path.lower().endswith((".csv", ".txt", ".tsv")):
        return read_claver_csv(path, class_names, shorten=shorten)
    from claver.prompts.formats import ImportResult

    return ImportResult(read_descriptions(path))


def _cmd_check(args: argparse.Namespace) -> int:
    from claver.data.sources import read_labels
    from claver.prompts.check import check_descriptions

    names = read_labels(args.labels)
    records = []
    for path in args.files:
        records += _read_any(path, None, shorten=False).descriptions
    result = check_descriptions(records, names, kinds=args.kinds,
                                min_per_class=args.min_per_class)
    print(result.format(per_class=True if args.per_class else None))
    return 0 if result.ok else 1


def _cmd_import(args: argparse.Namespace) -> int:
    from collections import Counter

    from claver.data.sources import read_labels
    from claver.prompts.formats import read_claver_csv, write_descriptions

    names = read_labels(args.labels)
    records, messages = [], []
    for path in args.files:
        result = read_claver_csv(path, names, kind=args.kind, model=args.model)
        records += result.descriptions
        messages += result.warnings
        if result.missing_classes:
            ids = result.missing_classes
            messages.append(f"{path}: {len(ids)} classes have no description (ids "
                            f"{', '.join(map(str, ids[:10]))}{' ...' if len(ids) > 10 else ''})")
    for message in messages[:20]:
        print(f"warning: {message}", file=sys.stderr)
    if len(messages) > 20:
        print(f"warning: ... and {len(messages) - 20} more", file=sys.stderr)
    write_descriptions(records, args.out)
    kinds = Counter(r.kind for r in records)
    per_class = Counter(r.class_id for r in records)
    print(f"wrote {len(records)} descriptions ({', '.join(f'{k} {n}' for k, n in kinds.items())})"
          f" for {len(per_class)} of {len(names)} classes to {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``claver prompts`` and its subcommands."""
    prompts = subparsers.add_parser(
        "prompts", help="interpretive prompts: generate, check and import action descriptions")
    sub = prompts.add_subparsers(dest="prompts_command", required=True)

    gen = sub.add_parser("generate", help="generate descriptions with an LLM (resumable)")
    gen.add_argument("--labels", required=True, help="label CSV (id,name)")
    gen.add_argument("--out", required=True, help="output JSONL")
    gen.add_argument("--kinds", type=_kinds, help=_KINDS_HELP)
    gen.add_argument("--samples", type=int, default=5, help="descriptions per class and kind")
    gen.add_argument("--prompts-file", help="YAML/JSON overriding or adding prompt kinds")
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--max-tokens", type=int, default=128, help="generated tokens per answer")
    gen.add_argument("--seed", type=_seed, default=0,
                     help="base seed; each request gets its own derived seed ('none': unseeded)")
    gen.add_argument("--cache", help="attempts cache (default: OUT with .cache.jsonl)")
    gen.add_argument("--max-attempts", type=int, default=4,
                     help="attempts per description before giving up on it")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    http = gen.add_argument_group("OpenAI-compatible server")
    http.add_argument("--base-url", help="e.g. http://localhost:8000/v1")
    http.add_argument("--model", help="served model name (default: the server's only model)")
    http.add_argument("--api-key-env", help="environment variable holding the API key, e.g. "
                                            "OPENAI_API_KEY (default: no key is sent)")
    http.add_argument("--endpoint", choices=("chat", "completions"),
                      help="chat (default for servers) or completions (base models); "
                           "--hf-model default: chat if the tokenizer has a chat template")
    http.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    http.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    http.add_argument("--retries", type=int, default=4, help="retries per request")
    hf = gen.add_argument_group("local Hugging Face model")
    hf.add_argument("--hf-model", help="local folder or Hub id of a causal LM")
    hf.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    hf.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    hf.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    gen.set_defaults(func=_cmd_generate)

    check = sub.add_parser("check", help="coverage, token lengths and duplicates of description "
                                         "files (exit 1 on problems)")
    check.add_argument("files", nargs="+", help="description JSONL or CLAVER CSV files")
    check.add_argument("--labels", required=True, help="label CSV (id,name)")
    check.add_argument("--kinds", type=_kinds, help="require these kinds for every class")
    check.add_argument("--min-per-class", type=int, default=1)
    check.add_argument("--per-class", action="store_true",
                       help="print the per-class table even for more than 50 classes")
    check.set_defaults(func=_cmd_check)

    imp = sub.add_parser("import", help="convert CLAVER-style CSVs (id,description rows) to "
                                        "our JSONL, shortening texts over 77 tokens")
    imp.add_argument("files", nargs="+", help="CLAVER CSV files (',' or ';' separated)")
    imp.add_argument("--labels", required=True, help="label CSV (id,name)")
    imp.add_argument("--out", required=True, help="output JSONL")
    imp.add_argument("--kind", help="kind of all rows (default: from each file name)")
    imp.add_argument("--model", default="imported", help="model name to record")
    imp.set_defaults(func=_cmd_import)
