"""Weight sync from a GRPO/RLOO trainer to a vLLM server over gloo, for servers on CPUs (`vllm_mode: server`).

TRL 1.16 pushes the policy's weights to a `vllm serve` process after every step through vLLM's NCCL weight-transfer
engine, which needs a CUDA device on both ends: on a CPU, TRL's client refuses (`init_communicator`:
NotImplementedError) and vLLM 0.30 ships no CPU engine. This module is the same protocol over a gloo group:

- server side, [`GlooWeightTransferEngine`]: vLLM's NCCL engine with its process group and receive loop replaced.
  Registered as the weight-transfer backend `"gloo"` by [`register`], which vLLM calls in each of its processes
  through the `vllm.general_plugins` entry point glowrl installs (`pyproject.toml`); vLLM's engine registry
  (`WeightTransferEngineFactory._registry`) is private, and this module is where glowrl reads it. The server is
  started with `--weight-transfer-config '{"backend": "gloo"}'` ([`cpu_serve_command`]).
- trainer side, [`GlooVLLMClient`]: TRL's `VLLMClient` with `init_communicator` and `update_named_params` over the
  same group; `glowrl._trl_compat.cpu_server_client` puts it where TRL builds its client.

The trainer is rank 0 and owns the rendezvous store (the address TRL sends, `get_ip()`, and `vllm_server_group_port`);
each vLLM worker is rank `1 + its rank`. Every update is: start (vLLM's layerwise reload), one broadcast per tensor
in the announced order, finish (the layers repacked for the CPU kernels, the tied LM head included). Not for GPUs:
NCCL is the right transport there, and TRL uses it.

Imports torch, TRL and vLLM only inside functions and classes built on first use.
"""

import datetime
from concurrent.futures import ThreadPoolExecutor


BACKEND = "gloo"
TIMEOUT = datetime.timedelta(minutes=10)


def gloo_group(host: str, port: int, rank: int, world_size: int):
    """A gloo process group of `world_size` ranks that rendezvous at `host:port` (rank 0 hosts the store)."""
    import torch.distributed as dist

    store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=TIMEOUT)
    return dist.ProcessGroupGloo(dist.PrefixStore("glowrl-weights", store), rank, world_size, TIMEOUT), store


def broadcast(group, tensor) -> None:
    group.broadcast(tensor, 0).wait()


def _engine_class():
    import torch
    from vllm.distributed.weight_transfer.nccl_engine import NCCLWeightTransferEngine

    from .vllm_support import repack_vocab_layers

    class GlooWeightTransferEngine(NCCLWeightTransferEngine):
        """vLLM's NCCL weight-transfer engine (its init and update messages, its layerwise reload) over gloo."""

        def init_transfer_engine(self, init_info) -> None:
            parallel = self.parallel_config
            rank = parallel.data_parallel_index * parallel.world_size + parallel.rank + init_info.rank_offset
            self.group, self.store = gloo_group(
                init_info.master_address, init_info.master_port, rank, init_info.world_size
            )

        def receive_weights(self, update_info) -> None:
            for name, dtype_name, shape in zip(
                update_info.names, update_info.dtype_names, update_info.shapes, strict=True
            ):
                weight = torch.empty(shape, dtype=getattr(torch, dtype_name))
                broadcast(self.group, weight)
                self.model.load_weights([(name, weight)])

        def finish_weight_update(self) -> None:
            super().finish_weight_update()
            repack_vocab_layers(self.model)

        def shutdown(self) -> None:
            self.group = self.store = None

    return GlooWeightTransferEngine


def register() -> None:
    """vLLM's plugin hook (entry point `vllm.general_plugins: glowrl_gloo_weight_transfer`): the `"gloo"`
    weight-transfer backend."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, _engine_class())


def client_class():
    """TRL's `VLLMClient` with its weight-transfer group over gloo (see the module docstring)."""
    import atexit

    from trl.generation.vllm_client import VLLMClient
    from vllm.utils.network_utils import get_ip

    class GlooVLLMClient(VLLMClient):
        communicator = None

        def init_communicator(self, device=0):
            if (self.get_server_info()["weight_transfer_config"] or {}).get("backend") != BACKEND:
                raise RuntimeError(
                    f"the vLLM server at {self.base_url} takes no gloo weight transfer; on a CPU start it with "
                    f"""--weight-transfer-config '{{"backend": "{BACKEND}"}}' (glowrl's launcher does)"""
                )
            world_size = self.get_world_size() + 1
            info = {"master_address": get_ip(), "master_port": self.group_port, "rank_offset": 1}
            info["world_size"] = world_size
            with ThreadPoolExecutor(max_workers=1) as executor:  # the server joins the group inside the request
                url = f"{self.base_url}/init_weight_transfer_engine"
                future = executor.submit(self._post, url, json={"init_info": info})
                self.communicator = gloo_group(info["master_address"], self.group_port, 0, world_size)
                future.result()
            atexit.register(self.close_communicator)

        def update_named_params(self, metadata, named_params):
            names, dtype_names, shapes = (list(f) for f in zip(*metadata, strict=True))
            update_info = {"names": names, "dtype_names": dtype_names, "shapes": shapes}
            if not self._updating_weights:
                self._start_weight_update()
            with ThreadPoolExecutor(max_workers=1) as executor:  # the workers receive inside the request
                url = f"{self.base_url}/update_weights"
                future = executor.submit(self._post, url, json={"update_info": update_info})
                group = self.communicator[0]
                for _, tensor in named_params:
                    broadcast(group, tensor.detach().to("cpu").contiguous())
                future.result()
            if not self._updating_weights:
                self._finish_weight_update()

        def close_communicator(self):
            self.communicator = None

    return GlooVLLMClient


def cpu_serve_command(command: list[str]) -> list[str]:
    """TRL's `vllm serve` command line with the gloo weight transfer instead of NCCL."""
    import json

    index = command.index("--weight-transfer-config") + 1
    return [*command[:index], json.dumps({"backend": BACKEND}), *command[index + 1 :]]
