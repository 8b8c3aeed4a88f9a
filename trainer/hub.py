"""Code from the Hugging Face Hub runs only when a run asks for it.

transformers 5 "kernelizes" every model it loads (`use_kernels` defaults to on): on CUDA it fetches compiled kernels
for Llama's rotary embedding and norms from the hub, which fails offline and, online, downloads and runs code nobody
chose. bitsandbytes, on a CPU with AVX512-BF16 (the CPUs of most GPU machines), fetches a CPU kernel from the hub
when it is imported. PriceTune loads models with `use_kernels` from the run's `hub_kernels` setting (off by
default), and imports bitsandbytes once, here, with the hub fetch refused, so it uses its own shipped kernels.
"""

from __future__ import annotations

import importlib.util
import logging
import sys

# bitsandbytes and kernels are imported only when a run asks for them: neither is needed, and either may be absent.


class HubKernelsOff(RuntimeError):
    """A library asked for a hub kernel while hub kernels are off."""


def _refuse(repo_id: str, *args, **kwargs):
    raise HubKernelsOff(f"hub kernel {repo_id} not fetched: hub kernels are off (TrainConfig.hub_kernels)")


class _DropRefusals(logging.Filter):
    """bitsandbytes logs a refused fetch as a warning at every start; the refusal is the setting, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "hub kernels are off" not in record.getMessage()


def import_bitsandbytes_offline() -> None:
    """Import bitsandbytes (when installed and not yet imported) with `kernels.get_kernel` refused meanwhile."""
    if "bitsandbytes" in sys.modules or importlib.util.find_spec("bitsandbytes") is None:
        return
    try:
        import kernels
    except ImportError:  # without the kernels package nothing can be fetched
        import bitsandbytes  # noqa: F401
        return
    fetch, quiet = kernels.get_kernel, _DropRefusals()
    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    kernels.get_kernel = _refuse
    log.addFilter(quiet)
    try:
        import bitsandbytes  # noqa: F401
    finally:
        kernels.get_kernel = fetch
        log.removeFilter(quiet)
