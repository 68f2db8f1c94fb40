"""Zero-shot evaluation: prompt sets (`prompts`), the classifier (`classify`), metrics, prompt selection, the
evaluation runner (`evaluate`: `EvalConfig`, `run_evaluation`, `senclip_eval`) and cross-view retrieval.

`zeroshot_classifier(model, classes, prompts="ground")` is the front door (like open_clip's
`build_zero_shot_classifier`); names are resolved on first use, so importing the package does not import torch."""

_LAZY = {
    "zeroshot_classifier": "classify",
    "ZeroShotClassifier": "classify",
    "embed_images": "classify",
    "PromptBank": "classify",
    "zeroshot_scores": "classify",
    "get_prompts": "prompts",
    "EvalConfig": "evaluate",
    "run_evaluation": "evaluate",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'senclip.zeroshot' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
