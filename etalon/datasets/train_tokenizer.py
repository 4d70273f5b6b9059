"""Generate etalon's own training corpus and train the shipped byte-level BPE tokenizer on it.

Run from the repository root: ``python -m etalon.datasets.train_tokenizer``. It rewrites
``etalon/datasets/assets/tokenizer_corpus.txt`` and ``etalon/datasets/assets/etalon-bpe-8k.json``.
Every word below was written for this project; nothing is downloaded or copied, so the tokenizer
ships under the project's own licence. (Run it with ``-m``: running the file directly would put
this folder on sys.path, and our ``tokenizers.py`` would shadow the ``tokenizers`` library.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
CORPUS_PATH = ASSETS_DIR / "tokenizer_corpus.txt"
TOKENIZER_PATH = ASSETS_DIR / "etalon-bpe-8k.json"
VOCAB_SIZE = 8192
CORPUS_SEED = 20240710
CORPUS_BYTES = 600_000
END_OF_TEXT = "<|endoftext|>"

# Word lists written for this corpus. Stems take suffixes below to give many real-looking forms,
# so that the BPE vocabulary fills up with whole words and useful sub-words.
NOUN_STEMS = """
time year day week hour minute second moment people person family child friend student teacher
worker manager engineer doctor player writer reader speaker listener user customer client server
request response token prompt model batch queue cache memory disk network packet socket thread
process kernel driver device engine machine computer system service platform cluster node region
river mountain forest garden field ocean island valley desert city village street road bridge
house room window door table chair kitchen office school market store library museum hospital
country state nation government company business industry factory farm bank budget price cost
paper book letter story novel poem song music picture image camera screen phone message signal
number value result answer question problem solution method theory idea reason example pattern
point line shape circle square surface edge corner center border layer level stage phase step
water fire earth stone metal wood glass paper cloth bread fruit apple orange lemon coffee tea milk
animal bird fish horse dog cat tree flower leaf root seed grain cloud rain snow storm wind light
color sound voice word name sentence language letter chapter page record table column row file
report chart plot graph figure metric sample trace workload benchmark experiment test trial run
deadline latency throughput capacity rate budget limit target goal plan schedule calendar event
season summer winter spring autumn morning evening night weekend holiday journey trip flight train
health energy power force speed weight height length width depth distance area volume pressure
history culture science art nature society economy policy law rule order power freedom peace war
world thing way life hand part place case group company fact eye head side kind body face door
money game job line end member law car guy minute idea kid body information back parent face
level office door health art war history party result change morning reason research girl boy
hello party moment air teacher force education foot boy age policy music land food truth heart
software hardware database account password browser website keyboard mouse monitor printer cable
protocol address header body status error warning failure success attempt sequence vector matrix
""".split()

VERB_STEMS = """
work play read write speak listen learn teach build break make take give send receive open close
start finish begin end move stop run walk jump climb fall rise grow shrink turn return carry hold
keep help call answer ask explain describe measure compare count check test watch look find search
follow lead plan prepare cook clean wash paint draw print copy paste store load save delete create
change improve reduce increase limit allow prevent protect support accept reject arrive leave travel
visit enter exit join split merge sort filter map collect gather share borrow lend pay spend earn
sell buy order deliver ship pack wrap launch deploy serve stream decode encode predict estimate fit
schedule queue retry wait sleep wake dream think believe remember forget imagine notice consider
decide choose prefer enjoy hate love like want need hope wish expect report record observe track
know see get go come say tell feel become seem leave put mean let show hear talk bring happen sit
stand lose meet include continue set learn lead understand watch follow stop speak read spend grow
offer die send expect build stay fall cut reach kill remain suggest raise pass sell require decide
pull push drop lift throw catch kick hit shoot sing dance swim fly drive ride fix mix solve prove
""".split()

ADJECTIVES = """
good new first last long great little own other old right big high different small large next early
young important few public bad same able late hard major better economic strong possible whole free
military true federal international full special easy clear recent certain personal open red difficult
available likely short single medical current wrong private past foreign fine common poor natural
significant similar hot dead central happy serious ready simple left physical general environmental
financial blue democratic dark various entire close legal religious cold final main green nice huge
popular traditional cultural quick slow bright quiet loud warm cool soft heavy light rich empty busy
careful gentle honest patient proud calm brave clever curious fair fast steady smooth rough sharp
""".split()

ADVERBS = """
quickly slowly carefully quietly loudly easily rarely often always never sometimes usually finally
suddenly nearly almost really simply clearly gently briefly openly fairly truly deeply highly widely
""".split()

FUNCTION_WORDS = """
the a an and or but if then else when while because so as of in on at to from by with without
about over under between through during before after above below into onto upon within across
this that these those it its they them their we our you your he she his her i me my us
is are was were be been being have has had do does did will would can could should may might must
not no yes all any some each every many much more most less least very too also just only even
there here where why how what which who whom whose than such both either neither nor
""".split()

TECH_TERMS = """
API HTTP JSON YAML SSE TCP GPU CPU RAM SLO TTFT TBT TPOT p50 p90 p99 KV vLLM SGLang MLflow Ray Hydra
Python numpy pandas asyncio aiohttp endpoint config pipeline stage probe bisect percentile quantile
histogram median mean variance deviation regression prefill decode chunked preemption scheduler
iteration sequence context window stream chunk header payload timeout retry backoff
""".split()

SUFFIXES_NOUN = ["", "s", "'s"]
SUFFIXES_VERB = ["", "s", "ed", "ing", "er", "ers", "able"]
SUFFIXES_ADJ = ["", "ly", "ness", "er", "est"]
PREFIXES = ["", "", "", "", "re", "un", "pre", "over", "under", "multi", "non", "co"]
SYLLABLES = """
ka lo mi ne ra su ti va ze bo cu de fa gi hu jo ke li mo nu pa qui ro sa tu ve wo xi yo za an
el in on un ar er or ur al il ol ul ent ion ous ive ance ment ful less ship hood ward wise
""".split()

PROSE = """
Etalon measures how an inference service feels to the people who use it and how much load it can
carry before it breaks its promises. A user declares a workload: how requests arrive, how long the
prompts and answers are, and how many requests to send. The tool turns that declaration into a
schedule, sends every request on time, records the arrival time of each token, and reports
latency distributions, deadline misses, and the highest request rate that still meets the target.
Every run can be repeated from its saved configuration, and every result can be compared later.
A careful benchmark never hides the moments when the client fell behind its own plan.
"""


def _inflect(stem: str, suffix: str) -> str:
    """Join a stem and a suffix with the usual spelling fixes (enough to look like English)."""
    if suffix in ("ed", "er", "ers", "est", "able") and stem.endswith("e"):
        return stem[:-1] + suffix
    if suffix == "ing" and stem.endswith("e") and not stem.endswith("ee"):
        return stem[:-1] + suffix
    if suffix == "ly" and stem.endswith("y"):
        return stem[:-1] + "ily"
    return stem + suffix


def _word(rng: np.random.Generator, stems: list[str], suffixes: list[str]) -> str:
    prefix = PREFIXES[rng.integers(len(PREFIXES))] if rng.random() < 0.15 else ""
    return prefix + _inflect(stems[rng.integers(len(stems))], suffixes[rng.integers(len(suffixes))])


def _pseudo_word(rng: np.random.Generator) -> str:
    """An invented word: teaches the BPE sub-word pieces for words it has never seen."""
    return "".join(SYLLABLES[i] for i in rng.integers(len(SYLLABLES), size=rng.integers(2, 5)))


def _sentence(rng: np.random.Generator) -> str:
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    parts = [pick(FUNCTION_WORDS), _word(rng, ADJECTIVES, SUFFIXES_ADJ), _word(rng, NOUN_STEMS, SUFFIXES_NOUN)]
    parts += [_word(rng, VERB_STEMS, SUFFIXES_VERB), pick(FUNCTION_WORDS), pick(ADVERBS)]
    for _ in range(rng.integers(2, 10)):
        roll = rng.random()
        if roll < 0.30:
            parts.append(_word(rng, NOUN_STEMS, SUFFIXES_NOUN))
        elif roll < 0.50:
            parts.append(_word(rng, VERB_STEMS, SUFFIXES_VERB))
        elif roll < 0.65:
            parts.append(pick(FUNCTION_WORDS))
        elif roll < 0.75:
            parts.append(_word(rng, ADJECTIVES, SUFFIXES_ADJ))
        elif roll < 0.82:
            parts.append(pick(TECH_TERMS))
        elif roll < 0.90:
            parts.append(str(int(rng.integers(0, 10 ** int(rng.integers(1, 5))))))
        elif roll < 0.95:
            parts.append(_pseudo_word(rng))
        else:
            parts.append(pick([",", ";", ":", "-", "(", ")", "\"", "/", "=", "%"]))
    rng.shuffle(parts)
    text = " ".join(parts)
    return text[0].upper() + text[1:] + pick([".", ".", ".", "?", "!"])


def _code_line(rng: np.random.Generator) -> str:
    """A line of Python- or YAML-looking text, so code prompts tokenize sensibly too."""
    name = "_".join(_word(rng, NOUN_STEMS, [""]) for _ in range(rng.integers(1, 4)))
    value = int(rng.integers(0, 100000))
    templates = [
        f"{name} = {value}",
        f"def {name}(x: int) -> int:\n    return x * {value}",
        f"  {name}: {value}",
        f'{{"{name}": {value}, "ok": true}}',
        f"if {name} > {value}:\n    {name} += 1",
        f"# {_sentence(rng)}",
    ]
    return templates[int(rng.integers(len(templates)))]


def generate_corpus(seed: int = CORPUS_SEED, target_bytes: int = CORPUS_BYTES) -> str:
    """Build the training text: procedural sentences, code-like lines and the project's prose."""
    rng = np.random.default_rng(seed)
    paragraphs = [PROSE.strip()]
    size = len(PROSE)
    while size < target_bytes:
        if rng.random() < 0.2:
            para = "\n".join(_code_line(rng) for _ in range(rng.integers(2, 6)))
        else:
            para = " ".join(_sentence(rng) for _ in range(rng.integers(2, 7)))
        paragraphs.append(para)
        size += len(para) + 2
    return "\n\n".join(paragraphs) + "\n"


def train(corpus: str, vocab_size: int = VOCAB_SIZE):  # -> tokenizers.Tokenizer
    """Train a GPT-2-style byte-level BPE (no normalizer, no special tokens added on encode)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[END_OF_TEXT],
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus.split("\n\n"), trainer=trainer)
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=CORPUS_SEED)
    parser.add_argument("--corpus-bytes", type=int, default=CORPUS_BYTES)
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args()
    corpus = generate_corpus(args.seed, args.corpus_bytes)
    ASSETS_DIR.mkdir(parents=True, exist_ok=True)
    CORPUS_PATH.write_text(corpus, encoding="utf-8")
    tokenizer = train(corpus, args.vocab_size)
    tokenizer.save(str(TOKENIZER_PATH), pretty=False)
    print(f"corpus {len(corpus.encode())} bytes -> {CORPUS_PATH}")
    print(f"vocab {tokenizer.get_vocab_size()} -> {TOKENIZER_PATH} ({TOKENIZER_PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
