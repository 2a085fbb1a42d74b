"""The shape of ``Dockerfile`` and ``.dockerignore``, checked from their text.

No Docker engine runs where the tests run, so this is no substitute for ``docker build``; it
keeps the properties the deployment relies on from drifting: a slim Python 3.11+ runtime, a
multi-stage build, a non-root user, a health check on the bot's own ``/healthz``, and
``qlp-bot serve`` as the process.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-cased, e.g. "FROM"
    args: str  # the rest of the (joined) line


@dataclass(frozen=True)
class Stage:
    image: str  # what FROM names: an image reference or an earlier stage
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[tuple[int, Instruction]]:
        return [(i, ins) for i, ins in enumerate(self.instructions) if ins.keyword == keyword]

    def one(self, keyword: str) -> tuple[int, Instruction]:
        found = self.all(keyword)
        assert found, f"the final stage has no {keyword}"
        return found[-1]  # the last one is the one that takes effect


def parse_instructions(text: str) -> list[Instruction]:
    """Dockerfile lines with comments dropped and backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def parse_stages(text: str) -> list[Stage]:
    stages: list[Stage] = []
    current: list[Instruction] = []
    header: tuple[str, str | None] | None = None
    for ins in parse_instructions(text):
        if ins.keyword == "FROM":
            if header:
                stages.append(Stage(*header, tuple(current)))
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            header, current = (words[0], name), []
        else:
            assert header, f"{ins.keyword} before the first FROM"
            current.append(ins)
    assert header, "Dockerfile has no FROM"
    stages.append(Stage(*header, tuple(current)))
    return stages


def exec_form(args: str) -> list[str]:
    """The argv of an exec-form CMD / ENTRYPOINT; fails on the shell form."""
    try:
        argv = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"not exec form (JSON array): {args}")
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), args
    return argv


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_stages(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def base_image(stages: list[Stage], stage: Stage) -> str:
    """The image a stage ultimately builds on, following ``FROM <earlier stage>``."""
    names = {s.name: s for s in stages if s.name}
    while stage.image in names:
        stage = names[stage.image]
    return stage.image


def test_parser_joins_continuations_and_drops_comments() -> None:
    text = '# c\nFROM python:3.11-slim AS b\nRUN a \\\n    # inner\n    && b\nCMD ["x"]\n'
    (stage,) = parse_stages(text)
    assert stage.name == "b"
    assert [i.keyword for i in stage.instructions] == ["RUN", "CMD"]
    assert stage.instructions[0].args == "a && b"


def test_final_stage_is_slim_python_3_11_or_newer(stages: list[Stage], final: Stage) -> None:
    image = base_image(stages, final).split("@", 1)[0]  # ignore a pinned digest
    repository, _, tag = image.rpartition(":")
    assert repository in {"python", "docker.io/library/python", "library/python"}, image
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?-slim(?:-[a-z]+)?", tag)
    assert match, f"final stage should be a python:<version>-slim image, got {image}"
    assert (int(match[1]), int(match[2])) >= (3, 11), image


def test_build_is_multi_stage_and_installs_a_wheel_from_the_builder(
    stages: list[Stage], final: Stage
) -> None:
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    earlier = {s.name for s in stages[:-1] if s.name}
    wheel_steps = [i for i in stages[0].instructions if i.keyword == "RUN" and "wheel" in i.args]
    assert wheel_steps, "the builder stage should build a wheel"
    uses_builder = [
        i
        for i in final.instructions
        if any(f"--from={n}" in i.args or f"from={n}," in i.args for n in earlier)
    ]
    assert uses_builder, "the final stage should take its wheels from an earlier stage"
    assert any("pip install" in i.args for i in uses_builder)


def test_runs_as_a_non_root_user_set_before_cmd(final: Stage) -> None:
    user_at, user = final.one("USER")
    cmd_at, _ = final.one("CMD")
    assert user_at < cmd_at, "USER should come before CMD"
    name = user.args.split(":", 1)[0]
    assert name not in {"root", "0"}, f"runs as {user.args}"


def test_healthcheck_hits_healthz_on_the_exposed_port(final: Stage) -> None:
    _, check = final.one("HEALTHCHECK")
    assert " CMD " in f" {check.args} ", f"HEALTHCHECK has no CMD: {check.args}"
    match = re.search(r"https?://(?:127\.0\.0\.1|localhost):(\d+)/healthz\b", check.args)
    assert match, f"HEALTHCHECK should request /healthz: {check.args}"
    exposed = {p.split("/", 1)[0] for _, e in final.all("EXPOSE") for p in e.args.split()}
    assert match[1] in exposed, f"health check port {match[1]} is not EXPOSEd ({exposed})"


def test_cmd_runs_qlp_bot_serve_on_the_exposed_port(final: Stage) -> None:
    _, cmd = final.one("CMD")
    argv = exec_form(cmd.args)
    assert argv[:2] == ["qlp-bot", "serve"], argv
    exposed = {p.split("/", 1)[0] for _, e in final.all("EXPOSE") for p in e.args.split()}
    assert "--port" in argv and argv[argv.index("--port") + 1] in exposed, (argv, exposed)


def test_qlp_home_is_set(final: Stage) -> None:
    envs = " ".join(e.args for _, e in final.all("ENV"))
    assert re.search(r"\bQLP_HOME=/\S+", envs), "ENV QLP_HOME should point at a writable dir"


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Approximates Docker's rules: a path is out if it or a parent matches; last match wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        globs = {glob, glob.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            ignored = not negated
    return ignored


@pytest.mark.parametrize("path", [".git", ".qlp", "venv", ".venv", "tests", "bot/__pycache__"])
def test_dockerignore_keeps_out(path: str) -> None:
    assert is_ignored(path, dockerignore_patterns()), f"{path} would be sent to the build"


def test_dockerignore_keeps_what_the_dockerfile_copies(stages: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    for stage in stages:
        for _, copy in stage.all("COPY"):
            tokens = shlex.split(copy.args)
            if any(t.startswith("--from") for t in tokens):
                continue  # copies from another stage, not from the build context
            for source in [t for t in tokens if not t.startswith("--")][:-1]:
                assert not is_ignored(source, patterns), f"COPY {source} is in .dockerignore"


def test_serve_listens_on_every_interface_in_the_container(final: Stage) -> None:
    _, cmd = final.one("CMD")
    argv = exec_form(cmd.args)
    assert "--host" in argv and argv[argv.index("--host") + 1] == "0.0.0.0", argv


def test_files_the_image_copies_exist() -> None:
    root = DOCKERIGNORE.parent
    for name in ("pyproject.toml", "README.md", "qlp.example.yml"):
        assert (root / name).is_file(), name
