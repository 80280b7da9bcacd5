"""The user-facing docs stay true to the code.

- ``docs/cli.md`` equals the reference generated from the commands right now;
- the annotated example config of ``docs/user-guide.md`` (the fenced ``yaml`` block after the
  line ``<!-- example-config -->``) validates with :func:`config.parse_config` and writes every
  section of a run config;
- every ``landslide-hazard ...`` command line in the guide's code blocks names a real command
  and only options that command has;
- the guide's Python examples import names that exist and call them with arguments they take.

Run ``python tests/test_docs.py > docs/cli.md`` to regenerate the CLI reference (the same text
as ``python -m landslide_hazard.clidoc``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.core
import typer.main
import yaml

from landslide_hazard.cli import app
from landslide_hazard.config import RunConfig, parse_config

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = ROOT / "docs" / "cli.md"
GUIDE = ROOT / "docs" / "user-guide.md"
REGENERATE = ".venv/bin/python -m landslide_hazard.clidoc > docs/cli.md"
MARKER = "<!-- example-config -->"


def _cli_reference() -> str:
    """What ``python -m landslide_hazard.clidoc`` prints (with ``print``'s newline)."""
    from landslide_hazard.clidoc import cli_reference

    return cli_reference() + "\n"


def _guide() -> str:
    assert GUIDE.is_file(), f"{GUIDE} is missing"
    return GUIDE.read_text()


def example_config(text: str) -> str:
    """The fenced ```yaml block that follows the marker line (blank lines may separate them)."""
    m = re.search(re.escape(MARKER) + r"\s*\n\s*```ya?ml\n(.*?)\n```", text, flags=re.S)
    if m is None:
        raise AssertionError(
            f"{GUIDE}: no ```yaml block right after a line '{MARKER}'; the example config must "
            "follow that marker"
        )
    return m.group(1)


def command_lines(text: str) -> list[str]:
    """Every ``landslide-hazard ...`` line of a fenced code block (continuations joined, comments
    and ``$ `` prompts stripped) and every inline code span that starts with ``landslide-hazard``."""
    lines: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)\n```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            line = line.split(" #", 1)[0].strip()
            m = re.search(r"(?:^|\s|/)landslide-hazard\s+(.*)$", line)
            if m and not line.startswith("#"):
                lines.append("landslide-hazard " + " ".join(m.group(1).split()))
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += re.findall(r"`(landslide-hazard [^`]+)`", outside)
    return lines


def command_problems(text: str) -> list[str]:
    """The command lines of ``text`` that name a missing command or an option it lacks."""
    group = typer.main.get_command(app)
    ctx = group.make_context("landslide-hazard", ["--help"], resilient_parsing=True)
    commands = {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}
    problems = []
    for line in command_lines(text):
        words = shlex.split(line.replace("|", " "))
        name = words[1] if len(words) > 1 else ""
        if name.startswith("-"):
            continue  # landslide-hazard --version / --help
        if name not in commands:
            problems.append(f"{line}: no command '{name}'")
            continue
        opts = {o for p in commands[name].params for o in p.opts + p.secondary_opts}
        opts.add("--help")
        for w in words[2:]:
            flag = w.split("=", 1)[0]
            if flag.startswith("--") and flag not in opts:
                problems.append(f"{line}: '{name}' has no option {flag}")
    return problems


def python_problems(text: str) -> list[str]:
    """Problems of the ```python blocks: imports that fail, calls of imported functions with
    keyword arguments they do not take or more positional arguments than they accept."""
    import ast
    import importlib
    import inspect

    problems = []
    for block in re.findall(r"```python\n(.*?)\n```", text, flags=re.S):
        tree = ast.parse(block)
        funcs = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                try:
                    module = importlib.import_module(node.module)
                except ImportError as exc:
                    problems.append(f"from {node.module} import ...: {exc}")
                    continue
                for alias in node.names:
                    obj = getattr(module, alias.name, None)
                    if obj is None:
                        problems.append(f"{node.module} has no {alias.name}")
                    else:
                        funcs[alias.asname or alias.name] = obj
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                f = funcs.get(node.func.id)
                if f is None or not callable(f):
                    continue
                params = inspect.signature(f).parameters
                names = set(params)
                for kw in node.keywords:
                    if kw.arg is not None and kw.arg not in names:
                        problems.append(f"{node.func.id}() takes no argument '{kw.arg}'")
                positional = [
                    p
                    for p in params.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                ]
                if len(node.args) > len(positional):
                    problems.append(f"{node.func.id}() takes at most {len(positional)} positional")
    return problems


def test_cli_reference_is_current():
    current = CLI_MD.read_text() if CLI_MD.is_file() else ""
    assert current == _cli_reference(), (
        f"{CLI_MD} is out of date with the commands in src/landslide_hazard/cli.py; "
        f"regenerate it: {REGENERATE}"
    )


def test_example_config_validates(tmp_path):
    data = yaml.safe_load(example_config(_guide()))
    assert isinstance(data, dict)
    cfg = parse_config(data, tmp_path, source="docs/user-guide.md example")
    # every section is written out (the guide explains each), relative paths resolve
    assert set(data) == set(RunConfig.model_fields), (
        f"the example config lacks sections {sorted(set(RunConfig.model_fields) - set(data))}"
    )
    for section in ("inputs", "inventory", "monsoon", "model", "training", "evaluation", "output"):
        model = getattr(cfg, section)
        missing = set(type(model).model_fields) - set(data[section])
        assert not missing, f"example config section '{section}' lacks fields {sorted(missing)}"
    assert cfg.inputs.dem.is_absolute()
    assert cfg.inputs.dem.is_relative_to(tmp_path)


def test_example_config_rejects_a_typo(tmp_path):
    """The check above is not vacuous: a misspelt field in the same example fails."""
    from landslide_hazard.errors import ConfigError

    data = yaml.safe_load(example_config(_guide()))
    data["training"]["batch_sise"] = data["training"].pop("batch_size")
    with pytest.raises(ConfigError, match="batch_sise"):
        parse_config(data, tmp_path)


def test_guide_commands_exist():
    text = _guide()
    assert len(command_lines(text)) >= 10, "the guide shows fewer than 10 command lines"
    problems = command_problems(text)
    assert not problems, "docs/user-guide.md shows commands that do not exist:\n" + "\n".join(
        problems
    )


def test_command_check_finds_invented_commands_and_options():
    text = (
        "Run `landslide-hazard train cfg.yaml --epochs 3` or\n"
        "```bash\nlandslide-hazard predict RUN \\\n  --scenario s.yaml --gpu  # comment --x\n"
        "landslide-hazard plot RUN\nlandslide-hazard evaluate --observed o.tif --out d\n```\n"
    )
    assert command_problems(text) == [
        "landslide-hazard predict RUN --scenario s.yaml --gpu: 'predict' has no option --gpu",
        "landslide-hazard plot RUN: no command 'plot'",
        "landslide-hazard train cfg.yaml --epochs 3: 'train' has no option --epochs",
    ]


def test_guide_python_matches_the_api():
    text = _guide()
    assert "```python" in text
    problems = python_problems(text)
    assert not problems, "docs/user-guide.md Python examples do not match the API:\n" + "\n".join(
        problems
    )


def test_python_check_finds_wrong_names_and_arguments():
    text = (
        "```python\nfrom landslide_hazard.predict import predict\n"
        "from landslide_hazard.prepare import prepare_all\n"
        "predict('run', scenario=None, gpu=True)\npredict(1, 2, 3, 4)\n```\n"
    )
    assert python_problems(text) == [
        "landslide_hazard.prepare has no prepare_all",
        "predict() takes no argument 'gpu'",
        "predict() takes at most 3 positional",
    ]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for title in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower().replace("`", ""))
        out.add(slug.replace(" ", "-"))
    return out


def test_guide_links_resolve():
    text = _guide()
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        doc = GUIDE.parent / path if path else GUIDE
        if not doc.is_file():
            problems.append(f"{target}: no file {doc.relative_to(ROOT)}")
        elif anchor and anchor not in _anchors(doc.read_text()):
            problems.append(f"{target}: no heading '#{anchor}' in {doc.name}")
    assert not problems, "broken links in docs/user-guide.md:\n" + "\n".join(problems)


def test_anchor_slugs_follow_github():
    assert _anchors("## Evaluating someone else's maps\n## `prepare`: raw -> cube\n") == {
        "evaluating-someone-elses-maps",
        "prepare-raw---cube",
    }


def test_readme_setup_commands_first_and_ci_runs_the_same_test_command_after_chromium():
    """The README opens with its two set-up commands; .ci/run runs the second one verbatim,
    after installing chromium (the report's browser tests must not skip in CI)."""
    readme = (ROOT / "README.md").read_text()
    block = re.match(r"# landslide-hazard\n\n```bash\n(.*?)\n```", readme, re.S)
    assert block, "README.md must open with the set-up commands' bash block"
    demo, tests = block.group(1).splitlines()
    assert demo.endswith("landslide-hazard demo --out demo-out")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci
    install = next(i for i, line in enumerate(ci) if "apt-get install" in line)
    assert "chromium" in ci[install] and install < ci.index(tests)
    assert "export LANDSLIDE_HAZARD_REQUIRE_BROWSER=1" in ci[: ci.index(tests)]
