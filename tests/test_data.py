"""Tests of metabench.data: Omniglot decoding, verification, preprocessing and the tensor cache."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pooch
import pytest
import requests
import torch
import torch.nn.functional as F
from PIL import Image

from metabench import data

BACKGROUND_URL = "https://github.com/brendenlake/omniglot/raw/master/python/images_background.zip"
EVALUATION_URL = "https://github.com/brendenlake/omniglot/raw/master/python/images_evaluation.zip"
CACHE_NAME = f"omniglot-{data.PREPROCESSING}.pt"
AREA = "area-105to28-ink255"  # env version 0's preprocessing
# Alphabets of images_background_small1.zip, 1-based inclusive id blocks (from the data folder's README).
SMALL1_BLOCKS = {"Balinese": (108, 131), "Early_Aramaic": (251, 272), "Greek": (394, 417), "Korean": (643, 682),
                 "Latin": (683, 708)}  # fmt: skip


def tensor_sha256(images: torch.Tensor) -> str:
    return hashlib.sha256(images.numpy().tobytes()).hexdigest()


def files_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


@pytest.fixture(autouse=True)
def forget_loaded_tensors():
    """Each test starts without memoised tensors, so none leaks from one test's cache folder to another."""
    data._MEMO.clear()
    yield
    data._MEMO.clear()


@pytest.fixture(scope="session")
def built_cache(tmp_path_factory: pytest.TempPathFactory, omniglot_dir: Path) -> Path:
    """A cache folder holding the full preprocessed cache, built once per session from the npz files."""
    folder = tmp_path_factory.mktemp("built-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(data.CACHE_ENV_VAR, str(folder))
        data.prepare(omniglot_dir)
    return folder


@pytest.fixture
def cache_env(monkeypatch: pytest.MonkeyPatch, built_cache: Path) -> Path:
    monkeypatch.setenv(data.CACHE_ENV_VAR, str(built_cache))
    return built_cache


@pytest.fixture
def empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(data.CACHE_ENV_VAR, str(folder))
    return folder


@pytest.fixture(scope="module")
def background_paper(omniglot_dir: Path) -> np.ndarray:
    """The background npz images as stored: True = white paper."""
    with np.load(omniglot_dir / "images_background.npz") as npz:
        return npz["images"]


def data_folder(tmp_path: Path, omniglot_dir: Path, **replacements: Path) -> Path:
    """A data folder linking the real npz files, with some sets replaced (name -> file to link instead)."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("background", "evaluation"):
        source = replacements.get(name, omniglot_dir / f"images_{name}.npz")
        (folder / f"images_{name}{source.suffix}").symlink_to(source)
    return folder


# --- the fast path --------------------------------------------------------------------------------------------


def test_load_omniglot_gives_the_verified_tensor_and_memoises_it(cache_env: Path, background_paper: np.ndarray):
    images = data.load_omniglot()
    assert images.shape == (data.N_CHARACTERS, data.N_DRAWINGS, data.IMAGE_SIZE, data.IMAGE_SIZE) == (1623, 20, 28, 28)
    assert images.dtype == torch.uint8 and images.device.type == "cpu"
    assert int(images.min()) == 0 and int(images.max()) == 255
    assert 10 < images.float().mean() < 40  # ink is bright on a dark background: about 8% ink
    assert images[..., 0, :].float().mean() < 1  # the top rows are (almost) empty paper, i.e. black
    assert tensor_sha256(images) == data.PREPROCESSED_SHA256
    # Row c is background character id c+1: it equals the preprocessed npz row.
    for row in (0, 107, 963):
        assert torch.equal(images[row], data.preprocess(~background_paper[row : row + 1])[0])
    assert data.load_omniglot() is images
    assert data.load_omniglot(device=torch.device("cpu")) is images


def test_evaluation_rows_follow_background_rows(cache_env: Path, omniglot_dir: Path):
    images = data.load_omniglot()
    with np.load(omniglot_dir / "images_evaluation.npz") as npz:
        paper = npz["images"][[0, 658]]
    assert torch.equal(images[[964, 1622]], data.preprocess(~paper))


def test_cache_file_content(cache_env: Path):
    content = torch.load(cache_env / CACHE_NAME, weights_only=True)
    assert set(content) == {"images", "sha256", "preprocessing", "raw_sha256"}
    assert content["preprocessing"] == data.PREPROCESSING
    assert content["sha256"] == tensor_sha256(content["images"]) == data.PREPROCESSED_SHA256
    assert content["raw_sha256"] == data.RAW_SHA256
    assert files_in(cache_env) == [cache_env / CACHE_NAME]  # no temporary file left beside it


def test_prepare_keeps_a_valid_cache(cache_env: Path, omniglot_dir: Path):
    before = (cache_env / CACHE_NAME).stat().st_mtime_ns
    assert data.prepare(omniglot_dir) == cache_env / CACHE_NAME
    assert (cache_env / CACHE_NAME).stat().st_mtime_ns == before


def test_verify_reports_every_checksum(cache_env: Path, omniglot_dir: Path):
    report = data.verify(omniglot_dir)
    assert set(report) == {"sources", "raw_sha256", "preprocessings"}
    assert report["raw_sha256"] == data.RAW_SHA256
    assert report["preprocessings"] == {
        # only the default preprocessing's cache was built in this folder
        data.PREPROCESSING: {
            "preprocessed_sha256": data.PREPROCESSED_SHA256,
            "cache": str(cache_env / CACHE_NAME),
            "cache_status": "ok",
        },
        AREA: {
            "preprocessed_sha256": data.PREPROCESSINGS[AREA],
            "cache": str(cache_env / f"omniglot-{AREA}.pt"),
            "cache_status": "missing",
        },
    }
    assert report["sources"] == {
        "background": str(omniglot_dir / "images_background.npz"),
        "evaluation": str(omniglot_dir / "images_evaluation.npz"),
    }


def test_data_and_cache_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    assert data.data_dir() is None
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "env"))
    assert data.data_dir() == tmp_path / "env"
    assert data.data_dir(tmp_path / "arg") == tmp_path / "arg"  # root wins over the variable
    monkeypatch.setenv(data.CACHE_ENV_VAR, str(tmp_path / "a" / "cache"))
    assert data.cache_dir() == tmp_path / "a" / "cache" and data.cache_dir().is_dir()


# --- the upstream zip importer --------------------------------------------------------------------------------


def test_import_small1_zip_matches_the_npz(omniglot_dir: Path, background_paper: np.ndarray):
    set_name, ink, ids = data.import_zip(omniglot_dir / "images_background_small1.zip")
    expected_ids = np.concatenate([np.arange(first - 1, last) for first, last in SMALL1_BLOCKS.values()])
    assert set_name == "background"
    assert ids.tolist() == expected_ids.tolist() and len(ids) == 136
    assert ids[:24].tolist() == list(range(107, 131))  # Balinese, ids 0108..0131
    assert ink.shape == (136, 20, 105, 105) and ink.dtype == bool
    assert 0.03 < ink.mean() < 0.15  # ink is the minority: the PNG's white paper became False
    assert np.array_equal(ink, ~background_paper[ids])  # bit for bit


def test_import_zip_refuses_the_wrong_set(omniglot_dir: Path):
    with pytest.raises(data.DataError, match="holds background characters, expected evaluation"):
        data.import_zip(omniglot_dir / "images_background_small1.zip", expected_set="evaluation")


def copy_zip(source: Path, dest: Path, *, drop: str | None = None, replace: dict[str, bytes] | None = None) -> Path:
    """Copy a zip member by member, leaving out the member ending in ``drop`` and replacing some contents."""
    replace = replace or {}
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            if drop is None or not info.filename.endswith(drop):
                out.writestr(info, replace.get(info.filename, src.read(info)))
    return dest


def test_zip_with_a_missing_png_is_refused(tmp_path: Path, omniglot_dir: Path, empty_cache: Path):
    broken = copy_zip(omniglot_dir / "images_background_small1.zip", tmp_path / "images_background.zip",
                      drop="0108_05.png")  # fmt: skip
    with pytest.raises(data.DataError, match=r"character 0108 lacks drawing\(s\) \[5\]"):
        data.import_zip(broken)
    folder = data_folder(tmp_path, omniglot_dir, background=broken)
    with pytest.raises(data.DataError, match=r"images_background\.zip: character 0108 lacks") as error:
        data.load_omniglot(folder)
    assert "delete it" in str(error.value) and data.DATA_ENV_VAR in str(error.value)
    assert files_in(empty_cache) == []


def test_zip_with_a_truncated_png_is_refused(tmp_path: Path, omniglot_dir: Path):
    source = omniglot_dir / "images_background_small1.zip"
    with zipfile.ZipFile(source) as archive:
        name = next(n for n in archive.namelist() if n.endswith("0394_01.png"))
        png = archive.read(name)
    broken = copy_zip(source, tmp_path / "broken.zip", replace={name: png[: len(png) // 2]})
    with pytest.raises(data.DataError, match=r"broken\.zip: cannot be read"):
        data.import_zip(broken)


def test_garbage_zip_is_refused(tmp_path: Path):
    garbage = tmp_path / "images_evaluation.zip"
    garbage.write_bytes(b"not a zip file" * 100)
    with pytest.raises(data.DataError, match=r"images_evaluation\.zip: cannot be read \(BadZipFile"):
        data.import_zip(garbage)


# --- the preprocessing filter ---------------------------------------------------------------------------------


@pytest.mark.parametrize("preprocessing", list(data.PREPROCESSINGS))
def test_preprocess_full_and_empty_images(preprocessing: str):
    raw = np.zeros((1, 2, 105, 105), dtype=bool)
    raw[0, 0] = True
    out = data.preprocess(raw, preprocessing)
    assert out.shape == (1, 2, 28, 28) and out.dtype == torch.uint8
    assert bool((out[0, 0] == 255).all()) and bool((out[0, 1] == 0).all())


def test_the_default_preprocessing_is_pillows_nearest_neighbour_resize():
    assert data.PREPROCESSING == "pillow-nearest-105to28-ink255"
    assert data.PREPROCESSED_SHA256 == data.PREPROCESSINGS[data.PREPROCESSING]
    # Pillow samples input row/col floor((i + 1/2) * 105 / 28) = floor(3.75 i + 1.875), symmetric about the centre
    rows = [int((i + 0.5) * 105 / 28) for i in range(28)]
    assert rows[:3] == [1, 5, 9] and rows[-1] == 103
    assert data.nearest_rows(105, 28).tolist() == rows
    assert all(rows[i] + rows[27 - i] == 104 for i in range(28))
    rng = np.random.default_rng(0)
    raw = rng.random((3, 4, 105, 105)) < 0.3
    out = data.preprocess(raw).numpy()
    np.testing.assert_array_equal(out, raw[..., rows, :][..., rows].astype(np.uint8) * 255)
    assert set(np.unique(out).tolist()) == {0, 255}
    # ... and the same as Pillow's own resize of the 1-bit image (True = paper for Pillow)
    for c, d in ((0, 0), (2, 3)):
        resized = Image.fromarray(~raw[c, d]).resize((28, 28))
        assert resized.mode == "1"
        np.testing.assert_array_equal(out[c, d] == 255, ~np.asarray(resized, dtype=bool))


def test_unknown_preprocessing_is_refused():
    with pytest.raises(ValueError, match="preprocessing 'bilinear' is not available"):
        data.check_preprocessing("bilinear")
    with pytest.raises(ValueError, match="not available"):
        data.preprocess(np.zeros((1, 1, 105, 105), dtype=bool), "bilinear")
    with pytest.raises(ValueError, match="not available"):
        data.load_omniglot(preprocessing="bilinear")
    assert data.check_preprocessing(AREA) == AREA


def test_preprocess_matches_hand_computed_area_averages():
    # Output pixel i covers input rows/cols floor(i*105/28) .. ceil((i+1)*105/28)-1: window 0 is 0..3, window 1
    # is 3..7 (4x4 = 16, 4x5 = 20 and 5x5 = 25 pixel windows), so input row/col 3 belongs to windows 0 and 1.
    raw = np.zeros((3, 1, 105, 105), dtype=bool)
    raw[0, 0, 0:4, 0:4] = True  # a 4x4 ink block in the corner
    raw[1, 0, 0:2, 5] = True  # 2 ink pixels of the 4x5 window (0, 1) only: 255 * 2/20 = 25.5
    raw[2, 0, 0:2, 4:7] = True  # 6 ink pixels of the window (0, 1) only: 255 * 6/20 = 76.5
    out = data.preprocess(raw, AREA)[:, 0].numpy()
    expected = np.zeros((3, 28, 28), dtype=np.uint8)
    expected[0, 0, 0] = 255  # 16/16
    expected[0, 0, 1] = 51  # rows 0..3 x col 3: 4 of 20
    expected[0, 1, 0] = 51  # row 3 x cols 0..3: 4 of 20
    expected[0, 1, 1] = 10  # pixel (3, 3): 1 of 25 -> 10.2
    expected[1, 0, 1] = 26  # halves round up
    expected[2, 0, 1] = 77  # halves round up (a float round-half-even would give 76)
    np.testing.assert_array_equal(out, expected)


def test_preprocess_is_the_area_filter_on_random_images():
    rng = np.random.default_rng(0)
    raw = rng.random((3, 4, 105, 105)) < 0.3
    out = data.preprocess(raw, AREA).numpy().astype(np.int64)
    # Reference by explicit windows, in exact integer arithmetic.
    bounds = [(i * 105 // 28, -(-(i + 1) * 105 // 28)) for i in range(28)]
    expected = np.empty_like(out)
    for i, (r0, r1) in enumerate(bounds):
        for j, (c0, c1) in enumerate(bounds):
            count = raw[..., r0:r1, c0:c1].sum(axis=(-2, -1))
            area = (r1 - r0) * (c1 - c0)
            expected[..., i, j] = (510 * count + area) // (2 * area)
    np.testing.assert_array_equal(out, expected)
    # ... which is PyTorch's "area" interpolation, up to the rounding of the last half.
    area = F.interpolate(torch.from_numpy(raw).float().reshape(-1, 1, 105, 105), size=(28, 28), mode="area")
    assert float((area.reshape(out.shape) * 255 - torch.from_numpy(out)).abs().max()) <= 0.5 + 1e-4


def test_preprocess_rejects_non_boolean_input():
    with pytest.raises(ValueError, match="bool array"):
        data.preprocess(np.zeros((1, 20, 105, 105), dtype=np.uint8))


# --- damaged or missing raw data ------------------------------------------------------------------------------


def test_truncated_npz_is_refused_and_nothing_is_cached(tmp_path: Path, omniglot_dir: Path, empty_cache: Path):
    content = (omniglot_dir / "images_background.npz").read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(content[: len(content) // 2])
    folder = data_folder(tmp_path, omniglot_dir, background=truncated)
    with pytest.raises(data.DataError, match=r"images_background\.npz: cannot be read") as error:
        data.load_omniglot(folder)
    assert "delete it" in str(error.value) and "download" in str(error.value)
    with pytest.raises(data.DataError):
        data.prepare(folder)
    assert files_in(empty_cache) == []


def test_npz_with_one_flipped_pixel_fails_its_checksum(tmp_path: Path, omniglot_dir: Path, empty_cache: Path):
    with np.load(omniglot_dir / "images_evaluation.npz") as npz:
        paper, labels = npz["images"], npz["labels"]
    paper[100, 7, 50, 50] ^= True
    flipped = tmp_path / "flipped.npz"
    np.savez_compressed(flipped, images=paper, labels=labels)
    folder = data_folder(tmp_path, omniglot_dir, evaluation=flipped)
    with pytest.raises(data.DataError, match=r"images_evaluation\.npz: the decoded evaluation images fail their"):
        data.prepare(folder)
    assert files_in(empty_cache) == []


def test_npz_of_the_wrong_shape_is_refused(tmp_path: Path, omniglot_dir: Path, empty_cache: Path):
    small = tmp_path / "small.npz"
    np.savez_compressed(small, images=np.ones((3, 20, 105, 105), dtype=bool), labels=np.zeros((3, 20), np.int64))
    folder = data_folder(tmp_path, omniglot_dir, evaluation=small)
    with pytest.raises(data.DataError, match=r"'images' is bool \(3, 20, 105, 105\), expected bool \(659, 20"):
        data.load_raw(folder)
    assert files_in(empty_cache) == []


def test_missing_data_explains_the_three_ways_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, empty_cache: Path):
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    with pytest.raises(data.DataError, match="METABENCH_DATA") as error:
        data.load_omniglot()
    message = str(error.value)
    assert "root=" in message and "metabench data prepare --download" in message
    with pytest.raises(data.DataError, match=r"missing images_background\.npz/\.zip and images_evaluation"):
        data.load_raw(tmp_path / "nowhere")
    assert files_in(empty_cache) == []


# --- damaged cache --------------------------------------------------------------------------------------------


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).bytes(4096))


def damage_tamper(path: Path) -> None:
    content = torch.load(path, weights_only=True)
    content["images"] = content["images"].clone()
    content["images"][5, 5, 14, 14] ^= 1  # a changed pixel under the old, now stale, hash
    torch.save(content, path)


@pytest.mark.parametrize("damage", [damage_truncate, damage_garbage, damage_tamper])
def test_damaged_cache_is_rebuilt_with_a_warning(damage, built_cache: Path, empty_cache: Path, omniglot_dir: Path):
    empty_cache.mkdir()
    shutil.copy(built_cache / CACHE_NAME, empty_cache / CACHE_NAME)
    damage(empty_cache / CACHE_NAME)
    with pytest.warns(UserWarning, match=r"cache .* was invalid .* it was rebuilt"):
        images = data.load_omniglot(omniglot_dir)
    assert tensor_sha256(images) == data.PREPROCESSED_SHA256
    assert (empty_cache / CACHE_NAME).read_bytes() == (built_cache / CACHE_NAME).read_bytes()
    assert files_in(empty_cache) == [empty_cache / CACHE_NAME]


def test_prepare_refuses_a_result_that_differs_from_the_protocol(
    monkeypatch: pytest.MonkeyPatch, built_cache: Path, empty_cache: Path
):
    wrong = torch.load(built_cache / CACHE_NAME, weights_only=True)["images"].clone()
    wrong[0, 0, 0, 0] = 1
    monkeypatch.setattr(data, "load_raw", lambda *args, **kwargs: np.zeros((1, 1, 105, 105), dtype=bool))
    monkeypatch.setattr(data, "preprocess", lambda raw, preprocessing: wrong)
    with pytest.raises(data.DataError, match="does not reproduce the 'pillow-nearest-105to28-ink255' protocol"):
        data.load_omniglot()
    with pytest.raises(data.DataError, match="does not reproduce the 'area-105to28-ink255' protocol"):
        data.load_omniglot(preprocessing=AREA)
    assert files_in(empty_cache) == []


def test_each_preprocessing_has_its_own_cache(built_cache: Path, empty_cache: Path, omniglot_dir: Path):
    area = data.load_omniglot(omniglot_dir, preprocessing=AREA)
    assert tensor_sha256(area) == data.PREPROCESSINGS[AREA] != data.PREPROCESSED_SHA256
    assert files_in(empty_cache) == [empty_cache / f"omniglot-{AREA}.pt"]
    assert torch.load(empty_cache / f"omniglot-{AREA}.pt", weights_only=True)["preprocessing"] == AREA
    assert len(torch.unique(area)) > 2  # grey levels, unlike the binary default
    shutil.copy(built_cache / CACHE_NAME, empty_cache / CACHE_NAME)
    nearest = data.load_omniglot()
    assert tensor_sha256(nearest) == data.PREPROCESSED_SHA256 and set(torch.unique(nearest).tolist()) == {0, 255}
    assert data.load_omniglot(preprocessing=AREA) is area  # memoised per cache file


def test_a_crash_while_saving_leaves_no_partial_cache(
    monkeypatch: pytest.MonkeyPatch, built_cache: Path, empty_cache: Path
):
    images = torch.load(built_cache / CACHE_NAME, weights_only=True)["images"]
    monkeypatch.setattr(data, "load_raw", lambda *args, **kwargs: np.zeros((1, 1, 105, 105), dtype=bool))
    monkeypatch.setattr(data, "preprocess", lambda raw, preprocessing: images)

    def crashing_save(obj, file):
        file.write(b"half a cache")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="No space left"):
        data.prepare()
    assert files_in(empty_cache) == []


# --- download -------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_http(monkeypatch: pytest.MonkeyPatch, omniglot_dir: Path) -> list[tuple[str, bool]]:
    """Serve the small official zip for every URL instead of the network; the first request fails."""
    small = omniglot_dir / "images_background_small1.zip"
    md5 = "md5:" + hashlib.md5(small.read_bytes()).hexdigest()
    monkeypatch.setattr(data, "_UPSTREAM_MD5", {"background": md5, "evaluation": md5})
    monkeypatch.setattr(pooch.core.time, "sleep", lambda seconds: None)  # pooch waits between retries
    calls: list[tuple[str, bool]] = []

    def fake_call(self, url, output_file, pooch_object, check_only=False):
        calls.append((url, self.progressbar))
        if len(calls) == 1:
            raise requests.exceptions.ConnectionError("simulated dropped connection")
        shutil.copyfile(small, output_file)

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", fake_call)
    return calls


def test_download_fetches_the_official_zips_with_pooch(fake_http: list, tmp_path: Path, omniglot_dir: Path):
    dest = tmp_path / "raw"
    assert data.download(dest) == dest
    assert fake_http == [(BACKGROUND_URL, True), (BACKGROUND_URL, True), (EVALUATION_URL, True)]  # one retry
    small = (omniglot_dir / "images_background_small1.zip").read_bytes()
    assert [path.name for path in files_in(dest)] == ["images_background.zip", "images_evaluation.zip"]
    assert all(path.read_bytes() == small for path in files_in(dest))
    data.download(dest)  # files with the right md5 are not fetched again
    assert len(fake_http) == 3


def test_download_failure_is_a_data_error(monkeypatch: pytest.MonkeyPatch, fake_http: list, tmp_path: Path):
    def unreachable(self, url, output_file, pooch_object, check_only=False):
        raise requests.exceptions.ConnectionError("no route to host")

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", unreachable)
    with pytest.raises(data.DataError, match=f"could not download {BACKGROUND_URL}"):
        data.download(tmp_path)


def test_missing_data_is_downloaded_on_request(monkeypatch: pytest.MonkeyPatch, fake_http: list, empty_cache: Path):
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    # The fake server hands out the small archive, so the downloaded "full" set is found incomplete.
    with pytest.raises(data.DataError, match=r"raw/images_background\.zip: holds 136 of the 964 background"):
        data.load_omniglot(download_if_missing=True)
    assert [url for url, _ in fake_http] == [BACKGROUND_URL, BACKGROUND_URL, EVALUATION_URL]
    assert [path.name for path in files_in(empty_cache)] == ["images_background.zip", "images_evaluation.zip"]


# --- the full upstream format ---------------------------------------------------------------------------------


def write_upstream_zip(path: Path, set_name: str, paper: np.ndarray, first_id: int) -> None:
    """Write drawings (True = paper) as an upstream-style zip of 1-bit PNGs."""
    with zipfile.ZipFile(path, "w") as archive:
        for c, drawings in enumerate(paper):
            cid = first_id + c
            for d, image in enumerate(drawings):
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")  # a bool array becomes a 1-bit ("1") image
                folder = f"images_{set_name}/Alphabet_{cid // 40:02d}/character{cid % 40 + 1:02d}"
                archive.writestr(f"{folder}/{cid:04d}_{d + 1:02d}.png", buffer.getvalue())


@pytest.mark.slow
def test_full_upstream_zips_give_the_same_cache(tmp_path: Path, omniglot_dir: Path, empty_cache: Path):
    folder = tmp_path / "zips"
    folder.mkdir()
    for set_name, first_id in (("background", 1), ("evaluation", 965)):
        with np.load(omniglot_dir / f"images_{set_name}.npz") as npz:
            write_upstream_zip(folder / f"images_{set_name}.zip", set_name, npz["images"], first_id)
    assert data.verify(folder)["sources"]["evaluation"] == str(folder / "images_evaluation.zip")
    images = data.load_omniglot(folder)
    assert tensor_sha256(images) == data.PREPROCESSED_SHA256
