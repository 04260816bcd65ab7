"""The state of a training run on disk: checkpoints, the adapter it produces, and its JSONL log.

A checkpoint (``checkpoints/step-N``) holds the adapter weights, the optimizer and scheduler state and the RNG state,
so that ``--resume`` continues with exactly the steps an uninterrupted run would take. It is also an adapter folder
like the run's final output (PEFT's files plus ``sfp_config.json``), so any checkpoint can be evaluated or used as a
model (``--model RUN/checkpoints/step-N``) to pick the best one on tuning data. It is written into a temporary folder
and renamed; ``state.json``, written last, marks it complete.

Nothing in a run folder is unpickled: tensors are stored in safetensors files and everything else as JSON, so a run
folder from someone else is data, never code (a pickle, the format of PyTorch's own checkpoint files, can run
anything when it is loaded; older torch releases had escapes from their restricted loading mode too).
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


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from: damaged, of an older format, or written by a different run."""


_TRAINER_TENSORS = "trainer.safetensors"
_TRAINER_STATE = "trainer.json"


_ADAPTER_WEIGHTS = "adapter_model.safetensors"  # PEFT's name: a checkpoint loads as an adapter
_OLD_ADAPTER_WEIGHTS = "adapter.safetensors"  # checkpoints written before they were adapter folders


def save_checkpoint(
    output: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    extra: dict[str, Any],
    keep: int,
    encoder: EncoderConfig,
    training: dict[str, Any],
) -> Path:
    """Write ``checkpoints/step-N`` atomically (temporary folder, then rename); keep the newest ``keep``.

    ``encoder`` and ``training`` are the ``sfp_config.json`` sections the run's final adapter gets, so the checkpoint
    is a loadable adapter too."""
    from safetensors.torch import save_file

    root = _checkpoint_dir(output)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _write_adapter_files(model, tmp, encoder, {**training, "checkpoint_step": step})
    tensors, meta = _trainer_state(optimizer, scheduler)
    save_file(tensors, str(tmp / _TRAINER_TENSORS))
    atomic_write_json(tmp / _TRAINER_STATE, meta)
    atomic_write_json(tmp / "state.json", {"step": step, **extra})  # written last: marks the folder complete
    final = root / f"step-{step}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    old = sorted((p for p in root.glob("step-*")), key=lambda p: int(p.name.split("-")[1]))[:-keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _trainer_state(optimizer, scheduler) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer, scheduler and RNG state split into tensors (for safetensors) and plain values (for JSON)."""
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    values: dict[str, dict[str, Any]] = {}
    for pid, entry in opt["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                values.setdefault(str(pid), {})[name] = value
    meta = {
        "format": "sfp-rag-trainer/1",
        "param_groups": opt["param_groups"],
        "optimizer_values": values,
        "scheduler": scheduler.state_dict(),
    }
    return tensors, meta


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore a checkpoint written by ``save_checkpoint``; ``CheckpointError`` says what is wrong with it."""
    from peft import set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if (path / "trainer.pt").exists() and not (path / _TRAINER_TENSORS).exists():
        raise CheckpointError(
            f"{path} was written by an older sfp_rag (trainer.pt, a pickle); it is not loaded, since a pickle can run "
            "code. Continue from its adapter instead: sfp-rag train --model <run dir> ... (a new schedule)"
        )
    weights = path / _ADAPTER_WEIGHTS
    if not weights.exists() and (path / _OLD_ADAPTER_WEIGHTS).exists():
        weights = path / _OLD_ADAPTER_WEIGHTS
    try:
        set_peft_model_state_dict(model, load_file(str(weights)))
        tensors = load_file(str(path / _TRAINER_TENSORS))
        meta = json.loads((path / _TRAINER_STATE).read_text(encoding="utf-8"))
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != "sfp-rag-trainer/1" or not isinstance(state, dict):
            raise ValueError(f"{_TRAINER_STATE} or state.json is not of this sfp_rag's format")
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, pid, name = key.split(".", 2)
                opt_state.setdefault(int(pid), {})[name] = value
        for pid, entry in meta["optimizer_values"].items():
            opt_state.setdefault(int(pid), {}).update(entry)
        optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
        scheduler.load_state_dict(meta["scheduler"])
        torch.set_rng_state(tensors["rng.cpu"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be resumed from ({type(err).__name__}: {err}); delete that step-N folder to "
            "resume from an earlier one, or start a new run"
        ) from None
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return state


# What a resumed run must share with the run that wrote the checkpoint: the schedule (max_steps shapes the learning
# rate), the batches (data, batch size, seed) and the objective. Anything else (logging, saving, eval) may change.
RESUME_KEYS = (
    "data",
    "model",
    "objective",
    "template",
    "max_text_tokens",
    "temperature",
    "batch_size",
    "grad_accum",
    "lr",
    "weight_decay",
    "warmup_steps",
    "schedule",
    "max_steps",
    "lora_r",
    "lora_alpha",
    "seed",
    "max_train_texts",
    "crop_min",
    "crop_max",
    "ict_keep",
    "title_share",
    "topic_clusters",
    "hard_negatives",
    "hard_negative_depth",
    "hard_negative_guard",
    "matryoshka_dims",
    "pseudo_queries",
    "generator",
    "pseudo_query_round_trip",
)  # not grad_cache: it changes memory, not the gradient, so a resume may raise or lower it


_RUN_FILES = (
    CONFIG_NAME,
    "train_log.jsonl",
    "checkpoints",
    "pseudo_queries.jsonl",  # written before the first checkpoint: a run stopped while generating starts again here
    "adapter_config.json",
    "adapter_model.safetensors",
    "topics.npy",  # sampling.TOPICS_NAME: written before the first step of a topic-batch run
)


def check_output_dir(output: Path, config) -> None:
    """A run writes its adapter, log and checkpoints into ``output``: refuse a folder that holds something else (a
    training run never overwrites files it did not write), and the adapter the run continues from."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"--output {output} is a file; give a folder for the run")
    if output.is_dir() and not any((output / f).exists() for f in _RUN_FILES):
        foreign = sorted(p.name for p in output.iterdir() if not p.name.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise FileExistsError(
                f"--output {output} already holds other files ({shown}) and is not a training run; give a new or "
                "empty folder"
            )
    if config.init_adapter and output.resolve() == Path(config.init_adapter).resolve():
        raise FileExistsError(
            f"--output {output} is the adapter this run continues from; write the continued run to another folder"
        )


def run_settings(config) -> dict[str, Any]:
    return {key: getattr(config, key) for key in RESUME_KEYS}


def check_resumable(state: dict[str, Any], config, checkpoint: Path) -> None:
    """Refuse a ``--resume`` that would not continue the same run: one that already finished (its learning rate has
    decayed to its end: more steps would do nothing), or one asked to resume with other settings."""
    step, recorded = state.get("step"), state.get("run")
    if not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{checkpoint}/state.json has no valid step; delete that folder or start a new run")
    how = "to train further, start a new run from its adapter: sfp-rag train --model <run dir> -o <new dir> ..."
    if step >= config.max_steps:
        raise CheckpointError(
            f"--resume: this run already reached step {step} (--steps {config.max_steps} asked for); {how}"
        )
    if isinstance(recorded, dict):
        changed = {
            k: (recorded[k], getattr(config, k))
            for k in RESUME_KEYS
            if k in recorded and recorded[k] != getattr(config, k)
        }
        if changed:
            listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise CheckpointError(
                f"--resume continues the run as it was started, but these settings differ ({listed}); "
                f"resume with the original settings, or {how}"
            )


# --- the adapter --------------------------------------------------------------------------------------------------


def save_adapter(model, directory: Path, encoder: EncoderConfig, training: dict[str, Any]) -> None:
    """The PEFT adapter plus ``sfp_config.json``; files are written to a temporary folder and moved in."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _write_adapter_files(model, tmp, encoder, training)
    for f in tmp.iterdir():
        os.replace(f, directory / f.name)
    tmp.rmdir()


def _write_adapter_files(model, directory: Path, encoder: EncoderConfig, training: dict[str, Any]) -> None:
    """PEFT's adapter_model.safetensors + adapter_config.json and our sfp_config.json: a folder that loads as a model
    (the run's adapter, and every checkpoint)."""
    model.save_pretrained(str(directory))
    (directory / "README.md").unlink(missing_ok=True)  # PEFT's placeholder model card; ours is written separately
    save_config(directory, encoder, training=training)


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
