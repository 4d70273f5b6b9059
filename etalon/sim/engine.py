"""Pure continuous-batching engine core: step composition, KV-cache blocks, preemption, step time.

No clock and no event loop: the async driver calls ``schedule()``, sleeps the modelled step time,
then calls ``commit()`` which returns the tokens produced by the step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field

from etalon.sim.config import LatencyConfig
from etalon.sim.kv_cache import BlockPool, extend_block_hashes

NEVER = 1 << 62  # next_block_end of a sequence that is not cached
# vLLM keeps ~1% of the KV blocks free at admission so that running decodes can grow.
WATERMARK_FRACTION = 0.01


@dataclass(slots=True, eq=False)
class Sequence:
    """One request inside the engine; ``computed_tokens`` have KV in the cache.

    ``token_ids`` (prompt then planned output ids) feed the prefix cache; ``cached_tokens`` is
    what the cache supplied at the first admission (None until then), as servers report it.
    """

    seq_id: int
    arrival_order: int
    prompt_tokens: int
    target_output_tokens: int
    generated_tokens: int = 0
    computed_tokens: int = 0
    blocks: list[int] = field(default_factory=list)
    aborted: bool = False
    token_ids: SequenceOf[int] | None = None
    block_hashes: list[int] = field(default_factory=list)
    registered_blocks: int = 0
    next_block_end: int = NEVER  # computed_tokens at which its next full block can be cached
    cached_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.generated_tokens

    @property
    def pending_tokens(self) -> int:
        return self.total_tokens - self.computed_tokens

    @property
    def is_decoding(self) -> bool:
        return self.generated_tokens > 0 and self.pending_tokens == 1


@dataclass(slots=True)
class StepPlan:
    """What one engine step computes: (sequence, tokens) items plus the latency-model inputs."""

    items: list[tuple[Sequence, int]] = field(default_factory=list)
    prefill_tokens: int = 0
    decode_seqs: int = 0
    context_tokens: int = 0
    new_seqs: int = 0
    preempted_ids: list[int] = field(default_factory=list)

    def add(self, seq: Sequence, num_tokens: int) -> None:
        if seq.is_decoding:
            self.decode_seqs += 1
        else:
            self.prefill_tokens += num_tokens
            if seq.generated_tokens == 0 and seq.computed_tokens == (seq.cached_tokens or 0):
                self.new_seqs += 1  # its first prefill chunk
        # KV read by attention: the sequence's whole context after this step's tokens.
        self.context_tokens += seq.computed_tokens + num_tokens
        self.items.append((seq, num_tokens))


@dataclass(slots=True, frozen=True)
class TokenEvent:
    """One output token produced by a step: its 1-based index and whether the request is done."""

    seq_id: int
    token_index: int
    finished: bool
    cached_tokens: int = 0


def step_time_s(plan: StepPlan, latency: LatencyConfig) -> float:
    """Modelled step duration in seconds: overhead + prefill tokens + decode seqs + context read
    + sequences started."""
    if not plan.items:
        return 0.0
    return (latency.step_overhead_s
            + latency.per_prefill_token_s * plan.prefill_tokens
            + latency.per_decode_seq_s * plan.decode_seqs
            + latency.per_context_token_s * plan.context_tokens
            + latency.per_new_seq_s * plan.new_seqs)


class EngineCore:
    """vLLM-like scheduler state: a FCFS waiting queue, running sequences and a block KV cache.

    With ``prefix_caching`` a sequence admitted with token ids starts from the longest cached
    prefix of its blocks (at least one token is always computed, as in vLLM), so those tokens
    cost no prefill; queries and hits are counted in tokens at each sequence's first admission.
    """

    def __init__(self, policy: str, max_num_seqs: int, max_num_batched_tokens: int,
                 kv_cache_tokens: int, block_size_tokens: int, prefix_caching: bool = False) -> None:
        if policy not in ("prefill_first", "chunked"):
            raise ValueError(f"engine policy {policy!r} is not prefill_first or chunked")
        self.policy = policy
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.block_size_tokens = block_size_tokens
        self.total_blocks = kv_cache_tokens // block_size_tokens
        self.pool = BlockPool(self.total_blocks, prefix_caching)
        self.prefix_cache_queries_tokens = 0
        self.prefix_cache_hits_tokens = 0
        self.watermark_blocks = int(self.total_blocks * WATERMARK_FRACTION)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # ordered by arrival, oldest first
        self.by_id: dict[int, Sequence] = {}
        self.num_preemptions = 0
        self._arrivals = 0

    # ---- bookkeeping -------------------------------------------------------------------------
    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size_tokens)

    def fits_ever(self, total_tokens: int) -> bool:
        """Whether a sequence of this many tokens can ever be held by the KV cache."""
        return self.blocks_for(total_tokens) <= self.total_blocks - self.watermark_blocks

    @property
    def free_blocks(self) -> int:
        return self.pool.num_free

    def add(self, seq_id: int, prompt_tokens: int, target_output_tokens: int,
            token_ids: SequenceOf[int] | None = None) -> Sequence:
        if prompt_tokens < 1 or target_output_tokens < 1:
            raise ValueError("a sequence needs >= 1 prompt token and >= 1 output token")
        if token_ids is not None and len(token_ids) < prompt_tokens:
            raise ValueError(f"{len(token_ids)} token ids for a prompt of {prompt_tokens} tokens")
        if not self.fits_ever(prompt_tokens + target_output_tokens):
            raise ValueError(
                f"{prompt_tokens}+{target_output_tokens} tokens never fit the KV cache of "
                f"{self.total_blocks * self.block_size_tokens} tokens")
        seq = Sequence(seq_id, self._arrivals, prompt_tokens, target_output_tokens,
                       token_ids=token_ids if self.pool.caching else None)
        self._arrivals += 1
        self.by_id[seq_id] = seq
        self.waiting.append(seq)
        return seq

    def abort(self, seq_id: int) -> None:
        seq = self.by_id.pop(seq_id, None)
        if seq is None:
            return
        seq.aborted = True
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._free(seq)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def kv_usage(self) -> float:
        return 1.0 - self.free_blocks / self.total_blocks if self.total_blocks else 0.0

    def _free(self, seq: Sequence) -> None:
        self.pool.release(seq.blocks)
        seq.blocks = []
        seq.registered_blocks = 0

    def _cache_hits(self, seq: Sequence) -> list[int]:
        """Cached blocks of the sequence's longest cached prefix, leaving >= 1 token to compute."""
        if seq.token_ids is None:
            return []
        usable = (seq.total_tokens - 1) // self.block_size_tokens
        hashes = extend_block_hashes(seq.block_hashes, seq.token_ids, self.block_size_tokens, usable)
        return self.pool.lookup(hashes[:usable])

    def _admit(self, seq: Sequence) -> bool:
        """Move the head of the waiting queue to running if its whole context fits the cache."""
        if len(self.running) >= self.max_num_seqs:
            return False
        hits = self._cache_hits(seq)
        need = self.blocks_for(seq.total_tokens) - len(hits)
        if self.pool.num_free - self.pool.free_among(hits) - need < self.watermark_blocks:
            return False
        self.waiting.popleft()
        self.pool.acquire(hits)
        seq.blocks = hits + self.pool.allocate(need)
        seq.registered_blocks = len(hits)
        if seq.token_ids is not None:
            seq.next_block_end = (len(hits) + 1) * self.block_size_tokens
        seq.computed_tokens = len(hits) * self.block_size_tokens
        if seq.cached_tokens is None:  # stats and the reported figure: first admission only
            seq.cached_tokens = seq.computed_tokens
            if self.pool.caching:
                self.prefix_cache_queries_tokens += seq.prompt_tokens
                self.prefix_cache_hits_tokens += seq.computed_tokens
        self.running.append(seq)
        self.running.sort(key=lambda s: s.arrival_order)
        return True

    def _register_computed(self, seq: Sequence) -> None:
        """Cache the sequence's full blocks whose KV is now computed."""
        full = seq.computed_tokens // self.block_size_tokens
        if full <= seq.registered_blocks or seq.token_ids is None:
            seq.next_block_end = (seq.registered_blocks + 1) * self.block_size_tokens
            return
        hashes = extend_block_hashes(seq.block_hashes, seq.token_ids, self.block_size_tokens, full)
        for i in range(seq.registered_blocks, len(hashes)):
            self.pool.register(seq.blocks[i], hashes[i])
        seq.registered_blocks = full
        seq.next_block_end = (full + 1) * self.block_size_tokens

    def _preempt(self, seq: Sequence, plan: StepPlan) -> None:
        """Recompute-preemption: drop the KV, keep emitted tokens, requeue at the front."""
        self.running.remove(seq)
        self._free(seq)
        seq.computed_tokens = 0
        self.waiting.appendleft(seq)
        self.num_preemptions += 1
        plan.preempted_ids.append(seq.seq_id)

    # ---- scheduling --------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        """Compose the next step; reserves KV blocks and preempts as needed."""
        plan = StepPlan()
        if self.policy == "prefill_first":
            self._schedule_prefills(plan, self.max_num_batched_tokens, whole_prompts=True)
            if plan.items:
                return plan  # a prefill step carries whole prompts only; decodes wait
            self._schedule_decodes(plan, self.max_num_batched_tokens)
            return plan
        budget = self._schedule_decodes(plan, self.max_num_batched_tokens)
        for seq in self.running:  # partial prefills already admitted (chunked prefill)
            if budget == 0:
                break
            if not seq.is_decoding:
                num = min(seq.pending_tokens, budget)
                plan.add(seq, num)
                budget -= num
        self._schedule_prefills(plan, budget, whole_prompts=False)
        return plan

    def _schedule_prefills(self, plan: StepPlan, budget: int, whole_prompts: bool) -> int:
        while self.waiting and budget > 0:
            seq = self.waiting[0]
            # A prompt larger than the budget still runs alone rather than starving forever
            # (judged before cache hits are known: a conservative check, at most a step later).
            if whole_prompts and seq.pending_tokens > budget and plan.items:
                break
            if not self._admit(seq):
                break
            need = seq.pending_tokens  # after admission: cached blocks are already computed
            num = need if whole_prompts else min(need, budget)
            plan.add(seq, num)
            budget -= num
        return max(budget, 0)

    def _schedule_decodes(self, plan: StepPlan, budget: int) -> int:
        block_size = self.block_size_tokens
        queue = deque(s for s in self.running if s.is_decoding)
        while queue and budget > 0:
            seq = queue.popleft()
            # The next token needs a new block only when the last one is full (1 step in B).
            if seq.total_tokens > len(seq.blocks) * block_size and not self._grow(seq, queue, plan):
                continue
            plan.add(seq, 1)
            budget -= 1
        return budget

    def _grow(self, seq: Sequence, queue: deque[Sequence], plan: StepPlan) -> bool:
        """Give ``seq`` the blocks its next token needs, preempting the newest others if needed;
        False if ``seq`` itself had to be preempted."""
        need = self.blocks_for(seq.total_tokens) - len(seq.blocks)
        victim: Sequence | None = None
        while need > self.pool.num_free and victim is not seq:
            victim = self._newest_unscheduled(queue, seq)
            if victim in queue:
                queue.remove(victim)
            self._preempt(victim, plan)
        if victim is seq:
            return False
        seq.blocks.extend(self.pool.allocate(need))
        return True

    def _newest_unscheduled(self, queue: deque[Sequence], current: Sequence) -> Sequence:
        """The newest running sequence not yet in this step (vLLM pops the running queue's tail)."""
        for seq in reversed(self.running):
            if seq is not current and (seq in queue or not seq.is_decoding):
                return seq
        return current

    def commit(self, plan: StepPlan) -> list[TokenEvent]:
        """Apply a finished step: advance KV, sample one token where a context is complete."""
        events: list[TokenEvent] = []
        for seq, num in plan.items:
            if seq.aborted:
                continue
            seq.computed_tokens += num
            if seq.computed_tokens >= seq.next_block_end:
                self._register_computed(seq)
            if seq.computed_tokens < seq.total_tokens:
                continue  # a chunk of a longer prefill: no token yet
            seq.generated_tokens += 1
            finished = seq.generated_tokens >= seq.target_output_tokens
            events.append(TokenEvent(seq.seq_id, seq.generated_tokens, finished,
                                     seq.cached_tokens or 0))
            if finished:
                self.running.remove(seq)
                self.by_id.pop(seq.seq_id, None)
                self._free(seq)
        return events

