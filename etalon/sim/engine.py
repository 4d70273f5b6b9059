"""Pure continuous-batching engine core: step composition, KV-cache blocks, preemption, step time.

No clock and no event loop: the async driver calls ``schedule()``, sleeps the modelled step time,
then calls ``commit()`` which returns the tokens produced by the step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from etalon.sim.config import LatencyConfig

# vLLM keeps ~1% of the KV blocks free at admission so that running decodes can grow.
WATERMARK_FRACTION = 0.01


@dataclass(slots=True, eq=False)
class Sequence:
    """One request inside the engine; ``computed_tokens`` have KV in the cache."""

    seq_id: int
    arrival_order: int
    prompt_tokens: int
    target_output_tokens: int
    generated_tokens: int = 0
    computed_tokens: int = 0
    blocks: int = 0
    aborted: bool = False

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
    preempted_ids: list[int] = field(default_factory=list)

    def add(self, seq: Sequence, num_tokens: int) -> None:
        if seq.is_decoding:
            self.decode_seqs += 1
        else:
            self.prefill_tokens += num_tokens
        # KV read by attention: the sequence's whole context after this step's tokens.
        self.context_tokens += seq.computed_tokens + num_tokens
        self.items.append((seq, num_tokens))


@dataclass(slots=True, frozen=True)
class TokenEvent:
    """One output token produced by a step: its 1-based index and whether the request is done."""

    seq_id: int
    token_index: int
    finished: bool


def step_time_s(plan: StepPlan, latency: LatencyConfig) -> float:
    """Modelled step duration in seconds: overhead + prefill tokens + decode seqs + context read."""
    if not plan.items:
        return 0.0
    return (latency.step_overhead_s
            + latency.per_prefill_token_s * plan.prefill_tokens
            + latency.per_decode_seq_s * plan.decode_seqs
            + latency.per_context_token_s * plan.context_tokens)


class EngineCore:
    """vLLM-like scheduler state: a FCFS waiting queue, running sequences and a block KV cache."""

    def __init__(self, policy: str, max_num_seqs: int, max_num_batched_tokens: int,
                 kv_cache_tokens: int, block_size_tokens: int) -> None:
        if policy not in ("prefill_first", "chunked"):
            raise ValueError(f"engine policy {policy!r} is not prefill_first or chunked")
        self.policy = policy
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.block_size_tokens = block_size_tokens
        self.total_blocks = kv_cache_tokens // block_size_tokens
        self.free_blocks = self.total_blocks
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

    def add(self, seq_id: int, prompt_tokens: int, target_output_tokens: int) -> None:
        if prompt_tokens < 1 or target_output_tokens < 1:
            raise ValueError("a sequence needs >= 1 prompt token and >= 1 output token")
        if not self.fits_ever(prompt_tokens + target_output_tokens):
            raise ValueError(
                f"{prompt_tokens}+{target_output_tokens} tokens never fit the KV cache of "
                f"{self.total_blocks * self.block_size_tokens} tokens")
        seq = Sequence(seq_id, self._arrivals, prompt_tokens, target_output_tokens)
        self._arrivals += 1
        self.by_id[seq_id] = seq
        self.waiting.append(seq)

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
        self.free_blocks += seq.blocks
        seq.blocks = 0

    def _admit(self, seq: Sequence) -> bool:
        """Move the head of the waiting queue to running if its whole context fits the cache."""
        need = self.blocks_for(seq.total_tokens)
        if self.free_blocks - need < self.watermark_blocks or len(self.running) >= self.max_num_seqs:
            return False
        self.waiting.popleft()
        self.free_blocks -= need
        seq.blocks = need
        self.running.append(seq)
        self.running.sort(key=lambda s: s.arrival_order)
        return True

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
            need = seq.pending_tokens
            # A prompt larger than the budget still runs alone rather than starving forever.
            if whole_prompts and need > budget and plan.items:
                break
            if not self._admit(seq):
                break
            num = need if whole_prompts else min(need, budget)
            plan.add(seq, num)
            budget -= num
        return max(budget, 0)

    def _schedule_decodes(self, plan: StepPlan, budget: int) -> int:
        queue = deque(s for s in self.running if s.is_decoding)
        while queue and budget > 0:
            seq = queue.popleft()
            need = self.blocks_for(seq.total_tokens) - seq.blocks
            victim: Sequence | None = None
            while need > self.free_blocks and victim is not seq:
                victim = self._newest_unscheduled(queue, seq)
                if victim in queue:
                    queue.remove(victim)
                self._preempt(victim, plan)
            if victim is seq:
                continue
            self.free_blocks -= need
            seq.blocks += need
            plan.add(seq, 1)
            budget -= 1
        return budget

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
            if seq.computed_tokens < seq.total_tokens:
                continue  # a chunk of a longer prefill: no token yet
            seq.generated_tokens += 1
            finished = seq.generated_tokens >= seq.target_output_tokens
            events.append(TokenEvent(seq.seq_id, seq.generated_tokens, finished))
            if finished:
                self.running.remove(seq)
                self.by_id.pop(seq.seq_id, None)
                self._free(seq)
        return events

