"""SenCLIP: CLIP's image encoder fine-tuned on Sentinel-2 to match ground-level photos, for zero-shot land-use mapping.

The front door (each name is imported on first use, so `import senclip` stays light: no torch, no open_clip):

    model = senclip.load("senclip-vit-b-32-avgpool")         # a checkpoint by registry name or path
    senclip.list_checkpoints()                                 # the registry's names
    clf = senclip.zeroshot_classifier(model, "eurosat", prompts="ground")
    clf(model.encode_image(images))                            # (N, C) scores
    senclip.build_senclip(senclip.get_preset("paper"))         # the training module of a preset
    senclip.create_model("ViT-B-32-quickgelu")                 # a bare open_clip architecture
"""
__version__ = "0.1.0"

# name -> the submodule that defines it, resolved on first use so that `import senclip` does not import torch/open_clip
_LAZY = {
    "load": "checkpoints",  # a checkpoint by registry name or path, as a ZeroShotModel (the one public loader)
    "list_checkpoints": "checkpoints",
    "zeroshot_classifier": "zeroshot.classify",  # classes + prompt set -> a classifier of image features
    "build_senclip": "model",  # the SenCLIP training module of a preset
    "get_preset": "core",
    "create_model": "core",  # an open_clip architecture (senclip's tiny ones included), random or open_clip weights
    "CHECKPOINTS": "checkpoints",
    "Checkpoint": "checkpoints",
    "register_checkpoint": "checkpoints",
    "read_checkpoint": "checkpoints",
    "resolve_arch": "checkpoints",
    "ZeroShotModel": "checkpoints",
    "export_openai": "checkpoints",
    "export_safetensors": "checkpoints",
    "Preset": "core",
    "PRESETS": "core",
    "UserError": "core",
    "caveat": "core",  # why numbers made with a model are not results ('' when they are)
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'senclip' has no attribute {name!r}")


def __dir__():
    "What `dir(senclip)` and tab completion offer: the front door (submodules are imported by name as usual)."
    return sorted(set(_LAZY) | {"__version__"})
