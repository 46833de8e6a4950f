"""Instance checks against classes of heavy optional modules without importing them: nothing can be an instance of a
class whose module was never imported. torch.distributed's DTensor / FSDP2 / checkpoint stack costs about 1.5 s of
CPU to import, which a single-process run (every laptop run, every CLI call) should not pay."""

import sys


def loaded_class(module: str, name: str) -> type | None:
    """`module.name` if `module` is already imported, else None."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None
