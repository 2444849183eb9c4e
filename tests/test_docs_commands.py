"""Every command of README.md and docs/*.md that calls main.py, evaluate.py or report.py parses and resolves its
config as written: each is run in-process up to the point where it would read data (main.py's config is loaded and
checked, evaluate.py's overrides are merged, report.py's folders are taken), with the work itself left out."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from config import apply_overrides, check, load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = ("main.py", "evaluate.py", "report.py")
# Shell variables the documents use without setting them, as a reader would fill them in; any other unset one
# becomes a path
FILLED = {"S": "0", "L": "CrossEntropyLoss", "NODE_RANK": "0"}


class Command:
    def __init__(self, doc: Path, line: int, text: str, argv: list[str], script: str, expected: str | None):
        self.doc, self.line, self.text, self.argv, self.script, self.expected = doc, line, text, argv, script, expected

    def __repr__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def _expand(text: str, variables: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match[1] or match[2]
        return variables.get(name, FILLED.get(name, f"/placeholder/{name}"))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def _logical_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The block's lines with `\\` continuations joined and comments dropped, each with its first line number."""
    joined, current, start = [], "", None
    for number, line in block:
        start = number if start is None else start
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append((start, current + line))
        current, start = "", None
    return [(number, re.sub(r"(^|\s)#.*$", "", line).strip()) for number, line in joined]


def _script_call(words: list[str]) -> tuple[str, list[str]] | None:
    """The script of SCRIPTS that `words` runs and its arguments, looking into `bash -c '...'` too."""
    for index, word in enumerate(words):
        if word in SCRIPTS:
            return word, words[index + 1:]
        if " " in word and any(script in word for script in SCRIPTS):
            return _script_call(shlex.split(word))
    return None


def commands() -> list[Command]:
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        fences = [i for i, line in enumerate(lines) if line.startswith("```")]
        for begin, end in zip(fences[::2], fences[1::2]):
            if not lines[begin].startswith("```bash") and not any(l.startswith("$ ") for l in lines[begin + 1:end]):
                continue
            block = [(i + 1, line) for i, line in enumerate(lines[begin + 1:end], begin + 1)]
            variables = {}
            for position, (number, line) in enumerate(_logical_lines(block)):
                expected = None
                if line.startswith("$ "):  # a transcript: the command, then what it prints
                    line = line[2:]
                    following = [l for _, l in block if _ > number]
                    expected = following[0] if following else None
                assignment = re.fullmatch(r"(\w+)=(\"[^\"]*\"|'[^']*'|\S*)", line)
                if assignment:
                    variables[assignment[1]] = shlex.split(_expand(assignment[2], variables) or "''")[0]
                    continue
                if not any(script in line for script in SCRIPTS) or "(cd " in line:
                    continue  # `(cd OTHER && python main.py ...)` runs another repository's main.py
                words = shlex.split(_expand(line, variables))
                call = _script_call(words)
                if call:
                    found.append(Command(doc, number, line, [w for w in call[1] if w != "..."], call[0], expected))
    return found


COMMANDS = commands()


def test_the_documents_hold_the_commands_this_test_runs():
    scripts = {command.script for command in COMMANDS}
    assert scripts == set(SCRIPTS), scripts
    assert len(COMMANDS) > 20
    assert any(command.doc.name == "README.md" for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=repr)
def test_a_documented_command_parses_and_resolves_its_config(command, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    if command.script == "main.py":
        import main
        seen = {}
        monkeypatch.setattr(main, "run", lambda cfg: seen.setdefault("cfg", cfg))
        if command.expected:
            with pytest.raises(SystemExit) as info:
                main.main(command.argv)
            assert str(info.value.code) == command.expected
            return
        main.main(command.argv)
        assert "cfg" in seen
    elif command.script == "evaluate.py":
        import evaluate
        seen = {}

        def evaluate_checkpoint(path, out, overrides, post_hoc, temperature=False):
            # the checkpoint's saved config stands in as configs.yaml's, with the command's overrides merged in
            check(apply_overrides(load_config(ROOT / "configs.yaml"), overrides))
            seen["post_hoc"] = post_hoc
        monkeypatch.setattr(evaluate, "checkpoints", lambda path, last: [path])
        monkeypatch.setattr(evaluate, "evaluate_checkpoint", evaluate_checkpoint)
        evaluate.main(command.argv)
        assert "post_hoc" in seen
    else:
        import report
        seen = {}
        monkeypatch.setattr(report, "report", lambda roots, factor, out: seen.setdefault("roots", roots) and [])
        report.main(command.argv)
        assert seen["roots"]


def readme_python_block(containing: str) -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"the README has {len(found)} python blocks with {containing!r}"
    return found[0]


def test_the_readmes_prediction_example_predicts_with_a_saved_checkpoint(tmp_path, monkeypatch, capsys):
    # a run folder as main.py leaves it: the best checkpoint with its config and what it was trained on
    from omegaconf import OmegaConf

    from checkpoint import output_paths, save_best
    from models import build_model
    monkeypatch.chdir(ROOT)
    paths = output_paths(tmp_path, 0)
    model, _ = build_model("resnet32", 10, False, 32)
    config = load_config(ROOT / "configs.yaml", ["MODEL.name", "resnet32"])
    classes = [f"class{c}" for c in range(10)]
    data = {"num_per_cls": [10] * 10, "classes": classes, "mean": [0.5] * 3, "std": [0.25] * 3, "img_size": 32}
    save_best(paths, model.state_dict(), {"epoch": 1},
              {"config": OmegaConf.to_container(config), "data": data, "stage1": None})
    code = readme_python_block("model-seed0-best.pt")
    code, replaced = re.subn(r'^run = ".*"$', f"run = {str(tmp_path)!r}", code, flags=re.M)
    assert replaced == 1
    exec(compile(code, "README.md", "exec"), {})
    printed = eval(capsys.readouterr().out)
    assert len(printed) == 4 and set(printed) <= set(classes)
