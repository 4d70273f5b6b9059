"""Real-traffic core: ramps, session layout, shared prefixes, datasets, Mooncake traces, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from etalon.core.arrivals import ClosedLoop, PoissonArrivals
from etalon.core.lengths import FixedLengths, UniformLengths
from etalon.core.ramps import RampArrivals
from etalon.core.sessions import Sessions, session_layout, turn_fits
from etalon.core.sources import SharedPrefixPrompts
from etalon.core.workload import build_schedule
from etalon.datasets.mooncake import MooncakePrompts, MooncakeTraceError, read_mooncake
from etalon.datasets.text import DatasetError, DatasetPrompts, read_rows
from etalon.datasets.tokenizers import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("etalon-bpe-8k")


def test_constant_ramp_puts_every_request_where_the_integrated_rate_says() -> None:
    ramp = RampArrivals([{"duration_s": 10, "rate_rps": 2, "end_rate_rps": 8}, {"duration_s": 5, "rate_rps": 4}],
                        process="constant")
    offsets = ramp.offsets_s(None, None, np.random.default_rng(0))
    # Stage 0 carries (2 + 8) / 2 * 10 = 50 requests; Lambda(t) = 2t + 0.3t^2, so request 30 is at t = 7.08 s.
    assert np.bincount(ramp.stage_of(offsets)).tolist() == [50, 20]
    assert offsets[30] == pytest.approx((-2 + np.sqrt(4 + 4 * 0.3 * 30)) / 0.6)
    assert offsets[50] == pytest.approx(10.0) and offsets[51] == pytest.approx(10.25)
    assert ramp.rate_rps == pytest.approx(70 / 15)


def test_poisson_ramp_has_the_planned_mean_count_per_stage() -> None:
    ramp = RampArrivals([{"duration_s": 10, "rate_rps": 2, "end_rate_rps": 20}], process="poisson")
    counts = [ramp.offsets_s(None, None, np.random.default_rng(s)).size for s in range(300)]
    assert np.mean(counts) == pytest.approx(110, rel=0.02)
    assert np.var(counts) == pytest.approx(110, rel=0.25)  # Poisson: variance = mean
    assert ramp.with_rate(22.0).rate_rps == pytest.approx(22.0)


def test_ramp_bad_input() -> None:
    with pytest.raises(ValueError, match=r"arrival.stages\[1\].duration_s must be a finite number > 0"):
        RampArrivals([{"duration_s": 1, "rate_rps": 1}, {"duration_s": 0, "rate_rps": 1}])
    with pytest.raises(ValueError, match="arrival.process must be one of poisson, constant"):
        RampArrivals([{"duration_s": 1, "rate_rps": 1}], process="burst")
    with pytest.raises(ValueError, match="plan no requests"):
        RampArrivals([{"duration_s": 1, "rate_rps": 0}])


def test_schedule_labels_ramp_stages() -> None:
    ramp = RampArrivals([{"duration_s": 2, "rate_rps": 5, "name": "warm"}, {"duration_s": 2, "rate_rps": 10}],
                        process="constant")
    schedule = build_schedule(ramp, FixedLengths(8, 4), num_requests=None, duration_s=4.0, warmup_requests=0,
                              max_total_tokens=None, seed=1)
    assert schedule.stage_names == ("warm", "stage1")
    assert np.bincount(schedule.load_stage).tolist() == [10, 20]


def test_session_layout_and_schedule() -> None:
    session_id, turn = session_layout(np.array([2, 3, 1]))
    assert session_id.tolist() == [0, 0, 1, 1, 1, 2] and turn.tolist() == [0, 1, 0, 1, 2, 0]
    schedule = build_schedule(PoissonArrivals(2.0), UniformLengths(10, 20, 5, 9), num_requests=4, duration_s=None,
                              warmup_requests=1, max_total_tokens=None, seed=3,
                              sessions=Sessions(turns=2, turns_max=4, think_time_s=0.5))
    assert schedule.num_sessions == 5 and schedule.session_think_time_s == 0.5
    starts = np.flatnonzero(schedule.turn == 0)
    assert np.all(schedule.offsets_ns[schedule.turn > 0] == schedule.offsets_ns[starts][schedule.session_id[schedule.turn > 0]])
    assert schedule.warmup_requests == int((schedule.session_id == 0).sum())  # warm-up counts sessions
    closed = build_schedule(ClosedLoop(2), FixedLengths(4, 4), num_requests=3, duration_s=None, warmup_requests=0,
                            max_total_tokens=None, seed=3, sessions=Sessions(turns=3))
    assert closed.offsets_ns is None and len(closed) == 9
    assert turn_fits(100, 50, 50, 200) and not turn_fits(100, 51, 50, 200) and turn_fits(10**6, 1, 1, None)
    with pytest.raises(ValueError, match="sessions.turns_max must be an integer >= sessions.turns=3"):
        Sessions(turns=3, turns_max=2)


def test_shared_prefix_prompts_and_expected_hits(tokenizer) -> None:
    source = SharedPrefixPrompts(num_groups=3, prefix_tokens=40, distribution="zipf", zipf_s=1.2)
    schedule = build_schedule(PoissonArrivals(1.0), UniformLengths(5, 30, 4, 8), num_requests=50, duration_s=None,
                              warmup_requests=0, max_total_tokens=None, seed=9)
    plan = source.build(schedule, tokenizer, 9, None)
    groups = source.groups(50, 9)
    prefixes = {}
    for prompt, group, total, suffix in zip(plan.prompts, groups, plan.prompt_tokens, schedule.prompt_tokens):
        system, user = prompt
        assert prefixes.setdefault(group, system["content"]) == system["content"]
        assert len(tokenizer.encode(system["content"])) == 40 and len(tokenizer.encode(user["content"])) == suffix
        assert total == 40 + suffix
        # The completions rendering (plain concatenation) keeps both parts' tokens.
        assert len(tokenizer.encode(system["content"] + user["content"])) == total
    assert len(set(prefixes.values())) == 3 and np.bincount(groups)[0] > np.bincount(groups)[2]
    repeats = 50 - len(set(groups.tolist()))
    assert source.expected_hit_fraction(plan.prompt_tokens, 9, 16) == pytest.approx(
        repeats * 32 / plan.prompt_tokens.sum())
    with pytest.raises(ValueError, match="leaves no room for a user message"):
        SharedPrefixPrompts(2, 100).build(schedule, tokenizer, 9, 101)
    with pytest.raises(ValueError, match="prompts.distribution must be one of uniform, zipf"):
        SharedPrefixPrompts(2, 10, distribution="normal")


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_dataset_layouts(tmp_path: Path, tokenizer) -> None:
    jsonl = _write(tmp_path / "a.jsonl", json.dumps({"prompt": "Hello there", "completion": "General Kenobi"}) + "\n\n"
                   + json.dumps({"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                                              {"role": "assistant", "content": "Hello to you"}]}) + "\n")
    rows = read_rows(jsonl)
    assert rows[0].prompt == "Hello there" and rows[0].answer == "General Kenobi"
    assert rows[1].prompt == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    assert rows[1].answer == "Hello to you"
    csv = _write(tmp_path / "b.csv", "prompt,response\nfirst question,short\nsecond question,a longer answer here\n")
    source = DatasetPrompts(csv, shuffle=False)
    schedule = build_schedule(PoissonArrivals(1.0), FixedLengths(1, 99), num_requests=3, duration_s=None,
                              warmup_requests=0, max_total_tokens=None, seed=1)
    plan = source.build(schedule, tokenizer, 1, 8192)
    assert plan.prompts == ["first question", "second question", "first question"]  # cycles in order
    assert plan.output_tokens.tolist() == [len(tokenizer.encode(a)) for a in ("short", "a longer answer here", "short")]
    assert plan.prompt_tokens.tolist() == [len(tokenizer.encode(p)) for p in plan.prompts]
    sampled = DatasetPrompts(csv, output_tokens="sampler").build(schedule, tokenizer, 1, 8192)
    assert sampled.output_tokens.tolist() == [99, 99, 99]
    shipped = read_rows("etalon-chat-sample")
    assert len(shipped) == 240 and all(isinstance(r.prompt, str) and r.answer for r in shipped)


@pytest.mark.parametrize("name, text, message", [
    ("missing.jsonl", None, "dataset {path}: no such file"),
    ("empty.jsonl", "\n", "dataset {path}: is empty"),
    ("bad.jsonl", '{"prompt": "ok"}\n{"nope": 1}\n', "dataset {path}: line 2: row has no prompt"),
    ("broken.jsonl", '{"prompt": "ok"}\n{oops\n', "dataset {path}: line 2: not valid JSON"),
    ("conv.json", '[{"conversations": [{"from": "gpt", "value": "hi"}]}]',
     "dataset {path}: item 0: conversation has no user turn"),
    ("table.xlsx", "x", "dataset {path}: unknown format .xlsx"),
])
def test_dataset_bad_input(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(DatasetError) as info:
        DatasetPrompts(str(path))
    assert str(info.value).startswith(message.format(path=path))


def test_dataset_filters_leave_no_row(tmp_path: Path, tokenizer) -> None:
    path = _write(tmp_path / "c.jsonl", json.dumps({"prompt": "a few words only"}) + "\n")
    schedule = build_schedule(PoissonArrivals(1.0), FixedLengths(1, 4), num_requests=1, duration_s=None,
                              warmup_requests=0, max_total_tokens=None, seed=1)
    with pytest.raises(DatasetError, match="no row has 100..8191 prompt tokens"):
        DatasetPrompts(path, min_prompt_tokens=100).build(schedule, tokenizer, 1, 8192)


def _trace(tmp_path: Path, rows: list[dict]) -> str:
    return _write(tmp_path / "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def test_mooncake_window_scale_and_reuse(tmp_path: Path, tokenizer) -> None:
    rows = [{"timestamp": 1000 * i, "input_length": 2 * 512 + 100, "output_length": 10, "hash_ids": [1, 2, 10 + i]}
            for i in range(5)]
    path = _trace(tmp_path, rows)
    trace = read_mooncake(path)
    assert trace.block_reuse() == pytest.approx(4 * 1024 / (5 * 1124))
    window = read_mooncake(path, start_s=1.0, end_s=3.0, length_scale=0.5)
    assert window.arrival_s.tolist() == [0.0, 1.0] and window.block_size_tokens == 256
    assert window.input_tokens.tolist() == [2 * 256 + 50] * 2 and window.output_tokens.tolist() == [5, 5]
    source = MooncakePrompts(path, block_size_tokens=512)
    prompts = source.build(type("S", (), {"__len__": lambda self: 5})(), tokenizer, 3, 8192).prompts
    encoded = [tokenizer.encode(p) for p in prompts]
    assert all(len(e) == 1124 for e in encoded)
    assert all(e[:1024] == encoded[0][:1024] for e in encoded)  # hash ids 1, 2: the same tokens
    assert len({tuple(e[1024:]) for e in encoded}) == 5  # own last blocks differ


@pytest.mark.parametrize("rows, message", [
    ([{"timestamp": 0, "input_length": -5, "output_length": 1, "hash_ids": [1]}],
     "line 1: input_length must be a whole number >= 1, got -5"),
    ([{"timestamp": 5, "input_length": 10, "output_length": 1, "hash_ids": [1]},
      {"timestamp": 4, "input_length": 10, "output_length": 1, "hash_ids": [2]}],
     "line 2: timestamp 4 ms is before the previous row's 5 ms"),
    ([{"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1]}],
     "line 1: 1 hash_ids of 512-token blocks cannot hold input_length=600"),
    ([{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": []}],
     "line 1: hash_ids must be a non-empty list"),
])
def test_mooncake_bad_rows(tmp_path: Path, rows: list[dict], message: str) -> None:
    path = _trace(tmp_path, rows)
    with pytest.raises(MooncakeTraceError) as info:
        MooncakePrompts(path)
    assert str(info.value) == f"mooncake trace {path}: {message}" or message in str(info.value)
    assert str(info.value).startswith(f"mooncake trace {path}: line ")


def test_mooncake_prompt_longer_than_context(tmp_path: Path, tokenizer) -> None:
    path = _trace(tmp_path, [{"timestamp": 0, "input_length": 1000, "output_length": 1, "hash_ids": [1, 2]}])
    with pytest.raises(MooncakeTraceError, match="row 0 has input_length=1000, more than the model's context"):
        MooncakePrompts(path).build(type("S", (), {"__len__": lambda self: 1})(), tokenizer, 1, 512)


def test_dataset_conversations_become_sessions(tmp_path: Path, tokenizer) -> None:
    conversations = [{"conversations": [{"from": "human", "value": "first question"}, {"from": "gpt", "value": "one two"},
                                        {"from": "human", "value": "second"}, {"from": "gpt", "value": "three"}]},
                     {"conversations": [{"from": "human", "value": "only question"}, {"from": "gpt", "value": "yes"}]}]
    path = _write(tmp_path / "conv.json", json.dumps(conversations))
    source = DatasetPrompts(path, shuffle=False, conversations=True)
    turns = source.session_turns(3, 1, None)
    assert turns.tolist() == [2, 1, 2]
    schedule = build_schedule(PoissonArrivals(1.0), FixedLengths(1, 50), num_requests=3, duration_s=None,
                              warmup_requests=0, max_total_tokens=None, seed=1,
                              sessions=Sessions(from_dataset=True), session_turns=lambda n: source.session_turns(n, 1, None))
    plan = source.build(schedule, tokenizer, 1, 8192)
    assert plan.prompts == ["first question", "second", "only question", "first question", "second"]
    assert plan.output_tokens.tolist() == [len(tokenizer.encode(a)) for a in ("one two", "three", "yes", "one two", "three")]
    assert source.session_turns(3, 1, 1).tolist() == [1, 1, 1]


def test_hugging_face_names_go_through_load_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The hub itself is out of reach here: a stand-in `datasets` module checks what etalon asks
    # for (name, split) and that hub rows map like file rows (prompt/answer, ShareGPT, errors).
    import sys
    import types

    calls: list[tuple[str, str]] = []

    def load_dataset(name: str, split: str) -> list[dict]:
        calls.append((name, split))
        if name == "org/missing":
            raise FileNotFoundError("Dataset 'org/missing' doesn't exist on the Hub\nsecond line")
        return [{"question": "What is 2+2?", "answer": "4"},
                {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    rows = read_rows("hf:org/qa:test", prompt_field="question", answer_field="answer")
    assert calls == [("org/qa", "test")]
    assert (rows[0].prompt, rows[0].answer) == ("What is 2+2?", "4")
    same_as_file = read_rows(_write(tmp_path / "hub.jsonl", "\n".join(json.dumps(r) for r in load_dataset("x", "y"))),
                             prompt_field="question", answer_field="answer")
    assert rows == same_as_file and (rows[1].prompt, rows[1].answer) == ("Hi", "Hello")
    read_rows("hf:org/qa", prompt_field="question")
    assert calls[-1] == ("org/qa", "train")  # the default split
    with pytest.raises(DatasetError, match=r"^dataset hf:org/missing: cannot load: FileNotFoundError: "
                                           r"Dataset 'org/missing' doesn't exist on the Hub$"):
        read_rows("hf:org/missing")
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed: import raises ImportError
    with pytest.raises(DatasetError, match=r"optional package 'datasets' \(pip install datasets\)"):
        read_rows("hf:org/qa")
