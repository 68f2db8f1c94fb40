"""SenCLIP: CLIP's image encoder fine-tuned on Sentinel-2 to match ground-level photos, for zero-shot land-use mapping."""
__version__ = "0.1.0"


def __getattr__(name):
    # `senclip.load(...)` without importing torch/open_clip at `import senclip` time
    if name == "load":
        from .model import load

        return load
    if name in ("get_preset", "Preset", "PRESETS"):
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module 'senclip' has no attribute {name!r}")
