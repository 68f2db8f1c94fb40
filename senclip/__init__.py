"""SenCLIP: CLIP's image encoder fine-tuned on Sentinel-2 to match ground-level photos, for zero-shot land-use mapping."""
__version__ = "0.1.0"

# The front door, resolved on first use so that `import senclip` does not import torch/open_clip:
# name -> the submodule that defines it.
_LAZY = {
    "load": "checkpoints",  # a checkpoint by registry name or path, as a ZeroShotModel
    "list_checkpoints": "checkpoints",
    "CHECKPOINTS": "checkpoints",
    "Checkpoint": "checkpoints",
    "register_checkpoint": "checkpoints",
    "read_checkpoint": "checkpoints",
    "resolve_arch": "checkpoints",
    "ZeroShotModel": "checkpoints",
    "export_openai": "checkpoints",
    "export_safetensors": "checkpoints",
    "get_preset": "core",
    "Preset": "core",
    "PRESETS": "core",
    "UserError": "core",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'senclip' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
