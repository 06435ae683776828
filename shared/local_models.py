"""Base models of local training and serving (shared/settings.py `models_dir`, RLHF_MODELS_DIR).

A local run's `base_model` is either a directory under the models directory, named relative to it
(`tiny-llama`, `meta-llama/Llama-3.2-1B` saved there with save_pretrained), or a Hugging Face model
id already in this machine's Hugging Face cache. Never an arbitrary path on the server: a client
cannot make the service read a directory it chose, and answers never show where models lie. An
absolute path inside the models directory is taken, and stored by its name. Nothing is downloaded.
"""

import re
from pathlib import Path

# A Hugging Face model id: [owner/]name, letters, digits, '.', '_' and '-', at most 96 characters each.
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")


def _hf_cached(model_id: str) -> bool:
    """Whether the Hugging Face cache holds the model (its config.json), looked up without the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # no train extra: no cache to read
        return False
    return isinstance(try_to_load_from_cache(model_id, "config.json"), str)


def local_base_model(base_model: str, models_dir: Path) -> str:
    """The name a local run's base model is stored by; ValueError saying why `base_model` is not one."""
    name = base_model
    if Path(base_model).is_absolute():
        try:
            name = Path(base_model).resolve().relative_to(models_dir.resolve()).as_posix()
        except ValueError:
            raise ValueError(f"{base_model!r} is a path outside the models directory (RLHF_MODELS_DIR); name a "
                             "model directory under it, or a Hugging Face model id") from None
    if not MODEL_ID.fullmatch(name) or ".." in name:
        raise ValueError(f"{base_model!r} is neither the name of a directory under the models directory "
                         "(RLHF_MODELS_DIR) nor a Hugging Face model id")
    directory = models_dir / name
    if directory.is_dir():
        if not (directory / "config.json").exists():
            raise ValueError(f"the model directory {name!r} has no config.json (save it with save_pretrained)")
        return name
    if _hf_cached(name):
        return name
    raise ValueError(f"{name!r} is neither a model directory under the models directory (RLHF_MODELS_DIR) nor a "
                     "Hugging Face model in this machine's cache (nothing is downloaded at run time: "
                     "save the model under the models directory, or fetch it into the cache first)")


def model_to_load(base_model: str, models_dir: Path) -> str:
    """What from_pretrained loads for a stored base model: its directory under the models directory, else the
    value itself (a Hugging Face model id, read from the cache; an absolute path registered by hand)."""
    if not Path(base_model).is_absolute() and MODEL_ID.fullmatch(base_model) and ".." not in base_model:
        directory = models_dir / base_model
        if directory.is_dir():
            return str(directory)
    return base_model
