"""Omniglot: acquisition, verification, preprocessing and caching.

Data protocol
-------------
Source. Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015; MIT licence): 1623 handwritten
characters from 50 alphabets, 20 drawings of each, every drawing a 105x105 black-and-white image.
Two sets: "background" (964 characters, 30 alphabets) and "evaluation" (659 characters, 20 alphabets).
Either of two formats is accepted for each set, in a folder given by ``root=`` or ``$METABENCH_DATA``:

* ``images_<set>.zip``: the official archive from https://github.com/brendenlake/omniglot
  (:func:`download` fetches both with pooch, pinning the md5 sums that torchvision also pins). PNG files
  ``images_<set>/<Alphabet>/characterNN/IIII_DD.png``, where ``IIII`` is the 1-based global character id
  (background 1..964, evaluation 965..1623) and ``DD`` the drawing 1..20. Any archive in that layout
  (e.g. ``images_background_small1.zip``) can be decoded with :func:`import_zip`.
* ``images_<set>.npz``: a NumPy mirror, arrays ``images`` bool (n, 20, 105, 105), True = white paper,
  and ``labels`` int64 (n, 20) = row index. Row ``c`` is global id ``c+1`` (background) or ``c+965``
  (evaluation), column ``d`` is drawing ``d+1``.

Layout. :func:`load_raw` returns one bool array (1623, 20, 105, 105), **True = ink**: background rows
first, then evaluation, so row ``c`` is the character with 1-based upstream id ``c+1``.

Checksums. Each set is verified on its *decoded* images, so the npz mirror and the upstream zips are
checked against the same constants: :data:`RAW_SHA256` holds the sha256 of ``np.packbits(ink)``, the ink
array of the set (characters, drawings, rows, cols) packed in C order. Downloads are additionally checked
against the upstream md5 sums by pooch.

Preprocessing (:func:`preprocess`; the name is part of every env's protocol). Each 105x105 drawing
becomes 28x28 uint8, ink bright (255) on black (0). :data:`PREPROCESSINGS` maps each name to the
sha256 of the resulting (1623, 20, 28, 28) tensor's bytes.

* ``"pillow-nearest-105to28-ink255"`` (:data:`PREPROCESSING`, env version 1 onwards): the reference
  pipeline of Prototypical Networks, MAML and Reptile, which open the 1-bit PNG with Pillow and
  resize it to 28x28; Pillow resizes 1-bit images by nearest neighbour, sampling input row (and
  column) ``floor(3.75 * i + 1.875)`` for output ``i``, so pixels stay binary (0 or 255). That grid
  is symmetric (sample ``i`` and ``27 - i`` lie equally far from the edges), so resizing commutes
  with the quarter-turn rotations that make classes: a rotated class is the rotated 28x28 image,
  pixel for pixel Pillow's ``rotate`` then ``resize``.
* ``"area-105to28-ink255"`` (deprecated, env version 0): an anti-aliased area filter, PyTorch's
  ``interpolate(mode="area")``, i.e. adaptive average pooling, where output pixel ``i`` averages
  input rows (and likewise columns) ``floor(i*105/28)`` .. ``ceil((i+1)*105/28) - 1``, turned into
  an integer exactly: ``value = floor(255 * ink_count / window_area + 1/2)`` (halves round up),
  computed in integer arithmetic so the result is bit-identical on every platform.

Cache. :func:`prepare` writes ``omniglot-<preprocessing>.pt`` into :func:`cache_dir`
(``$METABENCH_CACHE``, else the user cache folder from ``pooch.os_cache("metabench")``): a
``torch.save`` of ``{"images", "sha256", "preprocessing", "raw_sha256"}``, written to a temporary file
and renamed into place, so a crash never leaves a partial cache. :func:`load_omniglot` reads it, checks
its hash, rebuilds it when it is missing or corrupt, and shares one tensor per (cache file, device).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pooch
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

__all__ = [
    "CACHE_ENV_VAR",
    "DATA_ENV_VAR",
    "IMAGE_SIZE",
    "N_BACKGROUND",
    "N_CHARACTERS",
    "N_DRAWINGS",
    "PREPROCESSED_SHA256",
    "PREPROCESSING",
    "PREPROCESSINGS",
    "RAW_SHA256",
    "RAW_SIZE",
    "DataError",
    "cache_dir",
    "check_preprocessing",
    "data_dir",
    "download",
    "import_zip",
    "load_omniglot",
    "load_raw",
    "nearest_rows",
    "prepare",
    "preprocess",
    "verify",
]

DATA_ENV_VAR = "METABENCH_DATA"
CACHE_ENV_VAR = "METABENCH_CACHE"
PREPROCESSING = "pillow-nearest-105to28-ink255"

N_CHARACTERS = 1623
N_BACKGROUND = 964
N_DRAWINGS = 20
RAW_SIZE = 105
IMAGE_SIZE = 28

RAW_SHA256 = {
    "background": "a4cdfca3d0861188c5180d20bbc68a0ee600423b4a756a2667518f7b510c8756",
    "evaluation": "50251c4711ef2ec634c728940e2c2593eb84ab5a4bd10f6c243bb80c6793b1bf",
}
#: sha256 of the preprocessed (1623, 20, 28, 28) uint8 tensor, per preprocessing name.
PREPROCESSINGS = {
    "pillow-nearest-105to28-ink255": "2f8ac755e5c32f72b9131750fbf552d1c169968f553c1f433e9188fdc27c75bd",
    "area-105to28-ink255": "5ba1e5a7e62ca0a1f9f05bb47d009e20e54f1ad984320d38b6e206837a2c8226",
}
PREPROCESSED_SHA256 = PREPROCESSINGS[PREPROCESSING]

_SETS = {"background": slice(0, N_BACKGROUND), "evaluation": slice(N_BACKGROUND, N_CHARACTERS)}
_UPSTREAM_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
_UPSTREAM_MD5 = {
    "background": "md5:68d2efa1b9178cc56df9314c21c6e718",
    "evaluation": "md5:6b91aef0f799c5bb55b94e3f2daec811",
}
_DOWNLOAD_RETRIES = 3
_CHUNK = 1024  # drawings per preprocessing batch: ~45 MB of float32 at a time
_PNG_NAME = re.compile(r"(?:^|/)(\d{4})_(\d{2})\.png$")
# What reading a damaged npz / zip / PNG raises (PIL's decoding errors are OSErrors).
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)

_MEMO: dict[tuple[Path, str], torch.Tensor] = {}
_MEMO_LOCK = threading.Lock()


class DataError(RuntimeError):
    """Raised with a clear, actionable message when data is missing, corrupt or incomplete."""


def data_dir(root: str | os.PathLike | None = None) -> Path | None:
    """The folder holding the raw files: ``root`` if given, else ``$METABENCH_DATA``, else None."""
    env = os.environ.get(DATA_ENV_VAR)
    folder = Path(root).expanduser() if root is not None else Path(env).expanduser() if env else None
    if folder is not None and folder.exists() and not folder.is_dir():
        where = "--root" if root is not None else f"${DATA_ENV_VAR}"
        raise DataError(f"{where} {folder} is a file; expected the folder holding the Omniglot zips or npz files")
    return folder


def cache_dir() -> Path:
    """The folder of the preprocessed cache (and of downloads): ``$METABENCH_CACHE``, else the user
    cache folder for "metabench". Created on demand."""
    env = os.environ.get(CACHE_ENV_VAR)
    folder = Path(env).expanduser() if env else Path(pooch.os_cache("metabench"))
    where = f"${CACHE_ENV_VAR} ({folder})" if env else f"the cache folder {folder}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"{where} cannot be created ({error.strerror}); set ${CACHE_ENV_VAR} to a writable folder"
        ) from None
    if not folder.is_dir():
        raise DataError(f"{where} is not a folder; set ${CACHE_ENV_VAR} to a writable folder")
    return folder


def download(dest: str | os.PathLike | None = None) -> Path:
    """Download the official ``images_background.zip`` and ``images_evaluation.zip`` into ``dest``
    (default ``cache_dir()/"raw"``) and return that folder.

    Uses pooch (progress bar, md5 check, retries); files already there with the right md5 are kept.
    """
    folder = Path(dest).expanduser() if dest is not None else cache_dir() / "raw"
    fetcher = pooch.create(
        path=folder,
        base_url=_UPSTREAM_URL,
        registry={f"images_{name}.zip": md5 for name, md5 in _UPSTREAM_MD5.items()},
        retry_if_failed=_DOWNLOAD_RETRIES,
    )
    for fname in fetcher.registry:
        try:
            fetcher.fetch(fname, progressbar=True)
        except (OSError, ValueError) as exc:  # requests' errors are OSErrors; a bad md5 is a ValueError
            raise DataError(
                f"could not download {fetcher.get_url(fname)} into {folder} ({type(exc).__name__}: {exc}). "
                f"Check the connection and try again, or fetch the official Omniglot files by hand and set "
                f"{DATA_ENV_VAR} to their folder."
            ) from exc
    return folder


def load_raw(root: str | os.PathLike | None = None, *, download_if_missing: bool = False) -> np.ndarray:
    """All 1623 x 20 drawings as a verified bool array (1623, 20, 105, 105), True = ink.

    Looks for ``images_<set>.npz`` or ``images_<set>.zip`` in :func:`data_dir` (``root``), then in
    ``cache_dir()/"raw"`` (where :func:`download` puts them). Raises DataError if a file is unreadable,
    incomplete or fails its checksum, or if none is found and ``download_if_missing`` is false.
    """
    return _load_raw(root, download_if_missing)[0]


def import_zip(path: str | os.PathLike, expected_set: str | None = None) -> tuple[str, np.ndarray, np.ndarray]:
    """Decode an upstream Omniglot zip of PNGs (``images_background.zip``, ``images_evaluation.zip``,
    ``images_background_small1.zip``, ...).

    Returns ``(set_name, ink, ids)``: the set ("background" or "evaluation", from the character ids),
    a bool array (n, 20, 105, 105) with True = ink, and the global 0-based character ids (n,), ascending.
    Raises DataError if the archive is unreadable, mixes sets, is not ``expected_set``, or if any of its
    characters lacks one of its 20 drawings.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _png_members(archive, path)
            ids = np.array(sorted({cid for cid, _ in members}), dtype=np.int64)
            set_name = _set_of(ids, path)
            if expected_set is not None and set_name != expected_set:
                raise _corrupt(path, f"holds {set_name} characters, expected {expected_set} ones")
            row = {cid: r for r, cid in enumerate(ids.tolist())}
            for cid in row:
                missing = [d for d in range(1, N_DRAWINGS + 1) if (cid, d) not in members]
                if missing:
                    raise _corrupt(path, f"character {cid + 1:04d} lacks drawing(s) {missing} (missing PNG files)")
            ink = np.empty((len(ids), N_DRAWINGS, RAW_SIZE, RAW_SIZE), dtype=bool)
            for (cid, drawing), info in tqdm(sorted(members.items()), desc=f"Decoding {path.name}", unit="png"):
                with Image.open(io.BytesIO(archive.read(info))) as image:
                    if image.size != (RAW_SIZE, RAW_SIZE):
                        raise _corrupt(path, f"{info.filename} is {image.size[0]}x{image.size[1]}, expected 105x105")
                    # "L" maps 1-bit pixels to 0 (ink) / 255 (paper) exactly; "1" would dither other modes.
                    ink[row[cid], drawing - 1] = np.asarray(image.convert("L")) < 128
    except _READ_ERRORS as exc:
        raise _corrupt(path, f"cannot be read ({type(exc).__name__}: {exc})") from exc
    return set_name, ink, ids


def check_preprocessing(preprocessing: str) -> str:
    """``preprocessing`` if this metabench provides it, else a ValueError naming those it does."""
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(
            f"preprocessing {preprocessing!r} is not available; this metabench provides {list(PREPROCESSINGS)}"
        )
    return preprocessing


def preprocess(raw_ink: np.ndarray, preprocessing: str = PREPROCESSING) -> torch.Tensor:
    """Downscale bool drawings (n, d, 105, 105), True = ink, to uint8 (n, d, 28, 28), ink = 255.

    ``preprocessing`` is one of :data:`PREPROCESSINGS` (see the module docstring). Works in batches so
    memory stays bounded.
    """
    check_preprocessing(preprocessing)
    if raw_ink.dtype != np.bool_ or raw_ink.ndim != 4 or raw_ink.shape[2:] != (RAW_SIZE, RAW_SIZE):
        raise ValueError(f"expected a bool array (n, d, 105, 105), got {raw_ink.dtype} {raw_ink.shape}")
    n, d = raw_ink.shape[:2]
    flat = torch.from_numpy(np.ascontiguousarray(raw_ink)).reshape(n * d, 1, RAW_SIZE, RAW_SIZE)
    if preprocessing == "pillow-nearest-105to28-ink255":
        rows = nearest_rows(RAW_SIZE, IMAGE_SIZE)
        return (flat[:, :, rows][..., rows].to(torch.uint8) * 255).reshape(n, d, IMAGE_SIZE, IMAGE_SIZE)
    sizes = _window_sizes(RAW_SIZE, IMAGE_SIZE)
    area = sizes[:, None] * sizes[None, :]
    out = torch.empty(n * d, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    for start in range(0, n * d, _CHUNK):
        mean = F.interpolate(flat[start : start + _CHUNK].float(), size=(IMAGE_SIZE, IMAGE_SIZE), mode="area")
        count = (mean * area).round_().to(torch.int64)  # exact ink counts: errors are ~1e-6 of a pixel
        out[start : start + _CHUNK] = (count * 510 + area) // (2 * area)  # floor(255 * count / area + 1/2)
    return out.reshape(n, d, IMAGE_SIZE, IMAGE_SIZE)


def nearest_rows(n_in: int, n_out: int) -> torch.Tensor:
    """Input rows Pillow's nearest-neighbour resize samples: ``floor((i + 1/2) * n_in / n_out)``, exactly."""
    return (torch.arange(n_out) * 2 + 1) * n_in // (2 * n_out)


def prepare(
    root: str | os.PathLike | None = None,
    *,
    download_if_missing: bool = False,
    force: bool = False,
    preprocessing: str = PREPROCESSING,
) -> Path:
    """Build the preprocessed cache file unless a valid one exists (or ``force``); return its path.

    Decodes and verifies the raw data (:func:`load_raw`), preprocesses it, checks the result against
    :data:`PREPROCESSINGS` and writes the cache atomically (temporary file + rename).
    """
    path = _cache_path(check_preprocessing(preprocessing))
    if not force and _read_cache(path, preprocessing)[0] is not None:
        return path
    images = preprocess(load_raw(root, download_if_missing=download_if_missing), preprocessing)
    digest = _sha256(images.numpy())
    if digest != PREPROCESSINGS[preprocessing]:
        raise DataError(_mismatch_message(digest, preprocessing))
    save_atomic(
        {"images": images, "sha256": digest, "preprocessing": preprocessing, "raw_sha256": dict(RAW_SHA256)}, path
    )
    return path


def verify(root: str | os.PathLike | None = None) -> dict:
    """Re-decode the raw files, re-check every checksum (raw sets, every preprocessing, caches if present)
    and return a report; raises DataError on the first failure."""
    raw, sources = _load_raw(root, download_if_missing=False)
    report: dict[str, Any] = {"sources": {name: str(source) for name, source in sources.items()}}
    report["raw_sha256"] = dict(RAW_SHA256)
    report["preprocessings"] = {}
    for preprocessing, expected in PREPROCESSINGS.items():
        digest = _sha256(preprocess(raw, preprocessing).numpy())
        if digest != expected:
            raise DataError(_mismatch_message(digest, preprocessing))
        path = _cache_path(preprocessing)
        images, problem = _read_cache(path, preprocessing)
        if images is None and path.exists():
            raise DataError(f"the Omniglot cache {path} is invalid ({problem}); delete it or run prepare(force=True)")
        report["preprocessings"][preprocessing] = {
            "preprocessed_sha256": digest,
            "cache": str(path),
            "cache_status": "missing" if images is None else "ok",
        }
    return report


def load_omniglot(
    root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    download_if_missing: bool = False,
    preprocessing: str = PREPROCESSING,
) -> torch.Tensor:
    """The preprocessed images, uint8 (1623, 20, 28, 28), ink = 255, on ``device``.

    Reads the cache of ``preprocessing`` and checks its hash; a missing cache is built and a corrupt one
    rebuilt (with a warning) by :func:`prepare`; ``root`` and ``download_if_missing`` only matter then.
    The tensor is memoised per (cache file, device) so that every environment in the process shares it:
    treat it as read-only.
    """
    path = _cache_path(check_preprocessing(preprocessing)).resolve()
    dev = torch.device(device)
    with _MEMO_LOCK:
        key = (path, str(dev))
        if key not in _MEMO:
            cpu_key = (path, "cpu")
            if cpu_key not in _MEMO:
                _MEMO[cpu_key] = _load_or_rebuild(path, preprocessing, root, download_if_missing)
            moved = _MEMO[cpu_key].to(dev)
            _MEMO[key] = _MEMO.setdefault((path, str(moved.device)), moved)  # "cuda" and "cuda:0" share one copy
        return _MEMO[key]


def _load_or_rebuild(
    path: Path, preprocessing: str, root: str | os.PathLike | None, download_if_missing: bool
) -> torch.Tensor:
    images, problem = _read_cache(path, preprocessing)
    if images is not None:
        return images
    existed = path.exists()
    prepare(root, download_if_missing=download_if_missing, force=True, preprocessing=preprocessing)
    images, new_problem = _read_cache(path, preprocessing)
    if images is None:
        raise DataError(f"the rebuilt Omniglot cache {path} is still invalid ({new_problem})")
    if existed:
        warnings.warn(f"the Omniglot cache {path} was invalid ({problem}); it was rebuilt", stacklevel=3)
    return images


def _load_raw(root: str | os.PathLike | None, download_if_missing: bool) -> tuple[np.ndarray, dict[str, Path]]:
    sources = _find_sources(root)
    if len(sources) < len(_SETS) and download_if_missing:
        download()
        sources = _find_sources(root)
    if len(sources) < len(_SETS):
        raise DataError(_missing_message(root, sources))
    raw = np.empty((N_CHARACTERS, N_DRAWINGS, RAW_SIZE, RAW_SIZE), dtype=bool)
    for name, path in sources.items():
        raw[_SETS[name]] = _decode_set(name, path)
    return raw, sources


def _search_folders(root: str | os.PathLike | None) -> list[Path]:
    folder = data_dir(root)
    return ([folder] if folder is not None else []) + [cache_dir() / "raw"]


def _find_sources(root: str | os.PathLike | None) -> dict[str, Path]:
    """For each set, the first of ``images_<set>.npz`` / ``.zip`` found in the search folders."""
    sources = {}
    for name in _SETS:
        candidates = (folder / f"images_{name}.{ext}" for folder in _search_folders(root) for ext in ("npz", "zip"))
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is not None:
            sources[name] = found
    return sources


def _decode_set(name: str, path: Path) -> np.ndarray:
    """The verified ink array (n, 20, 105, 105) of one set, from an npz mirror or an upstream zip."""
    n = _SETS[name].stop - _SETS[name].start
    shape = (n, N_DRAWINGS, RAW_SIZE, RAW_SIZE)
    if path.suffix == ".zip":
        ink = import_zip(path, expected_set=name)[1]
        if len(ink) != n:
            raise _corrupt(path, f"holds {len(ink)} of the {n} {name} characters (incomplete archive)")
    else:
        try:
            with np.load(path, allow_pickle=False) as npz:
                paper, labels = npz["images"], npz["labels"]
        except _READ_ERRORS as exc:
            raise _corrupt(path, f"cannot be read ({type(exc).__name__}: {exc})") from exc
        if paper.dtype != np.bool_ or paper.shape != shape:
            raise _corrupt(path, f"'images' is {paper.dtype} {paper.shape}, expected bool {shape}")
        if labels.shape != shape[:2] or not (labels == np.arange(n)[:, None]).all():
            raise _corrupt(path, f"'labels' is not the row index 0..{n - 1} of shape {shape[:2]}")
        ink = np.logical_not(paper, out=paper)
    digest = _sha256(np.packbits(ink))
    if digest != RAW_SHA256[name]:
        raise _corrupt(
            path, f"the decoded {name} images fail their checksum (sha256 {digest}, expected {RAW_SHA256[name]})"
        )
    return ink


def _png_members(archive: zipfile.ZipFile, path: Path) -> dict[tuple[int, int], zipfile.ZipInfo]:
    """Map (0-based character id, drawing 1..20) to the archive member ``.../IIII_DD.png``."""
    members: dict[tuple[int, int], zipfile.ZipInfo] = {}
    for info in archive.infolist():
        match = _PNG_NAME.search(info.filename)
        if match is None or "__MACOSX" in info.filename:
            continue
        key = (int(match[1]) - 1, int(match[2]))
        if not 1 <= key[1] <= N_DRAWINGS:
            raise _corrupt(path, f"{info.filename}: drawing number {key[1]} is outside 1..{N_DRAWINGS}")
        if key in members:
            raise _corrupt(path, f"{info.filename} duplicates {members[key].filename}")
        members[key] = info
    if not members:
        raise _corrupt(path, "holds no Omniglot PNG files (IIII_DD.png)")
    return members


def _set_of(ids: np.ndarray, path: Path) -> str:
    for name, rows in _SETS.items():
        if rows.start <= ids[0] and ids[-1] < rows.stop:
            return name
    raise _corrupt(
        path, f"character ids {ids[0] + 1}..{ids[-1] + 1} are not all background (1..964) or all evaluation (965..1623)"
    )


def _window_sizes(n_in: int, n_out: int) -> torch.Tensor:
    """Sizes of the adaptive-average-pooling windows: [floor(i*n_in/n_out), ceil((i+1)*n_in/n_out))."""
    i = torch.arange(n_out)
    return -((-(i + 1) * n_in) // n_out) - (i * n_in) // n_out


def _cache_path(preprocessing: str) -> Path:
    return cache_dir() / f"omniglot-{preprocessing}.pt"


def _read_cache(path: Path, preprocessing: str) -> tuple[torch.Tensor | None, str]:
    """The cached images if the file is a complete, untampered cache; else None and the reason."""
    if not path.is_file():
        return None, "missing"
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file can fail anywhere in the unpickler or zip reader
        return None, f"unreadable: {type(exc).__name__}: {str(exc)[:200]}"
    if not isinstance(content, dict) or content.get("preprocessing") != preprocessing:
        return None, f"not a {preprocessing!r} cache"
    images = content.get("images")
    shape = (N_CHARACTERS, N_DRAWINGS, IMAGE_SIZE, IMAGE_SIZE)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or tuple(images.shape) != shape:
        return None, f"its images are not a uint8 tensor of shape {shape}"
    digest = _sha256(images.contiguous().numpy())
    expected = PREPROCESSINGS[preprocessing]
    if digest != content.get("sha256") or digest != expected:
        return None, f"content sha256 {digest} differs from the expected {expected}"
    return images, ""


def save_atomic(content: dict, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename it over ``path``.

    The temporary name is unique per process and thread, so concurrent builders never share one (see
    :func:`temporary_path`). The content is serialised in memory first, so that a failed write (a full disk)
    raises the file system's ``OSError`` (torch.save would wrap it in a ``RuntimeError``) and leaves ``path``
    as it was.
    """
    buffer = io.BytesIO()
    torch.save(content, buffer)
    write_atomic(buffer.getbuffer(), path)


def temporary_path(path: Path) -> Path:
    """The temporary file :func:`write_atomic` writes before renaming it to ``path``: ``.NAME.PID-THREAD.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def write_atomic(content: bytes | memoryview, path: Path) -> None:
    """Write ``content`` to a temporary file beside ``path``, sync it, then rename it over ``path``: ``path`` is
    always either its old or its new content, and a failed write removes the temporary file."""
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None and error.strerror is not None:
            raise type(error)(error.errno, error.strerror, str(path)) from error  # say which file failed
        raise


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


def _corrupt(path: Path, problem: str) -> DataError:
    return DataError(
        f"{path}: {problem}. The file is damaged, incomplete or not the official Omniglot data: delete it and "
        f"download it again (`metabench data prepare --download`), or set {DATA_ENV_VAR} to a folder with intact "
        f"images_background/images_evaluation .npz or .zip files."
    )


def _missing_message(root: str | os.PathLike | None, found: dict[str, Path]) -> str:
    missing = [f"images_{name}.npz/.zip" for name in _SETS if name not in found]
    folders = ", ".join(str(folder) for folder in _search_folders(root))
    return (
        f"Omniglot data not found: missing {' and '.join(missing)} (looked in: {folders}). Either set "
        f"{DATA_ENV_VAR}=/folder/with/the/files, pass root='/folder/with/the/files', or run "
        f"`metabench data prepare --download` (or pass download_if_missing=True) to download the official zips "
        f"(about 16 MB) into {cache_dir() / 'raw'}."
    )


def _mismatch_message(digest: str, preprocessing: str) -> str:
    return (
        f"preprocessing the verified raw data gave sha256 {digest}, not the expected {PREPROCESSINGS[preprocessing]}: "
        f"this platform does not reproduce the {preprocessing!r} protocol (torch {torch.__version__}); "
        f"please report it. No cache was written."
    )
