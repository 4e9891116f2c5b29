"""`python tests/fsdp_cpu.py STAGE ARGS...` under `accelerate launch` (2 CPU processes, gloo): the stage with
Accelerate's FSDP2 turned on, so that the stages' FSDP code paths run without a GPU.

Accelerate applies FSDP only on accelerators: on CPU processes its state is MULTI_CPU whatever the config says.
Here every accelerator the stages build gets the FSDP2 plugin of `scripts/accelerate/fsdp.yaml` (full state
dicts, transformer-layer wrapping, no CPU-RAM-efficient loading) and the FSDP distributed type, before anything
is prepared; parameters are then sharded DTensors over the gloo group, as over NCCL on GPUs. Mixed precision
stays off (CPU autocast is not what a GPU run does). Test-only: the package never forces FSDP.
"""

import sys

from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch import nn
from torch.distributed.tensor import DTensor

import adaptive_pause.ppo.trainer
import adaptive_pause.training.finetune
import adaptive_pause.training.loop as loop
import adaptive_pause.training.pretrain
from adaptive_pause.cli import main

_make_accelerator = loop.make_accelerator


def make_fsdp_accelerator(output_dir, seed=None):
    accelerator = _make_accelerator(output_dir, seed)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            reshard_after_forward=True, state_dict_type="FULL_STATE_DICT",
                                            cpu_ram_efficient_loading=False)
    # AcceleratorState copies PartialState's type whenever it is built again: set both
    accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    prepare = accelerator.prepare

    def prepare_and_report(*objects, **kwargs):  # what the tests check: the model really is sharded
        prepared = prepare(*objects, **kwargs)
        modules = [o for o in (prepared if isinstance(prepared, (tuple, list)) else [prepared])
                   if isinstance(o, nn.Module)]
        sharded = sum(isinstance(p, DTensor) for module in modules for p in module.parameters())
        print(f"fsdp_cpu: {sharded} parameters sharded", flush=True)
        return prepared

    accelerator.prepare = prepare_and_report
    return accelerator


for module in (loop, adaptive_pause.training.pretrain, adaptive_pause.training.finetune, adaptive_pause.ppo.trainer):
    module.make_accelerator = make_fsdp_accelerator

if __name__ == "__main__":
    sys.exit(main())
