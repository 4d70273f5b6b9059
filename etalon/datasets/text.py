"""Text datasets as a prompt source: JSONL/JSON/CSV/Parquet rows with a prompt, or chat messages,
or ShareGPT conversations; optional reference answers set the output length.

Row layouts (the first that applies):
- ``conversations: [{from: human|gpt|system, value}]`` (ShareGPT): the first human turn (after any
  system turn) is the prompt, the gpt turn after it the reference answer;
- ``messages: [{role, content}]``: every message up to the last user message is the prompt, an
  assistant message after it the reference answer;
- ``prompt`` (or ``prompt_field``): a text sent as one user message; ``answer_field`` (default
  the first of completion/response/output/answer present) the reference answer.
Prompt tokens are the contents' tokens with the model's tokenizer (each message encoded on its
own); a reference answer's tokens are its output length unless ``output_tokens: sampler``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from etalon.core.sources import Prompt, PromptPlan, child_seed

if TYPE_CHECKING:
    from etalon.core.prompts import Tokenizer
    from etalon.core.workload import Schedule

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUILTIN_DATASETS = {"etalon-chat-sample": ASSETS_DIR / "chat_sample.json"}
ANSWER_FIELDS = ("completion", "response", "output", "answer")
USER_FROM = ("human", "user")
ASSISTANT_FROM = ("gpt", "assistant", "bot", "chatgpt")
OUTPUT_MODES = ("reference", "sampler")


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or has a bad row; the message names file and row."""


@dataclass(frozen=True)
class DatasetRow:
    """One usable row: the prompt (a text or chat messages) and the reference answer, if any."""

    prompt: Prompt
    answer: str | None
    # Every (user message, reference answer) exchange of a conversation, for multi-turn sessions.
    exchanges: tuple[tuple[str, str | None], ...] = ()


def resolve_path(path: str) -> Path:
    if path in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[path]
    return Path(path).expanduser().resolve()


def read_rows(path: str, prompt_field: str = "prompt", answer_field: str | None = None) -> list[DatasetRow]:
    """Every row of a dataset file (raises DatasetError naming the file and row on bad input).

    ``hf:NAME[:SPLIT]`` reads a Hugging Face dataset instead (needs the optional ``datasets``
    package and a network or a local HF cache; the local-file path is the tested one).
    """
    if path.startswith("hf:"):
        return [_row(Path(path), where, item, prompt_field, answer_field) for where, item in _hub_records(path)]
    resolved = resolve_path(path)
    if not resolved.is_file():
        raise DatasetError(f"dataset {path}: no such file ({resolved})")
    return list(_read_cached(resolved, resolved.stat().st_mtime_ns, prompt_field, answer_field))


@lru_cache(maxsize=8)
def _read_cached(path: Path, mtime_ns: int, prompt_field: str, answer_field: str | None) -> tuple[DatasetRow, ...]:
    raw = _load_records(path)
    if not raw:
        raise DatasetError(f"dataset {path}: is empty (no rows)")
    return tuple(_row(path, where, item, prompt_field, answer_field) for where, item in raw)


def _hub_records(path: str) -> list[tuple[str, Any]]:
    name, _, split = path[3:].partition(":")
    try:
        import datasets  # optional: pip install datasets
    except ImportError:
        raise DatasetError(f"dataset {path}: Hugging Face datasets need the optional package "
                           "'datasets' (pip install datasets); or use a local file") from None
    try:
        data = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # network, missing dataset, bad split: one line with the cause
        raise DatasetError(f"dataset {path}: cannot load: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    return [(f"row {i}", dict(item)) for i, item in enumerate(data)]


def _load_records(path: Path) -> list[tuple[str, Any]]:
    """(location, record) pairs: "line N" for JSONL/CSV, "item N" for JSON, "row N" for Parquet."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            out = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    try:
                        out.append((f"line {number}", json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise DatasetError(f"dataset {path}: line {number}: not valid JSON ({exc.msg})") from None
            return out
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise DatasetError(f"dataset {path}: a JSON dataset must be a list of rows")
            return [(f"item {i}", item) for i, item in enumerate(data)]
        if suffix in (".csv", ".parquet", ".pq"):
            import pandas as pd

            frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
            first = 2 if suffix == ".csv" else 0
            label = "line" if suffix == ".csv" else "row"
            return [(f"{label} {i + first}", rec) for i, rec in enumerate(frame.to_dict(orient="records"))]
    except DatasetError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"dataset {path}: cannot read: {str(exc).strip().splitlines()[0]}") from None
    except Exception as exc:  # pandas/pyarrow parser errors have no common base
        raise DatasetError(f"dataset {path}: cannot read: {type(exc).__name__}: {exc}") from None
    raise DatasetError(f"dataset {path}: unknown format {suffix or '(no suffix)'}; "
                       "use .jsonl, .json, .csv or .parquet")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _row(path: Path, where: str, item: Any, prompt_field: str, answer_field: str | None) -> DatasetRow:
    if not isinstance(item, dict):
        raise DatasetError(f"dataset {path}: {where}: a row must be an object, got {type(item).__name__}")
    if isinstance(item.get("conversations"), list):
        return _sharegpt_row(path, where, item["conversations"])
    if isinstance(item.get("messages"), list):
        return _messages_row(path, where, item["messages"])
    prompt = _text(item.get(prompt_field))
    if prompt is None:
        raise DatasetError(f"dataset {path}: {where}: row has no prompt (no non-empty "
                           f"'{prompt_field}', 'messages' or 'conversations')")
    fields = (answer_field,) if answer_field else ANSWER_FIELDS
    answer = next((_text(item.get(f)) for f in fields if _text(item.get(f))), None)
    return DatasetRow(prompt, answer)


def _exchanges(turns: list[Any]) -> list[tuple[str, str | None]]:
    """(user message, the answer after it) for every user turn of a ShareGPT conversation."""
    out: list[tuple[str, str | None]] = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or str(turn.get("from", "")).lower() not in USER_FROM:
            continue
        value = _text(turn.get("value"))
        if value is None:
            continue
        nxt = turns[k + 1] if k + 1 < len(turns) and isinstance(turns[k + 1], dict) else {}
        answer = _text(nxt.get("value")) if str(nxt.get("from", "")).lower() in ASSISTANT_FROM else None
        out.append((value, answer))
    return out


def _sharegpt_row(path: Path, where: str, turns: list[Any]) -> DatasetRow:
    system: list[dict[str, str]] = []
    exchanges = tuple(_exchanges(turns))
    for turn in turns:
        if not isinstance(turn, dict):
            break
        speaker, value = str(turn.get("from", "")).lower(), _text(turn.get("value"))
        if speaker == "system" and value:
            system = [{"role": "system", "content": value}]
        elif speaker in USER_FROM and value:
            user, answer = exchanges[0]
            return DatasetRow(user if not system else [*system, {"role": "user", "content": user}], answer,
                              exchanges)
    raise DatasetError(f"dataset {path}: {where}: conversation has no user turn "
                       "(no 'from': 'human' entry with a non-empty 'value')")


def _messages_row(path: Path, where: str, messages: list[Any]) -> DatasetRow:
    clean = [m for m in messages if isinstance(m, dict) and _text(m.get("content")) and m.get("role")]
    last_user = max((i for i, m in enumerate(clean) if m["role"] == "user"), default=None)
    if last_user is None:
        raise DatasetError(f"dataset {path}: {where}: messages have no user message with content")
    after = clean[last_user + 1] if last_user + 1 < len(clean) else None
    answer = after["content"] if after is not None and after["role"] == "assistant" else None
    prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in clean[:last_user + 1]]
    return DatasetRow(prompt, answer)


def _prompt_tokens(tokenizer: Tokenizer, prompt: Prompt) -> int:
    if isinstance(prompt, str):
        return len(tokenizer.encode(prompt))
    return sum(len(tokenizer.encode(m["content"])) for m in prompt)


@dataclass(frozen=True)
class DatasetPrompts:
    """Prompts from a dataset file (or ``etalon-chat-sample``, the shipped sample).

    ``min_prompt_tokens``/``max_prompt_tokens`` filter rows; ``output_tokens`` is ``reference``
    (the row's answer length; rows without one use the length sampler) or ``sampler``; rows are
    shuffled with the workload seed when ``shuffle``; ``num_rows`` keeps that many (after
    filters). Request i uses row i of that order, cycling when the run has more requests.
    ``conversations`` (with ``workload.sessions``): session s plays row s's whole conversation,
    one turn per user message, with the answers' lengths (filters do not apply).
    """

    path: str
    prompt_field: str = "prompt"
    answer_field: str | None = None
    min_prompt_tokens: int = 1
    max_prompt_tokens: int | None = None
    output_tokens: str = "reference"
    shuffle: bool = True
    num_rows: int | None = None
    conversations: bool = False
    _checked: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.output_tokens not in OUTPUT_MODES:
            raise ValueError(f"prompts.output_tokens must be one of {', '.join(OUTPUT_MODES)}, "
                             f"got {self.output_tokens!r}")
        if self.min_prompt_tokens < 1 or (self.max_prompt_tokens is not None
                                          and self.max_prompt_tokens < self.min_prompt_tokens):
            raise ValueError(f"prompts.min_prompt_tokens={self.min_prompt_tokens} must be >= 1 and <= "
                             f"prompts.max_prompt_tokens={self.max_prompt_tokens}")
        if self.num_rows is not None and self.num_rows < 1:
            raise ValueError(f"prompts.num_rows must be >= 1 or null, got {self.num_rows}")
        read_rows(self.path, self.prompt_field, self.answer_field)  # bad files fail at config time

    def session_turns(self, num_sessions: int, seed: int, max_turns: int | None) -> np.ndarray:
        """Turns of each session when sessions follow the dataset's conversations (session s =
        row s of the order, its user turns, at most ``max_turns``)."""
        rows = read_rows(self.path, self.prompt_field, self.answer_field)
        order = self._order(np.arange(len(rows)), seed)
        picked = order[np.arange(num_sessions) % order.size]
        turns = np.array([max(len(rows[i].exchanges), 1) for i in picked.tolist()], dtype=np.int64)
        return turns if max_turns is None else np.minimum(turns, max_turns)

    def _order(self, candidates: np.ndarray, seed: int) -> np.ndarray:
        order = np.random.default_rng(child_seed(seed, 4)).permutation(candidates) if self.shuffle else candidates
        return order[: self.num_rows] if self.num_rows is not None else order

    def _session_plan(self, schedule: Schedule, rows: list[DatasetRow], tokenizer: Tokenizer,
                      seed: int) -> PromptPlan:
        """Session s plays row s's conversation: turn k sends its k-th user message and expects
        its k-th answer's length (the sampler's where the row has no such answer)."""
        order = self._order(np.arange(len(rows)), seed)
        prompts: list[Prompt] = []
        output = np.asarray(schedule.output_tokens, dtype=np.int64).copy()
        assert schedule.session_id is not None and schedule.turn is not None
        for k, (sid, turn) in enumerate(zip(schedule.session_id.tolist(), schedule.turn.tolist())):
            row = rows[int(order[sid % order.size])]
            exchanges = row.exchanges or ((row.prompt if isinstance(row.prompt, str) else row.prompt[-1]["content"],
                                           row.answer),)
            user, answer = exchanges[min(turn, len(exchanges) - 1)]
            prompts.append(user)
            if answer is not None and self.output_tokens == "reference":
                output[k] = max(len(tokenizer.encode(answer)), 1)
        tokens = np.array([len(tokenizer.encode(p)) for p in prompts], dtype=np.int64)  # type: ignore[arg-type]
        return PromptPlan(prompts, tokens, output)

    def build(self, schedule: Schedule, tokenizer: Tokenizer, seed: int,
              max_total_tokens: int | None) -> PromptPlan:
        rows = read_rows(self.path, self.prompt_field, self.answer_field)
        if schedule.session_id is not None and self.conversations:
            return self._session_plan(schedule, rows, tokenizer, seed)
        prompt_tokens = np.array([_prompt_tokens(tokenizer, r.prompt) for r in rows], dtype=np.int64)
        upper = self.max_prompt_tokens
        if max_total_tokens is not None:
            upper = max_total_tokens - 1 if upper is None else min(upper, max_total_tokens - 1)
        keep = prompt_tokens >= self.min_prompt_tokens
        if upper is not None:
            keep &= prompt_tokens <= upper
        order = np.flatnonzero(keep)
        if not order.size:
            raise DatasetError(f"dataset {self.path}: no row has {self.min_prompt_tokens}..{upper} prompt "
                               f"tokens ({len(rows)} rows read)")
        order = self._order(order, seed)
        picked = order[np.arange(len(schedule)) % order.size]
        prompts = [rows[i].prompt for i in picked.tolist()]
        tokens = prompt_tokens[picked]
        output = np.asarray(schedule.output_tokens, dtype=np.int64).copy()
        if self.output_tokens == "reference":
            answers = [rows[i].answer for i in picked.tolist()]
            for k, answer in enumerate(answers):
                if answer is not None:
                    output[k] = max(len(tokenizer.encode(answer)), 1)
        if max_total_tokens is not None:
            output = np.minimum(output, max_total_tokens - tokens)
        return PromptPlan(prompts, tokens, output)
