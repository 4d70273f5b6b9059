"""Generate etalon's shipped chat sample: ShareGPT-style conversations written from our own templates.

Run from the repository root: ``python -m etalon.datasets.make_chat_sample``. It rewrites
``etalon/datasets/assets/chat_sample.json``. Every sentence template and word list below was
written for this project, so the sample ships under the project's own licence; nothing is
downloaded. Questions and answers vary in length like real chat traffic (short questions, answers
from a sentence to several paragraphs, 1-4 exchanges per conversation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SAMPLE_PATH = Path(__file__).resolve().parent / "assets" / "chat_sample.json"
SAMPLE_SEED = 20261201
NUM_CONVERSATIONS = 240

TOPICS = ("a bakery", "a small library", "a bicycle repair shop", "a weather station", "a school garden",
          "a train timetable", "a music festival", "a city bus network", "a hospital kitchen",
          "a chess club", "a mountain hut", "a fishing harbour", "a photo archive", "a science fair",
          "a recycling centre", "a food market", "a language course", "a football league",
          "an online shop", "a museum tour", "a power plant", "a water filter", "a rooftop garden",
          "a night shift", "a family budget", "a road trip", "a printing press", "a wind farm")
THINGS = ("the schedule", "the budget", "the first week", "the busiest hour", "the waiting list",
          "the storage room", "the safety rules", "the opening day", "the daily report", "the supplies",
          "the volunteers", "the main entrance", "the old records", "the new machines", "the map")
VERBS = ("plan", "improve", "explain", "measure", "organise", "simplify", "check", "describe",
         "compare", "speed up", "clean up", "document", "test", "prepare", "share")
QUALITIES = ("clear", "careful", "simple", "honest", "quick", "patient", "practical", "steady",
             "friendly", "thorough", "modest", "precise")
QUESTION_TEMPLATES = (
    "How should I {verb} {thing} for {topic}?",
    "Can you {verb} {thing} of {topic} in a few sentences?",
    "What is a {quality} way to {verb} {thing} when running {topic}?",
    "I help out at {topic}. How do we {verb} {thing} without extra cost?",
    "Please {verb} {thing} for {topic}, and say what usually goes wrong.",
    "Why does {thing} matter so much for {topic}?",
    "Give me a {quality} checklist to {verb} {thing} at {topic}.",
)
FOLLOW_UPS = (
    "Thanks. What would you change first?",
    "Could you make that shorter?",
    "And what if we only have one person to do it?",
    "How do we know it worked?",
    "Can you give an example from {topic}?",
    "What should we avoid when we {verb} {thing}?",
)
ANSWER_SENTENCES = (
    "Start by writing down how {thing} works today, step by step.",
    "A {quality} first move is to ask the people who deal with {thing} every day.",
    "At {topic}, {thing} usually fails at the busiest hour, so look there first.",
    "Keep one list of what must happen and a second list of what would be nice.",
    "Measure before and after the change, or you will not know whether it helped.",
    "Small changes that people can keep doing beat a big plan nobody follows.",
    "Write the rule on one page and put it where everyone can see it.",
    "If a step needs a tool, check that the tool is there before the day starts.",
    "Ask one person to own {thing}, so questions have a clear place to go.",
    "Try the new way for one week, then meet for ten minutes and decide.",
    "Most problems with {thing} come from waiting, not from working too slowly.",
    "Count how long each step takes; the slowest one sets the pace for the rest.",
    "A {quality} plan leaves room for a bad day, because bad days always come.",
    "Share the numbers with everyone at {topic}, even when they are not good.",
    "When you {verb} {thing}, change one thing at a time so you can see its effect.",
    "Old habits return quickly, so check again after a month.",
    "Thank the people who tried the change; they are the ones who make it last.",
)


def _fill(template: str, rng: np.random.Generator, topic: str) -> str:
    return template.format(topic=topic, thing=rng.choice(THINGS), verb=rng.choice(VERBS),
                           quality=rng.choice(QUALITIES))


def _answer(rng: np.random.Generator, topic: str) -> str:
    paragraphs = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3, 4]))):
        count = int(rng.integers(1, 7))
        paragraphs.append(" ".join(_fill(rng.choice(ANSWER_SENTENCES), rng, topic) for _ in range(count)))
    return "\n\n".join(paragraphs)


def conversation(rng: np.random.Generator, index: int) -> dict[str, object]:
    topic = str(rng.choice(TOPICS))
    turns = [{"from": "human", "value": _fill(rng.choice(QUESTION_TEMPLATES), rng, topic)},
             {"from": "gpt", "value": _answer(rng, topic)}]
    for _ in range(int(rng.choice([0, 0, 1, 1, 2, 3]))):
        turns.append({"from": "human", "value": _fill(rng.choice(FOLLOW_UPS), rng, topic)})
        turns.append({"from": "gpt", "value": _answer(rng, topic)})
    return {"id": f"etalon-chat-{index:04d}", "conversations": turns}


def make_sample(num_conversations: int = NUM_CONVERSATIONS, seed: int = SAMPLE_SEED) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [conversation(rng, i) for i in range(num_conversations)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(SAMPLE_PATH))
    args = parser.parse_args()
    lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in make_sample())
    Path(args.out).write_text(f"[\n{lines}\n]\n", encoding="utf-8")  # one conversation per line
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
