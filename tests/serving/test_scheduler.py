"""The scheduler on a fake engine: admission, continuous and dynamic batching, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from slipstream.engines.protocol import SamplingParams
from slipstream.serving.scheduler import (ContinuousScheduler, DynamicScheduler, QueueFull, SequentialScheduler,
                                          Ticket)
from tests.serving.fakes import FakeEngine, FakeTokenizer, continuation

TOK = FakeTokenizer()


async def drain(ticket: Ticket) -> tuple[list[int], str]:
    tokens = []
    while True:
        kind, value = await ticket.next_event()
        if kind == "token":
            tokens.append(value)
        else:
            return tokens, value


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_continuous_batch_admits_joins_and_leaves():
    engine = FakeEngine(delay=0.002)
    stepper = engine.stepper()
    sched = ContinuousScheduler(stepper, max_batch_size=3, max_queue=10)

    async def main():
        sched.start()
        try:
            long = SamplingParams(max_tokens=20, ignore_eos=True)
            first = sched.submit(TOK.encode("a"), long)
            await first.next_event()  # the first is running before the others arrive
            others = [sched.submit(TOK.encode(p), SamplingParams(max_tokens=m))
                      for p, m in (("b", 3), ("c", 40), ("d", 5), ("e", 2))]
            results = await asyncio.gather(drain(first), *(drain(t) for t in others))
        finally:
            sched.stop()
        return results

    results = run(main())
    # every request gets exactly the tokens a lone run would give it
    for (tokens, reason), (prompt, m) in zip(results[1:], (("b", 3), ("c", 40), ("d", 5), ("e", 2))):
        assert tokens == continuation(TOK.encode(prompt), SamplingParams(max_tokens=m))
    assert results[0][1] == "length" and len(results[0][0]) == 19  # one token was read above
    assert results[2][1] == "stop"  # "c" runs into the end-of-sequence token before 40 tokens
    sizes = stepper.batch_sizes
    assert max(sizes) == 3  # never more than max_batch_size
    assert sizes[0] == 1 and 3 in sizes[1:4]  # newcomers joined the running sequence within a step or two
    assert sched.peak_batch == 3 and not sched.running and not sched.waiting


def test_queue_full_is_refused_at_once():
    engine = FakeEngine(delay=0.01)
    sched = ContinuousScheduler(engine.stepper(), max_batch_size=2, max_queue=1)

    async def main():
        sched.start()
        try:
            p = SamplingParams(max_tokens=30, ignore_eos=True)
            held = [sched.submit([0], p) for _ in range(3)]  # 2 running + 1 waiting
            with pytest.raises(QueueFull):
                sched.submit([0], p)
            for t in held:
                t.cancel()
            await asyncio.gather(*(drain(t) for t in held))
            again = sched.submit([0], SamplingParams(max_tokens=2))  # room again once they left
            return await drain(again)
        finally:
            sched.stop()

    tokens, reason = run(main())
    assert tokens == [1, 2] and reason == "length"


def test_cancelled_request_leaves_the_batch():
    engine = FakeEngine(delay=0.005)
    stepper = engine.stepper()
    sched = ContinuousScheduler(stepper, max_batch_size=1, max_queue=1)

    async def main():
        sched.start()
        try:
            t = sched.submit([0], SamplingParams(max_tokens=1000, ignore_eos=True))
            for _ in range(3):
                await t.next_event()
            t.cancel()
            tokens, reason = await drain(t)
            return reason, stepper.active, len(tokens)
        finally:
            sched.stop()

    reason, active, more = run(main())
    assert reason == "cancelled" and active == 0 and more < 50


def test_dynamic_batching_collects_a_window_and_groups_by_sampling():
    engine = FakeEngine(delay=0.001)
    sched = DynamicScheduler(engine, window_s=0.2, max_batch_size=8, max_queue=16)

    async def main():
        sched.start()
        try:
            greedy = [sched.submit(TOK.encode(p), SamplingParams(max_tokens=m)) for p, m in (("a", 4), ("m", 9))]
            sampled = sched.submit(TOK.encode("q"), SamplingParams(max_tokens=3, temperature=0.8))
            greedy.append(sched.submit(TOK.encode("c"), SamplingParams(max_tokens=6)))
            return await asyncio.gather(*(drain(t) for t in greedy + [sampled]))
        finally:
            sched.stop()

    results = run(main())
    assert engine.calls == [3, 1]  # the three greedy requests in one batch, the sampled one apart
    for (tokens, _), (p, m) in zip(results, (("a", 4), ("m", 9), ("c", 6), ("q", 3))):
        assert tokens == continuation(TOK.encode(p), SamplingParams(max_tokens=m))


def test_dynamic_batching_stops_a_cancelled_row_and_falls_back_to_generate():
    engine = FakeEngine(delay=0.002)
    sched = DynamicScheduler(engine, window_s=0.05, max_batch_size=4, max_queue=4)

    async def main():
        sched.start()
        try:
            a = sched.submit([0], SamplingParams(max_tokens=200, ignore_eos=True))
            b = sched.submit([3], SamplingParams(max_tokens=10))
            await a.next_event()
            a.cancel()
            return await asyncio.gather(drain(a), drain(b))
        finally:
            sched.stop()

    (a_tokens, a_reason), (b_tokens, b_reason) = run(main())
    assert a_reason == "cancelled" and len(a_tokens) < 150
    assert b_tokens == continuation([3], SamplingParams(max_tokens=10)) and b_reason == "length"

    plain = FakeEngine(rows=False)
    sched = DynamicScheduler(plain, window_s=0.05, max_batch_size=4, max_queue=4)

    async def whole():
        sched.start()
        try:
            ts = [sched.submit([i], SamplingParams(max_tokens=5)) for i in range(3)]
            return await asyncio.gather(*(drain(t) for t in ts))
        finally:
            sched.stop()

    results = run(whole())
    assert plain.calls == [3]
    assert [r[0] for r in results] == [continuation([i], SamplingParams(max_tokens=5)) for i in range(3)]


def test_sequential_runs_one_at_a_time_and_jobs_run_between_steps():
    engine = FakeEngine(delay=0.001)
    sched = SequentialScheduler(engine, max_batch_size=8, max_queue=8)
    assert sched.max_batch_size == 1

    async def main():
        sched.start()
        try:
            ts = [sched.submit([i], SamplingParams(max_tokens=4)) for i in range(3)]
            scored = await asyncio.wrap_future(sched.call(lambda: engine.score([[0, 1, 2]])))
            return await asyncio.gather(*(drain(t) for t in ts)), scored
        finally:
            sched.stop()

    results, scored = run(main())
    assert [r[0] for r in results] == [continuation([i], SamplingParams(max_tokens=4)) for i in range(3)]
    assert sched.peak_batch == 1
    assert scored[0].tolist() == pytest.approx([-0.01, -0.01])


def test_engine_failure_is_an_error_event_not_a_dead_server():
    engine = FakeEngine()
    stepper = engine.stepper()
    sched = ContinuousScheduler(stepper, max_batch_size=2, max_queue=2)

    async def main():
        sched.start()
        try:
            bad = sched.submit([], SamplingParams(max_tokens=3))  # the stepper refuses an empty prompt
            kind, message = await bad.next_event()
            good = sched.submit([0], SamplingParams(max_tokens=3))
            return kind, message, await drain(good)
        finally:
            sched.stop()

    kind, message, (tokens, reason) = run(main())
    assert kind == "error" and "empty prompt" in message
    assert tokens == [1, 2, 3] and reason == "length"
