"""The state of a training run on disk: checkpoints, the adapter it produces, and its JSONL log.

A checkpoint (``checkpoints/step-N``) holds the adapter weights, the optimizer and scheduler state and the RNG state,
so that ``--resume`` continues with exactly the steps an uninterrupted run would take. It is written into a
temporary folder and renamed; ``state.json``, written last, marks it complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .._utils import _umask, atomic_write_json
from ..embedding.config import CONFIG_NAME, EncoderConfig, save_config

# --- checkpoints -------------------------------------------------------------------------------------------------


def _checkpoint_dir(output: Path) -> Path:
    return output / "checkpoints"


def latest_checkpoint(output: str | Path) -> Path | None:
    found = sorted(_checkpoint_dir(Path(output)).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p for p in found if (p / "state.json").exists()]
    return complete[-1] if complete else None


def save_checkpoint(output: Path, step: int, model, optimizer, scheduler, extra: dict[str, Any], keep: int) -> Path:
    """Write ``checkpoints/step-N`` atomically (temporary folder, then rename); keep the newest ``keep``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = _checkpoint_dir(output)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, str(tmp / "adapter.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        tmp / "trainer.pt",
    )
    atomic_write_json(tmp / "state.json", {"step": step, **extra})  # written last: marks the folder complete
    final = root / f"step-{step}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    old = sorted((p for p in root.glob("step-*")), key=lambda p: int(p.name.split("-")[1]))[:-keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(path / "adapter.safetensors")))
    state = torch.load(path / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return json.loads((path / "state.json").read_text())


# --- the adapter --------------------------------------------------------------------------------------------------


def save_adapter(model, directory: Path, encoder: EncoderConfig, training: dict[str, Any]) -> None:
    """The PEFT adapter plus ``sfp_config.json``; files are written to a temporary folder and moved in."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    (tmp / "README.md").unlink(missing_ok=True)  # PEFT's placeholder model card; ours is written separately
    save_config(tmp, encoder, training=training)
    for f in tmp.iterdir():
        os.replace(f, directory / f.name)
    tmp.rmdir()


def promote_best(output: Path, summary: dict[str, Any]) -> None:
    """Move the best-on-dev adapter from ``output/best`` to ``output``, with the run summary added to its config."""
    best = output / "best"
    data = json.loads((best / "sfp_config.json").read_text())
    data["training"].update({**summary, "selected": "best STS-B dev"})
    atomic_write_json(best / "sfp_config.json", data)
    for f in best.iterdir():
        os.replace(f, output / f.name)
    best.rmdir()


# --- the log ------------------------------------------------------------------------------------------------------


def append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` (by the interrupted run) so the resumed log has no duplicates."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``train_log.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# --- shipping -------------------------------------------------------------------------------------------------------


def export_adapter(source: str | Path, target: str | Path, dtype: str = "float16") -> Path:
    """Copy a trained adapter folder (weights cast to ``dtype``, configs as they are) for shipping.

    fp16 halves the size; the weights are merged into the backbone in fp32 at load time, and the cast changes the
    embeddings by less than bf16 inference does (checked by ``tests/test_training.py``).
    """
    from safetensors.torch import load_file, save_file

    source, target = Path(source), Path(target)
    weights = source / "adapter_model.safetensors"
    if not weights.exists() or not (source / CONFIG_NAME).exists():
        raise FileNotFoundError(f"{source} is not a trained adapter folder (adapter_model.safetensors, {CONFIG_NAME})")
    target.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in load_file(str(weights)).items()}
    save_file(state, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
    os.chmod(target / "adapter_model.safetensors", 0o666 & ~_umask())  # safetensors writes 0600 files
    shutil.copyfile(source / "adapter_config.json", target / "adapter_config.json")
    data = json.loads((source / CONFIG_NAME).read_text())
    data["encoder"]["adapter"] = None  # the folder itself is the adapter
    data.setdefault("training", {})["exported"] = {"from": str(source), "dtype": dtype}
    atomic_write_json(target / CONFIG_NAME, data)
    return target
