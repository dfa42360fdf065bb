"""Models by name from the Hugging Face hub: ``Model.from_pretrained(repo, filename)`` and the CLI's
``--hf-repo/--hf-file``, through ``huggingface_hub`` (its cache, progress bars, ``HF_ENDPOINT``,
``HF_HUB_OFFLINE``). With no name, the published Q4_K_M pair of MiniCPM-V 2.6, as ``ollama run
minicpm-v`` takes its default."""

from __future__ import annotations

import os
from pathlib import Path

from . import _core

DEFAULT_REPO = "openbmb/MiniCPM-V-2_6-gguf"
DEFAULT_FILE = "ggml-model-Q4_K_M.gguf"
_VISION_PREFIX = "mmproj"


def _offline() -> bool:
    # Read when called (huggingface_hub reads it once, at import).
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def _hub_kwargs(cache_dir, revision) -> dict:
    return dict(
        revision=revision,
        cache_dir=cache_dir,
        endpoint=os.environ.get("HF_ENDPOINT") or None,
        local_files_only=_offline(),
    )


def _fetch(repo_id: str, filename: str, cache_dir, revision) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return hf_hub_download(repo_id, filename, **_hub_kwargs(cache_dir, revision))
    except LocalEntryNotFoundError:
        how = "HF_HUB_OFFLINE is set" if _offline() else "the hub cannot be reached"
        raise _core.ModelFileError(
            f"{repo_id}/{filename} is not in the local cache and {how}: download it once online, or pass a local file with -m"
        ) from None
    except GatedRepoError:
        raise _core.ModelFileError(f"{repo_id} is gated: log in with `hf auth login` and accept its terms") from None
    except RepositoryNotFoundError:
        raise _core.ModelFileError(f"no repository {repo_id!r} on the hub (or it is private)") from None
    except RevisionNotFoundError:
        raise _core.ModelFileError(f"{repo_id} has no revision {revision!r}") from None
    except EntryNotFoundError:
        raise _core.ModelFileError(f"{repo_id} has no file {filename!r}") from None
    except OSError as exc:
        raise _core.ModelFileError(f"cannot download {repo_id}/{filename}: {exc}") from None


def _vision_file(repo_id: str, llm_path: str, cache_dir, revision) -> str | None:
    """The repository's vision file (mmproj*.gguf, the f16 one when there are several), from its
    listing; offline, the one cached beside the LLM file."""
    if _offline():
        cached = sorted(Path(llm_path).parent.glob(f"{_VISION_PREFIX}*.gguf"))
        return _preferred([p.name for p in cached])
    from huggingface_hub import HfApi

    try:
        api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
        names = [n for n in api.list_repo_files(repo_id, revision=revision) if "/" not in n]
    except Exception as exc:  # the listing is a convenience: say why it failed
        raise _core.ModelFileError(
            f"cannot list {repo_id} to find its vision file ({exc}); name it with mmproj_filename / --hf-mmproj"
        ) from None
    return _preferred([n for n in names if n.startswith(_VISION_PREFIX) and n.endswith(".gguf")])


def _preferred(names: list[str]) -> str | None:
    if not names:
        return None
    f16 = [n for n in names if "f16" in n.lower()]
    return (f16 or sorted(names))[0]


def download(
    repo_id: str = DEFAULT_REPO,
    filename: str = DEFAULT_FILE,
    mmproj_filename: str | None = None,
    vision: bool = True,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[str, str | None]:
    """(LLM path, vision path or None) in the local hub cache, downloaded once."""
    for name, value in (("repo_id", repo_id), ("filename", filename)):
        if not isinstance(value, str) or not value:
            raise _core.InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}")
    llm = _fetch(repo_id, filename, cache_dir, revision)
    if not vision:
        return llm, None
    name = mmproj_filename or _vision_file(repo_id, llm, cache_dir, revision)
    return llm, None if name is None else _fetch(repo_id, name, cache_dir, revision)
