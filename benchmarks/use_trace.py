"""A month of realistic ComfyUI use of one shared box, built from ComfyUI's real workflow templates.

A *template session* runs one template (comfyui-workflow-templates-json): it needs every model
the template declares, together, and records a use of each at every prompt queued. Templates
are picked with Zipf popularity; users keep to working hours and habits:

- each user has a repertoire of a few templates, favourites first (Zipf again);
- a base template is often followed by a related one (another template sharing a model with
  it: its refiner, editor or variant) and then by the user's upscaler;
- the first session of a day often picks up yesterday's last work; now and then a user
  explores a template outside the repertoire.

Sizes: the built-in catalog's where it lists the file, else estimated from the name (parameter
count times bytes per parameter of the dtype, for diffusion models, checkpoints and text encoders)
or a plausible size for the folder, jittered per file. The trace is seeded and written to
``benchmarks/data/predict-trace.json.gz`` so that runs compare; ``generate`` rebuilds it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DATA = Path(__file__).resolve().parent / "data"
TRACE = DATA / "predict-trace.json.gz"
SEED = 20250303
START = 1740960000.0  # Monday 2025-03-03 00:00 UTC; the box's clock is UTC
DAYS = 30
HOUR, DAY = 3600.0, 86400.0
GB, MB = 10**9, 10**6

# Users of one shared box: (name, days of the week 0=Monday, start hour, hours at work). ComfyUI
# runs one prompt at a time, so they take turns: a team across time zones, a weekend user.
USERS = (
    ("ana", (0, 1, 2, 3, 4), 7.0, 5.0),
    ("ben", (0, 1, 2, 3, 4), 12.5, 4.5),
    ("chloe", (0, 1, 2, 3), 17.5, 3.5),
    ("dev", (0, 1, 2, 3, 4), 21.5, 4.0),
    ("eli", (5, 6), 11.0, 7.0),
)
REPERTOIRE = 6  # templates a user works with
TEMPLATE_ZIPF = 1.0  # popularity of templates across everyone
FAVOURITE_ZIPF = 1.2  # a user's preference within the repertoire
P_WORKS = 0.9  # a user shows up on one of their days
P_RESUME = 0.4  # the first session of a day continues yesterday's last base template
P_EXPLORE = 0.1  # a base template from outside the repertoire
P_RELATED = 0.6  # a base template's habitual follow-up comes next
P_UPSCALE = 0.5  # then the user's upscaler

FOLDER_SIZE = {  # plausible sizes where the name does not say
    "diffusion_models": 12 * GB,
    "checkpoints": 7 * GB,
    "text_encoders": 5 * GB,
    "vae": 300 * MB,
    "loras": 300 * MB,
    "clip_vision": 1200 * MB,
    "controlnet": 2500 * MB,
    "model_patches": 1500 * MB,
    "latent_upscale_models": 500 * MB,
    "upscale_models": 64 * MB,
    "geometry_estimation": 1300 * MB,
    "audio_encoders": 1200 * MB,
    "background_removal": 900 * MB,
    "detection": 1500 * MB,
    "embeddings": 1 * MB,
    "frame_interpolation": 70 * MB,
    "optical_flow": 20 * MB,
    "style_models": 130 * MB,
}
BY_PARAMETERS = ("diffusion_models", "checkpoints", "text_encoders")
DTYPE_BYTES = (  # first match wins
    (r"fp32", 4.0),
    (r"nvfp4|fp4|w4a8|gptq|awq", 0.5),
    (r"fp8|int8|e4m3|e5m2", 1.0),
    (r"fp16|bf16", 2.0),
)


@dataclass(frozen=True)
class Model:
    ref: str
    size: int
    host: str
    url: str


def templates_dir() -> Path:
    import comfyui_workflow_templates_json

    return Path(comfyui_workflow_templates_json.__file__).parent / "templates"


def package_version() -> str:
    from importlib.metadata import version

    return version("comfyui-workflow-templates-json")


def declared_sizes() -> dict[str, int]:
    """File name → size, from the built-in catalog cmcache ships."""
    from importlib.resources import files

    from cmcache.core.sizes import parse_size

    doc = json.loads((files("cmcache") / "data" / "builtin.json").read_text())
    sizes = {}
    for model in doc["models"]:
        if model.get("size") is not None:
            sizes[model["filename"]] = parse_size(model["size"])
    return sizes


def estimate_size(folder: str, name: str) -> int:
    """Parameters times bytes per parameter when the name says so, else the folder's usual size;
    jittered by a stable hash of the name (±30 %)."""
    lower = name.lower()
    jitter = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if folder in BY_PARAMETERS:
        found = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)([bm])(?![a-z])", lower)
        if found:
            number = found.group(1)
            implied = number.startswith("0") and "." not in number  # "06b": 0.6 billion
            value = float("0." + number[1:]) if implied else float(number)
            params = value * (1e9 if found.group(2) == "b" else 1e6)
            width = next((b for pattern, b in DTYPE_BYTES if re.search(pattern, lower)), 2.0)
            return int(params * width * (0.97 + 0.06 * jitter))
    return int(FOLDER_SIZE.get(folder, 500 * MB) * (0.7 + 0.6 * jitter))


def load_library() -> tuple[list[Model], list[tuple[str, list[int]]]]:
    """Every model the templates declare, and each template's models (its main model first:
    the largest diffusion model or checkpoint, else the largest)."""
    from cmcache.core.workflow import read_workflow

    sizes = declared_sizes()
    models: dict[str, Model] = {}
    templates: list[tuple[str, list[int]]] = []
    order: list[str] = []
    for path in sorted(templates_dir().glob("*.json")):
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or "nodes" not in doc:
            continue
        declared = read_workflow(doc, path.name).declared
        if not declared:
            continue
        refs = []
        for d in declared:
            ref = f"{d.folder}/{d.name}"
            if ref not in models:
                size = sizes.get(d.name) or estimate_size(d.folder, d.name)
                models[ref] = Model(ref, size, urlsplit(d.url).hostname or "", d.url)
                order.append(ref)
            refs.append(ref)
        main = max(
            refs,
            key=lambda r: (r.split("/")[0] in ("diffusion_models", "checkpoints"), models[r].size),
        )
        refs = [main, *(r for r in refs if r != main)]
        templates.append((path.stem, [order.index(r) for r in refs]))
    return [models[r] for r in order], templates


class Users:
    """Each user's repertoire, favourites and habits, drawn once from the seed."""

    def __init__(self, rnd: random.Random, templates: list[tuple[str, list[int]]]) -> None:
        self.rnd = rnd
        self.templates = templates
        ranks = list(range(len(templates)))
        rnd.shuffle(ranks)  # which template is the most popular
        self.popularity = [1.0 / (1 + ranks[i]) ** TEMPLATE_ZIPF for i in range(len(templates))]
        upscalers = [i for i, (name, _) in enumerate(templates) if "upscal" in name.lower()]
        self.repertoire: dict[str, list[int]] = {}
        self.related: dict[tuple[str, int], int | None] = {}
        self.upscaler: dict[str, int] = {}
        for name, *_ in USERS:
            chosen: list[int] = []
            while len(chosen) < REPERTOIRE:
                pick = self.popular()
                if pick not in chosen and pick not in upscalers:
                    chosen.append(pick)
            self.repertoire[name] = chosen
            self.upscaler[name] = rnd.choice(upscalers)
            for base in chosen:
                kin = [
                    i
                    for i, (_, refs) in enumerate(templates)
                    if i != base and set(refs) & set(templates[base][1]) and i not in upscalers
                ]
                self.related[name, base] = rnd.choice(kin) if kin else None

    def popular(self) -> int:
        return self.rnd.choices(range(len(self.templates)), weights=self.popularity)[0]

    def favourite(self, user: str) -> int:
        chosen = self.repertoire[user]
        weights = [1.0 / (1 + i) ** FAVOURITE_ZIPF for i in range(len(chosen))]
        return self.rnd.choices(chosen, weights=weights)[0]

    def chain(self, user: str, base: int) -> list[int]:
        """A base template and, by habit, its follow-up and the user's upscaler."""
        steps = [base]
        related = self.related.get((user, base))
        if related is not None and self.rnd.random() < P_RELATED:
            steps.append(related)
        if self.rnd.random() < P_UPSCALE:
            steps.append(self.upscaler[user])
        return steps


def generate(seed: int = SEED) -> dict[str, Any]:
    """The trace as plain data (see ``save``)."""
    models, templates = load_library()
    return {
        "format": 1,
        "seed": seed,
        "templates_package": package_version(),
        "start": START,
        "days": DAYS,
        "users": [u[0] for u in USERS],
        "models": [[m.ref, m.size, m.host] for m in models],
        "templates": [[name, refs] for name, refs in templates],
        "sessions": sessions(random.Random(seed), templates),
    }


def sessions(
    rnd: random.Random,
    templates: list[tuple[str, list[int]]] | list[list[Any]],
    days: int = DAYS,
    prompt_seconds: tuple[float, float] = (60.0, 240.0),
) -> list[list[Any]]:
    """Every template session: [user, template, seconds from START, prompt offsets]."""
    users = Users(rnd, [(str(t[0]), list(t[1])) for t in templates])
    out: list[list[Any]] = []
    for number, (user, weekdays, start_hour, hours) in enumerate(USERS):
        last_base: int | None = None
        for day in range(days):
            if day % 7 not in weekdays or rnd.random() > P_WORKS:
                continue
            t = START + day * DAY + (start_hour + rnd.gauss(0, 0.5)) * HOUR
            end = t + (hours + rnd.gauss(0, 0.5)) * HOUR
            lunch = t + 4 * HOUR if hours > 5 else math.inf
            first = True
            while t < end:
                if first and last_base is not None and rnd.random() < P_RESUME:
                    base = last_base
                elif rnd.random() < P_EXPLORE:
                    base = users.popular()
                else:
                    base = users.favourite(user)
                first, last_base = False, base
                for template in users.chain(user, base):
                    prompts = 3 + int(rnd.expovariate(1 / 10))
                    offsets, at = [], 0.0
                    for _ in range(prompts):
                        offsets.append(round(at))
                        at += rnd.uniform(*prompt_seconds)
                    out.append([number, template, round(t - START), offsets])
                    t += at + rnd.uniform(2, 15) * 60  # on to the next step
                t += rnd.lognormvariate(math.log(20 * 60), 0.8)  # a break
                if t > lunch:
                    t, lunch = t + rnd.uniform(40, 70) * 60, math.inf
    out.sort(key=lambda s: s[2])
    return out


def save(trace: dict[str, Any], path: Path = TRACE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(trace, separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(data, mtime=0))


def load(path: Path = TRACE) -> dict[str, Any]:
    """The trace, generated and saved first when absent."""
    if not path.exists():
        save(generate(), path)
    loaded: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return loaded


def uses(trace: dict[str, Any]) -> list[tuple[float, str, int]]:
    """Every use in time order: (time, ref, session number). At each prompt, a session uses
    its template's models one after another (main model first), half a second apart."""
    refs = [m[0] for m in trace["models"]]
    out = []
    for number, (_user, template, start, offsets) in enumerate(trace["sessions"]):
        needs = trace["templates"][template][1]
        for offset in offsets:
            for step, model in enumerate(needs):
                out.append((trace["start"] + start + offset + step * 0.5, refs[model], number))
    out.sort()
    return out


if __name__ == "__main__":
    save(generate())
    print(f"wrote {TRACE} ({TRACE.stat().st_size} bytes)")
