"""The built-in demo dataset: short clips with a ladder of real distortions, no downloads.

Scenes (in this order; ``n_scenes`` takes the first ones):

1. ``grace_hopper`` - the photograph shipped with matplotlib (``sample_data/grace_hopper.jpg``);
2. ``moving_shapes`` - generated: coloured shapes bouncing over a procedural texture;
3. ``china`` and 4. ``flower`` - the photographs shipped with scikit-learn
   (``sklearn/datasets/images``);
5. ``terrain`` - a hill-shaded rendering of the real elevation model shipped with matplotlib
   (``sample_data/jacksboro_fault_dem.npz``);
6. ``texture`` - generated: fractal noise quantised into coloured bands with dark outlines.

Each scene becomes a clip with camera motion (a slow pan and zoom over the picture), encoded
with H.264 (yuv420p) by PyAV. Every scene yields 16 clips: the pristine clip and five
distortions at three levels each:

==========  ====================================================  =========  ============
distortion  level 1 / 2 / 3                                        penalty    MOS at 1/2/3
==========  ====================================================  =========  ============
pristine    H.264 CRF 18, nothing else (level 0)                  0          5.0
blur        Gaussian blur, sigma 1 / 2 / 4 px (at 320 px width)   0.9/level  4.1 3.2 2.3
noise       additive Gaussian noise, std 6 / 14 / 28 (of 255)      0.8/level  4.2 3.4 2.6
h264        H.264 at CRF 36 / 42 / 48 instead of 18                1.0/level  4.0 3.0 2.0
dark        brightness times 0.6 / 0.35 / 0.18                     0.7/level  4.3 3.6 2.9
stutter     each frame held for 2 / 3 / 6 frames (frames dropped)   0.6/level  4.4 3.8 3.2
==========  ====================================================  =========  ============

**MOS rule** (scale 1-5): ``MOS = 5 - penalty(distortion) * level``. All clips but ``h264``
are encoded at CRF 18. The rule is deterministic and depends on the distortion only, not on
the scene, so a model must see through content to score well.

Files written in ``out_dir``: ``clips/<scene>__<distortion>_<level>.mp4`` (the pristine one is
``<scene>__pristine.mp4``; the file stem is the video id), ``labels.csv`` (the generic
``path,mos`` form plus ``scene,distortion,level,setting``; ``vqa-pipe manifest build demo
--root out_dir`` reads it), the manifest ``demo.csv`` and ``demo.json`` (the parameters; a
folder with a complete ``demo.json`` of the same parameters is not generated again).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from vqa_pipe.pipeline.errors import VqaPipeError

GENERATOR_VERSION = 1
SCENES: tuple[str, ...] = (
    "grace_hopper",
    "moving_shapes",
    "china",
    "flower",
    "terrain",
    "texture",
)
PRISTINE_CRF = 18
LEVELS: dict[str, tuple[float, float, float]] = {
    "blur": (1.0, 2.0, 4.0),  # Gaussian sigma in px at 320 px width (scaled with the width)
    "noise": (6.0, 14.0, 28.0),  # std of additive Gaussian noise, 8-bit units
    "h264": (36, 42, 48),  # x264 CRF
    "dark": (0.6, 0.35, 0.18),  # brightness factor
    "stutter": (2, 3, 6),  # each shown frame is held this many frames
}
PENALTY: dict[str, float] = {"blur": 0.9, "noise": 0.8, "h264": 1.0, "dark": 0.7, "stutter": 0.6}
CLIPS_PER_SCENE = 1 + sum(len(levels) for levels in LEVELS.values())
MANIFEST_NAME = "demo.csv"  # stem = dataset name, as manifests/<dataset>.csv
LABELS_NAME = "labels.csv"
PARAMS_NAME = "demo.json"
_LABEL_COLUMNS = (
    "video_id",
    "path",
    "mos",
    "scene",
    "distortion",
    "level",
    "setting",
    "width",
    "height",
    "fps",
    "duration_s",
    "n_frames",
)


class DemoError(VqaPipeError):
    """Bad demo parameters, or a folder that is not a demo folder."""


@dataclass(frozen=True)
class DemoClip:
    """One clip of the ladder."""

    scene: str
    distortion: str
    level: int

    @property
    def video_id(self) -> str:
        if self.distortion == "pristine":
            return f"{self.scene}__pristine"
        return f"{self.scene}__{self.distortion}_{self.level}"

    @property
    def setting(self) -> float:
        """The distortion's parameter at this level (the CRF for ``pristine``)."""
        if self.distortion == "pristine":
            return PRISTINE_CRF
        return LEVELS[self.distortion][self.level - 1]

    @property
    def mos(self) -> float:
        return demo_mos(self.distortion, self.level)


def demo_mos(distortion: str, level: int) -> float:
    """The documented MOS rule: ``5 - penalty(distortion) * level`` (1-5 scale)."""
    if distortion == "pristine":
        if level != 0:
            raise DemoError("the pristine clip has level 0")
        return 5.0
    if distortion not in PENALTY:
        raise DemoError(f"unknown distortion {distortion!r}; valid: pristine, {', '.join(PENALTY)}")
    if not 1 <= level <= len(LEVELS[distortion]):
        raise DemoError(f"{distortion} has levels 1..{len(LEVELS[distortion])}, not {level}")
    return round(5.0 - PENALTY[distortion] * level, 6)


def demo_clips(n_scenes: int, first_scene: int = 0) -> list[DemoClip]:
    """The ladder for ``n_scenes`` scenes from ``first_scene`` on, in file order."""
    _check_n_scenes(n_scenes, first_scene)
    clips = []
    for scene in SCENES[first_scene : first_scene + n_scenes]:
        clips.append(DemoClip(scene, "pristine", 0))
        for distortion, levels in LEVELS.items():
            clips.extend(DemoClip(scene, distortion, k) for k in range(1, len(levels) + 1))
    return clips


def _check_n_scenes(n_scenes: int, first_scene: int = 0) -> None:
    if not 0 <= first_scene < len(SCENES):
        raise DemoError(f"first_scene must be 0..{len(SCENES) - 1}, not {first_scene}")
    if not 1 <= n_scenes <= len(SCENES) - first_scene:
        raise DemoError(
            f"n_scenes must be 1..{len(SCENES) - first_scene} from scene {first_scene} "
            f"({', '.join(SCENES)}), not {n_scenes}"
        )


# --------------------------------------------------------------------------- scenes


def _sample_image(name: str) -> np.ndarray:
    from PIL import Image

    if name == "grace_hopper":
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    else:
        import sklearn

        path = Path(sklearn.__file__).parent / "datasets" / "images" / f"{name}.jpg"
    if not path.is_file():
        raise DemoError(f"demo scene {name!r}: {path}, shipped with its package, is missing")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _terrain_image() -> np.ndarray:
    import matplotlib
    from matplotlib import colormaps
    from matplotlib.colors import LightSource

    path = Path(matplotlib.get_data_path()) / "sample_data" / "jacksboro_fault_dem.npz"
    with np.load(path) as data:
        elevation = np.asarray(data["elevation"], dtype=np.float64)
    shaded = LightSource(azdeg=315, altdeg=40).shade(
        elevation, cmap=colormaps["gist_earth"], vert_exag=0.05, blend_mode="overlay"
    )
    return (np.clip(shaded[..., :3], 0.0, 1.0) * 255).round().astype(np.uint8)


def _fractal_noise(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Colour fractal noise in [0, 255], sum of upsampled random octaves."""
    from PIL import Image

    out = np.zeros((height, width, 3), dtype=np.float64)
    weight = 1.0
    for cells in (4, 8, 16, 32, 64, 128):
        small = rng.random((cells, max(2, cells * width // height), 3))
        layer = Image.fromarray((small * 255).astype(np.uint8)).resize(
            (width, height), Image.BICUBIC
        )
        out += weight * np.asarray(layer, dtype=np.float64)
        weight *= 0.55
    out -= out.min()
    out *= 255.0 / max(out.max(), 1e-9)
    return out.astype(np.uint8)


def _contour_texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Sharp-edged generated scene: fractal noise quantised into coloured bands with outlines."""
    field = _fractal_noise(height, width, rng)[..., 0].astype(np.float64) / 255.0
    bands = np.minimum((field * 14).astype(np.int64), 13)
    palette = rng.integers(40, 256, size=(14, 3)).astype(np.uint8)
    image = palette[bands]
    edge = np.zeros((height, width), dtype=bool)
    edge[:, 1:] |= bands[:, 1:] != bands[:, :-1]
    edge[1:, :] |= bands[1:, :] != bands[:-1, :]
    image[edge] = (20, 20, 20)
    return image


def _pan_zoom(
    image: np.ndarray, size: tuple[int, int], n_frames: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Frames of a slow pan and zoom over ``image`` (camera motion)."""
    from PIL import Image

    width, height = size
    src = Image.fromarray(image)
    src_h, src_w = image.shape[:2]
    aspect = width / height
    base_w = min(src_w, src_h * aspect)
    base_h = base_w / aspect
    zoom_in = bool(rng.integers(2))
    direction = rng.uniform(-1, 1, size=2)
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        zoom = 1.0 + 0.3 * (t if zoom_in else 1.0 - t)
        crop_w, crop_h = base_w / zoom, base_h / zoom
        slack_x, slack_y = (src_w - crop_w) / 2, (src_h - crop_h) / 2
        cx = src_w / 2 + direction[0] * slack_x * (2 * t - 1)
        cy = src_h / 2 + direction[1] * slack_y * (2 * t - 1)
        box = (cx - crop_w / 2, cy - crop_h / 2, cx + crop_w / 2, cy + crop_h / 2)
        yield np.asarray(src.resize((width, height), Image.BICUBIC, box=box))


def _moving_shapes(
    size: tuple[int, int], n_frames: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    from PIL import Image, ImageDraw

    width, height = size
    background = _fractal_noise(height * 2, width * 2, rng) // 2 + 60
    backdrop = list(_pan_zoom(background, size, n_frames, rng))
    n_shapes = 7
    pos = rng.uniform(0.15, 0.85, size=(n_shapes, 2)) * (width, height)
    vel = rng.uniform(-1, 1, size=(n_shapes, 2)) * (width, height) / max(n_frames, 1) * 0.8
    radius = rng.uniform(0.05, 0.14, size=n_shapes) * min(width, height)
    colour = rng.integers(30, 256, size=(n_shapes, 3))
    for i in range(n_frames):
        frame = Image.fromarray(backdrop[i])
        draw = ImageDraw.Draw(frame)
        for k in range(n_shapes):
            x, y = pos[k] + vel[k] * i
            x = _bounce(x, width)
            y = _bounce(y, height)
            r = radius[k]
            fill = tuple(int(c) for c in colour[k])
            if k % 2:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=(0, 0, 0), width=2)
            else:
                draw.rectangle(
                    (x - r, y - r * 0.6, x + r, y + r * 0.6),
                    fill=fill,
                    outline=(255, 255, 255),
                    width=2,
                )
        yield np.asarray(frame)


def _bounce(x: float, span: float) -> float:
    period = 2 * span
    x = x % period
    return period - x if x > span else x


def scene_frames(scene: str, size: tuple[int, int], n_frames: int, seed: int) -> list[np.ndarray]:
    """The pristine RGB frames (``n_frames`` × H × W × 3, uint8) of a demo scene."""
    if scene not in SCENES:
        raise DemoError(f"unknown demo scene {scene!r}; valid: {', '.join(SCENES)}")
    rng = np.random.default_rng([seed, SCENES.index(scene)])
    width, height = size
    if scene == "moving_shapes":
        return list(_moving_shapes(size, n_frames, rng))
    if scene == "terrain":
        image = _terrain_image()
    elif scene == "texture":
        image = _contour_texture(height * 2, width * 2, rng)
    else:
        image = _sample_image(scene)
    return list(_pan_zoom(image, size, n_frames, rng))


# --------------------------------------------------------------------------- distortions


def _blur(frames: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    from PIL import Image, ImageFilter

    width = frames[0].shape[1]
    radius = sigma * width / 320
    return [np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(radius))) for f in frames]


def _noise(frames: list[np.ndarray], std: float, rng: np.random.Generator) -> list[np.ndarray]:
    return [
        np.clip(f + rng.normal(0.0, std, size=f.shape), 0, 255).round().astype(np.uint8)
        for f in frames
    ]


def _dark(frames: list[np.ndarray], factor: float) -> list[np.ndarray]:
    return [(f.astype(np.float64) * factor).round().astype(np.uint8) for f in frames]


def _stutter(frames: list[np.ndarray], hold: int) -> list[np.ndarray]:
    return [frames[(i // hold) * hold] for i in range(len(frames))]


def distort(frames: list[np.ndarray], clip: DemoClip, seed: int) -> tuple[list[np.ndarray], int]:
    """Apply the clip's distortion; returns the frames and the CRF to encode them with."""
    if clip.distortion == "pristine":
        return frames, PRISTINE_CRF
    setting = clip.setting
    if clip.distortion == "h264":
        return frames, int(setting)
    ops: dict[str, Callable[[], list[np.ndarray]]] = {
        "blur": lambda: _blur(frames, float(setting)),
        "noise": lambda: _noise(
            frames,
            float(setting),
            np.random.default_rng([seed, SCENES.index(clip.scene), 99, clip.level]),
        ),
        "dark": lambda: _dark(frames, float(setting)),
        "stutter": lambda: _stutter(frames, int(setting)),
    }
    return ops[clip.distortion](), PRISTINE_CRF


def encode_h264(frames: list[np.ndarray], path: Path, fps: int, crf: int) -> Path:
    """Encode RGB frames as H.264 yuv420p MP4 with PyAV (written atomically)."""
    import av

    height, width = frames[0].shape[:2]
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.mp4")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
            time_base = Fraction(1, fps)
            for index, array in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                frame.pts = index
                frame.time_base = time_base
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------------- the dataset


def _params(
    n_scenes: int, seconds: float, size: tuple[int, int], fps: int, seed: int, first_scene: int = 0
) -> dict[str, object]:
    return {
        "generator_version": GENERATOR_VERSION,
        "n_scenes": n_scenes,
        "first_scene": first_scene,
        "seconds": float(seconds),
        "size": [int(size[0]), int(size[1])],
        "fps": int(fps),
        "seed": int(seed),
    }


def _validate(
    n_scenes: int, seconds: float, size: tuple[int, int], fps: int, first_scene: int = 0
) -> int:
    _check_n_scenes(n_scenes, first_scene)
    width, height = size
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise DemoError(f"size must be even and at least 32x32 (H.264 yuv420p), not {size}")
    if not isinstance(fps, int) or not 1 <= fps <= 60:
        raise DemoError(f"fps must be a whole number 1..60, not {fps!r}")
    n_frames = round(seconds * fps)
    if n_frames < max(LEVELS["stutter"]):
        raise DemoError(
            f"{seconds} s at {fps} fps gives {n_frames} frames; the demo needs at least "
            f"{int(max(LEVELS['stutter']))}"
        )
    return n_frames


def is_complete(out_dir: str | os.PathLike[str], params: dict[str, object]) -> bool:
    """Whether ``out_dir`` holds a finished demo made with ``params``."""
    out_dir = Path(out_dir)
    try:
        saved = json.loads((out_dir / PARAMS_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or not saved.get("complete") or saved.get("params") != params:
        return False
    if not (out_dir / MANIFEST_NAME).is_file() or not (out_dir / LABELS_NAME).is_file():
        return False
    return all(
        (out_dir / "clips" / f"{vid}.mp4").is_file()
        and (out_dir / "clips" / f"{vid}.mp4").stat().st_size > 0
        for vid in saved.get("video_ids", [])
    ) and bool(saved.get("video_ids"))


def make_demo_dataset(
    out_dir: str | os.PathLike[str],
    *,
    n_scenes: int = 3,
    seconds: float = 2.0,
    size: tuple[int, int] = (320, 240),
    fps: int = 12,
    seed: int = 0,
    first_scene: int = 0,
) -> Path:
    """Generate the demo clips, their labels and a manifest; return the manifest path.

    ``n_scenes`` scenes from ``first_scene`` on (``SCENES`` order), × 16 clips (48 by
    default) of ``round(seconds * fps)`` frames at ``size``
    (width, height). A folder already holding a complete demo with the same parameters is
    left as it is.

    Raises:
        DemoError: bad parameters, or ``out_dir`` is a non-empty folder that is not a demo.
    """
    from vqa_pipe.pipeline.datasets import read_labels
    from vqa_pipe.pipeline.manifest import write_manifest

    out_dir = Path(out_dir)
    n_frames = _validate(n_scenes, seconds, size, fps, first_scene)
    params = _params(n_scenes, seconds, size, fps, seed, first_scene)
    if is_complete(out_dir, params):
        return out_dir / MANIFEST_NAME
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / PARAMS_NAME).is_file():
        raise DemoError(
            f"{out_dir} is not empty and holds no {PARAMS_NAME}: refusing to write a demo there"
        )
    clips_dir = out_dir / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    ladder = demo_clips(n_scenes, first_scene)
    wanted = {f"{clip.video_id}.mp4" for clip in ladder}
    _write_json(out_dir / PARAMS_NAME, {"params": params, "complete": False})
    for stale in clips_dir.glob("*.mp4"):
        if stale.name not in wanted:
            stale.unlink()

    for scene in SCENES[first_scene : first_scene + n_scenes]:
        frames = scene_frames(scene, size, n_frames, seed)
        for clip in (c for c in ladder if c.scene == scene):
            distorted, crf = distort(frames, clip, seed)
            encode_h264(distorted, clips_dir / f"{clip.video_id}.mp4", fps, crf)

    _write_labels(out_dir / LABELS_NAME, ladder, size, fps, n_frames)
    table = read_labels("demo", out_dir, out_dir / LABELS_NAME)
    manifest = write_manifest(table.rows, out_dir / MANIFEST_NAME)
    _write_json(
        out_dir / PARAMS_NAME,
        {"params": params, "complete": True, "video_ids": [c.video_id for c in ladder]},
    )
    return manifest


def _write_labels(
    path: Path, ladder: list[DemoClip], size: tuple[int, int], fps: int, n_frames: int
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(_LABEL_COLUMNS)
        for clip in ladder:
            writer.writerow(
                [
                    clip.video_id,
                    f"clips/{clip.video_id}.mp4",
                    repr(clip.mos),
                    clip.scene,
                    clip.distortion,
                    clip.level,
                    clip.setting,
                    size[0],
                    size[1],
                    fps,
                    repr(n_frames / fps),
                    n_frames,
                ]
            )
    os.replace(tmp, path)


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
