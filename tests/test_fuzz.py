"""Fuzzing the user-facing inputs with hypothesis: `generate` arguments, decode settings, stage configs (mappings,
YAML files, command-line flags), JSONL task files and checkpoint bytes.

The property everywhere: an input gives a valid result or a ValueError whose message names the field or file
(the CLI's argparse usage error, SystemExit 2, for flags argparse itself refuses) - never another exception,
and never a silent wrong answer: input an oracle here calls valid must succeed, and anything else must raise.
Bounded for the default suite (derandomized, well under 60 s); the soak, with fresh random examples:
`ADAPTIVE_PAUSE_FUZZ_SCALE=50 python -m pytest tests/test_fuzz.py` (docs/reliability.md).
"""

import dataclasses
import json
import math
import os
import re
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import opinionated_model
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from adaptive_pause.config import from_dict, parse_cli
from adaptive_pause.decoding import DecodeConfig
from adaptive_pause.demo import DemoConfig
from adaptive_pause.ppo.config import PPOConfig
from adaptive_pause.tasks import SCORERS, get_task
from adaptive_pause.tokens import CHARACTERS
from adaptive_pause.training.finetune import FinetuneConfig
from adaptive_pause.training.pretrain import PretrainConfig
from policies import FixedPauses, PauseControllerHead, load_policy, save_policy

SCALE = int(os.environ.get("ADAPTIVE_PAUSE_FUZZ_SCALE", "1"))


def fuzz(examples: int):
    """Bounded and derandomized in the default suite; SCALE times as many fresh random examples in a soak."""
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=SCALE == 1, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])  # capsys: read per example


SPECIAL_TEXT = ["<pause>", "</s>", "<s>", "<pad>", "<unk>", "<|endoftext|>", "<|im_start|>"]
NASTY_NUMBERS = [math.nan, math.inf, -math.inf, -1, -0.0, 1e-300, 1 + 1e-7, 2, 10 ** 20]


def text(alphabet=None):
    """Text mixing literal special-token strings, printable ASCII and (without `alphabet`) any unicode."""
    chars = st.characters() if alphabet is None else st.sampled_from(alphabet)
    return st.lists(st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(chars, max_size=6)), max_size=5).map("".join)


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6), st.sampled_from(NASTY_NUMBERS),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                      st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                 max_size=2))


def names_a_field(message: str, names) -> bool:
    """The message starts with one of `names` (a field, possibly indexed or dotted) followed by ':' or '['."""
    return any(re.match(re.escape(name) + r"(\[\d+\])?(\.[\w.]+)?:", message) for name in names)


# ---- generate ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    return opinionated_model(numbering="slotted")


KNOWN = set(CHARACTERS)
URGENCY = st.one_of(st.floats(0, 1), st.lists(st.floats(0, 1), min_size=1, max_size=3),
                    st.sampled_from(NASTY_NUMBERS + ["0.5", "auto", "fast", None, True]),
                    st.lists(st.one_of(st.floats(0, 1), st.sampled_from([math.nan, 1.5, "x"])), max_size=4),
                    st.floats(-2, 2).map(np.float64), st.floats(0, 1).map(lambda u: torch.tensor([u])))
COUNT = st.one_of(st.integers(1, 4), st.sampled_from([-1, 0, True, 2.0, 2.5, "3", None, math.inf, np.int64(2)]))
PROMPTS = st.one_of(st.lists(text(CHARACTERS).filter(bool), min_size=1, max_size=3),
                    st.lists(st.one_of(text(CHARACTERS), text(), st.sampled_from([None, 3, b"x"])), max_size=3),
                    st.sampled_from(["1+1=", b"1+1=", None]))


@st.composite
def generate_arguments(draw):
    """(prompts, urgency, max_new_tokens, max_pauses): every argument valid in about half the draws (so that
    answers get checked too), anything goes in the rest."""
    if draw(st.booleans()):
        prompts = draw(st.lists(text(CHARACTERS).filter(bool), min_size=1, max_size=3))
        urgency = draw(st.one_of(st.floats(0, 1), st.lists(st.floats(0, 1), min_size=len(prompts),
                                                             max_size=len(prompts))))
        return prompts, urgency, draw(st.integers(1, 4)), draw(st.integers(0, 4))
    return draw(PROMPTS), draw(URGENCY), draw(COUNT), draw(COUNT)


def valid_urgency(urgency, rows: int) -> bool:
    def number(u):  # urgency is float32: -1e-300 is 0
        return isinstance(u, (int, float, np.floating)) and not isinstance(u, bool) and 0 <= np.float32(u) <= 1
    if isinstance(urgency, torch.Tensor):  # a 0-d tensor is every row's; otherwise one value per row
        return (urgency.dim() == 0 or urgency.numel() == rows) and bool(((urgency >= 0) & (urgency <= 1)).all())
    if isinstance(urgency, list):
        return len(urgency) == rows and all(number(u) for u in urgency)
    return number(urgency)


def valid_count(value, least: int) -> bool:
    return type(value) is int and value >= least


@fuzz(60)
@given(arguments=generate_arguments(), pauses=st.integers(0, 3))
def test_generate_gives_an_answer_or_a_value_error_naming_the_argument(model, arguments, pauses):
    prompts, urgency, max_new_tokens, max_pauses = arguments
    valid = (isinstance(prompts, list) and len(prompts) > 0
             and all(isinstance(p, str) and p and set(p) <= KNOWN for p in prompts)
             and valid_urgency(urgency, len(prompts)) and valid_count(max_new_tokens, 1)
             and valid_count(max_pauses, 0))
    try:
        out = model.generate(prompts, urgency=urgency, policy=FixedPauses(pauses), max_new_tokens=max_new_tokens,
                             max_pauses=max_pauses)
    except ValueError as err:
        event("refused")
        assert not valid, f"valid input refused: {err}"
        assert names_a_field(str(err), ["prompts", "urgency", "max_new_tokens", "max_pauses"]), str(err)
        return
    event("answered")
    assert valid, f"invalid input accepted: {prompts!r} {urgency!r} {max_new_tokens!r} {max_pauses!r}"
    assert len(out.texts) == len(prompts)
    assert all(len(ids) <= max_new_tokens for ids in out.answer_ids)
    assert all(p <= min(pauses, max_pauses) * max_new_tokens for p in out.pauses)
    special = set(model.tokenizer.all_special_ids)
    for prompt, ids in zip(prompts, model.encode(prompts)):
        assert not special & set(ids), f"{prompt!r} encoded to special tokens"  # literal "<pause>" stays text
        assert model.tokenizer.decode(ids) == prompt


# ---- decode settings --------------------------------------------------------------------------------------------

DECODE_FIELDS = {f.name for f in dataclasses.fields(DecodeConfig)}


@fuzz(150)
@given(st.dictionaries(st.sampled_from(sorted(DECODE_FIELDS)), ANY_VALUE, max_size=4))
@example({"stop_strings": "12"})  # one stop string, never the strings "1" and "2"
def test_decode_config_builds_or_names_the_field(kwargs):
    try:
        config = DecodeConfig(**kwargs)
    except ValueError as err:
        assert names_a_field(str(err), DECODE_FIELDS), str(err)
        return
    for name in ("max_new_tokens", "max_pauses", "max_pauses_total", "top_k", "speculate_pauses"):
        value = getattr(config, name)
        assert value is None or type(value) is int, f"{name}={value!r} accepted"
    for name in ("temperature", "top_p"):
        value = getattr(config, name)
        assert type(value) in (int, float) and math.isfinite(value), f"{name}={value!r} accepted"
    assert config.max_new_tokens >= 1 and config.max_pauses >= 0 and config.temperature > 0
    assert all(isinstance(s, str) and s for s in config.stop_strings)
    if isinstance(kwargs.get("stop_strings"), str):
        assert config.stop_strings == (kwargs["stop_strings"],)


# ---- stage configs: mappings, YAML files, flags -----------------------------------------------------------------

CONFIGS = [PretrainConfig, FinetuneConfig, PPOConfig, DemoConfig]


def flat_names(cls, prefix=""):
    for f in dataclasses.fields(cls):
        yield prefix + f.name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            yield from flat_names(type(default), f"{prefix}{f.name}.")
    if cls is PPOConfig:
        from adaptive_pause.envs.analytic import AnalyticEnvConfig

        yield from (f"analytic.{f.name}" for f in dataclasses.fields(AnalyticEnvConfig))


@fuzz(120)
@given(cls=st.sampled_from(CONFIGS), data=st.data())
def test_a_config_mapping_builds_or_names_the_field(cls, data, tmp_path_factory):
    names = sorted(set(flat_names(cls)))
    keys = st.one_of(st.sampled_from([n for n in names if "." not in n]), st.text(min_size=1, max_size=6))
    mapping = data.draw(st.dictionaries(keys, st.one_of(ANY_VALUE, st.dictionaries(
        st.sampled_from(["levels", "max_pauses", "hidden_size", "bogus"]), ANY_VALUE, max_size=2)), max_size=4))
    if cls is not DemoConfig:  # building a config writes nothing; a path that does not exist says so
        mapping.setdefault("output_dir", str(tmp_path_factory.getbasetemp() / "never-written"))
    try:
        from_dict(cls, mapping)
    except ValueError as err:
        assert names_a_field(str(err), names + [str(k) for k in mapping]), str(err)


@fuzz(60)
@given(cls=st.sampled_from(CONFIGS), document=st.one_of(
    st.text(max_size=40), st.sampled_from(["3", "[1, 2]", "tasks: addition", "iterations: 3.7", "a: [", "{",
                                           "learning_rate: 1e-3", "max_steps: 1e3", "!!python/object:os.system {}",
                                           "seed: .nan", "batch_size: -1", "\x00"]),
    st.dictionaries(st.text(max_size=5), ANY_VALUE, max_size=3).map(lambda d: yaml.safe_dump(d))))
def test_a_config_file_loads_or_names_the_field_or_file(cls, document):
    names = sorted(set(flat_names(cls)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(document, encoding="utf-8")
        try:
            parse_cli(cls, ["--config", str(path), "--output_dir" if cls is not DemoConfig else "--out",
                            str(Path(tmp) / "out")])
        except ValueError as err:
            message = str(err)
            yaml_keys = _keys(document)
            assert message.startswith("--config:") or names_a_field(message, names + yaml_keys), message


def _keys(document: str) -> list[str]:
    try:
        data = yaml.safe_load(document)
    except yaml.YAMLError:
        return []
    return [str(k) for k in data] if isinstance(data, dict) else []


FLAG_VALUES = st.one_of(st.text(max_size=6), st.sampled_from(["nan", "inf", "-1", "3.7", "1e-3", "true", "[]",
                                                                "none", "", "--x"]))


@fuzz(80)
@given(cls=st.sampled_from(CONFIGS), data=st.data())
def test_command_line_flags_parse_or_name_the_field(cls, data, capsys):
    names = sorted(set(flat_names(cls)))
    argv = []
    for name in data.draw(st.lists(st.one_of(st.sampled_from(names), st.text("abcxyz_.", min_size=1, max_size=5)),
                                   max_size=3)):
        argv += [f"--{name}", data.draw(FLAG_VALUES)]
    try:
        parse_cli(cls, argv + (["--output_dir" if cls is not DemoConfig else "--out", "/nonexistent/never"]))
    except ValueError as err:
        assert names_a_field(str(err), names), str(err)
    except SystemExit as exit_:  # argparse's own usage error: an unknown flag, a missing value
        assert exit_.code == 2 and "error:" in capsys.readouterr().err


# ---- JSONL task files -------------------------------------------------------------------------------------------

GOOD_ROW = st.fixed_dictionaries({"prompt": st.text(string.printable, min_size=1, max_size=8),
                                  "answer": st.one_of(st.text(max_size=5), st.integers(-99, 99))},
                                 optional={"difficulty": st.integers(0, 5)})
BAD_LINE = st.one_of(
    st.sampled_from(["{", "[1, 2]", "null", "\"text\"", "{\"prompt\": \"a\"}", "{\"answer\": 1}",
                     "{\"prompt\": \"\", \"answer\": 1}", "{\"prompt\": 3, \"answer\": 1}",
                     "{\"prompt\": \"a\", \"answer\": [1]}", "{\"prompt\": \"a\", \"answer\": true}",
                     "{\"prompt\": \"a\", \"answer\": 1, \"difficulty\": 1.5}",
                     "{\"prompt\": \"a\", \"answer\": 1, \"difficulty\": true}", "NaN"]),
    st.text(max_size=12).filter(lambda s: s.strip() and "\n" not in s and "\r" not in s))


@fuzz(60)
@given(lines=st.lists(st.one_of(GOOD_ROW.map(json.dumps), BAD_LINE, st.just("")), max_size=12),
       scorer=st.sampled_from(sorted(SCORERS) + ["", "bogus"]))
def test_a_jsonl_task_file_loads_or_names_the_file_and_line(lines, scorer):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "task.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            task = get_task(f"jsonl:{path}" + (f":{scorer}" if scorer else ""))
            examples = task.examples(4, 0, "train")
        except ValueError as err:
            assert str(path) in str(err), str(err)
            return
        given_rows = []
        for line in lines:
            try:
                given_rows.append(json.loads(line))
            except ValueError:
                continue
        good = {(r["prompt"], str(r["answer"])) for r in given_rows if isinstance(r, dict)}
        assert all((e.prompt, e.answer) in good for e in examples)
        assert scorer in ("", *SCORERS) and (scorer == "" or task.scorer == scorer)


# ---- checkpoint bytes -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_head(tmp_path_factory):
    torch.manual_seed(0)
    head = PauseControllerHead(8, width=16, pause_scale=8.0)
    path = tmp_path_factory.mktemp("head") / "controller"
    save_policy(head, path)
    return path, head.state_dict()


@fuzz(60)
@given(name=st.sampled_from(["controller.safetensors", "config.json"]), data=st.data())
def test_changed_checkpoint_bytes_load_identically_or_name_the_file(saved_head, name, data):
    source, state = saved_head
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "controller"
        shutil.copytree(source, path)
        raw = bytearray((path / name).read_bytes())
        how = data.draw(st.sampled_from(["flip", "truncate", "append", "replace"]))
        at = data.draw(st.integers(0, len(raw) - 1))
        if how == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif how == "truncate":
            del raw[at:]
        elif how == "append":
            raw += data.draw(st.binary(min_size=1, max_size=8))
        else:
            raw = bytearray(data.draw(st.binary(max_size=64)))
        (path / name).write_bytes(bytes(raw))
        try:
            loaded = load_policy(path)
        except ValueError as err:
            assert str(path) in str(err), str(err)
            return
        # loaded anyway: only a change that leaves the meaning intact (e.g. whitespace after the JSON)
        assert json.loads((source / "config.json").read_text()) == json.loads((path / "config.json").read_text())
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("change", [
    ('"controller.safetensors": "', '"bontroller.safetensors": "'),  # the weights' checksum no longer named
    ('"pause_scale": 8.0', '"pause_scale": 9.0'),  # another controller, the weights untouched
    ('"sha256": {', '"sha256": "x", "was": {'),
])
def test_a_controller_config_changed_where_no_tensor_checksum_reaches_is_refused(saved_head, change, tmp_path):
    # Cases the soak found: a flip in config.json loaded as another controller (or unchecked weights).
    path = tmp_path / "controller"
    shutil.copytree(saved_head[0], path)
    config = (path / "config.json").read_text()
    assert change[0] in config
    (path / "config.json").write_text(config.replace(change[0], change[1]))
    with pytest.raises(ValueError, match=re.escape(str(path / "config.json"))):
        load_policy(path)
