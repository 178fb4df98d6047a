"""The Dockerfile, read as text: CI has no container engine to build it (the README says so).

What must hold for the image: the run stage is not root, keeps its data in a volume that is the
data directory, checks health with `bindify healthcheck`, listens beyond loopback inside the
container, and ships the one-folder build made by the same script as `make binary-dir`.
"""

from __future__ import annotations

import json
import re
import shlex

from support.appliance import ROOT

DOCKERFILE = ROOT / "packaging" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(starts) >= 2, "expected a build stage and a run stage"
    return steps[starts[-1] :]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_run_stage_is_unprivileged_with_a_data_volume_and_a_healthcheck() -> None:
    stage = final_stage(instructions(DOCKERFILE.read_text()))
    users = [rest for word, rest in stage if word == "USER"]
    assert users, "the run stage never leaves root"
    assert users[-1].split(":")[0] not in ("root", "0")

    env = env_of(stage)
    (volume,) = [json.loads(rest) for word, rest in stage if word == "VOLUME"]
    assert volume == [env["BINDIFY_DATA_DIR"]]
    assert env["BINDIFY_HOST"] == "0.0.0.0"
    assert env["BINDIFY_WORKERS"] == "auto"  # every core once BINDIFY_KV_URL names Redis

    (health,) = [rest for word, rest in stage if word == "HEALTHCHECK"]
    command = json.loads(health[health.index("CMD") + 3 :].strip())
    assert command[-1] == "healthcheck" and command[0].endswith("bindify")

    entry = [json.loads(rest) for word, rest in stage if word == "ENTRYPOINT"]
    assert entry == [["bindify"]]


def test_image_ships_the_one_folder_build_from_the_locked_build_script() -> None:
    steps = instructions(DOCKERFILE.read_text())
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "./packaging/build-binary.sh --onedir" in runs
    copies = [rest for word, rest in final_stage(steps) if word == "COPY"]
    assert any(c.startswith("--from=build /src/dist/bindify-dir ") for c in copies)


def test_build_context_excludes_local_environments_and_outputs() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for entry in (".venv*", "dist", "build", "bindify-data", ".git"):
        assert entry in ignored, entry


def test_base_images_take_a_pinned_digest_with_the_tag_as_fallback() -> None:
    # Reproducible, tamper-evident bases: `--build-arg PYTHON_DIGEST=sha256:…` (and
    # DEBIAN_DIGEST) pins each base image; without them the tag is used. No digest is written
    # into the file: one copied from nowhere would be worse than none.
    text = DOCKERFILE.read_text()
    steps = instructions(text)
    first_from = next(i for i, (word, _) in enumerate(steps) if word == "FROM")
    global_args = {rest.split("=")[0] for word, rest in steps[:first_from] if word == "ARG"}
    assert {"PYTHON_DIGEST", "DEBIAN_DIGEST"} <= global_args
    froms = [rest.split()[0] for word, rest in steps if word == "FROM"]
    assert froms == [
        "python:3.11-slim-bookworm${PYTHON_DIGEST:+@${PYTHON_DIGEST}}",
        "debian:bookworm-slim${DEBIAN_DIGEST:+@${DEBIAN_DIGEST}}",
    ]
    assert "sha256:" not in "".join(rest for _, rest in steps)
