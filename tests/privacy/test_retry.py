"""A registration the service answers 429/503 is sent again after the Retry-After it asks
for, within a budget; other answers are returned at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from tailorml.privacy.client import retry_when_busy


@dataclass
class Answer:
    status_code: int
    headers: dict = field(default_factory=dict)


def _service(*answers: Answer):
    queue, sent = list(answers), []

    def send() -> Answer:
        sent.append(True)
        return queue.pop(0)

    return send, sent


def test_busy_answers_are_retried_after_their_retry_after():
    send, sent = _service(
        Answer(429, {"retry-after": "30"}), Answer(503, {"retry-after": "60"}), Answer(200)
    )
    slept: list[float] = []
    answer = retry_when_busy(send, budget=180, sleep=slept.append)
    assert answer.status_code == 200
    assert slept == [30.0, 60.0] and len(sent) == 3


def test_the_budget_bounds_the_wait_and_the_last_answer_is_returned():
    send, sent = _service(
        Answer(503, {"retry-after": "60"}), Answer(503, {"retry-after": "60"}), Answer(200)
    )
    slept: list[float] = []
    answer = retry_when_busy(send, budget=45, sleep=slept.append)
    # 45 s of budget: one wait of 45 (not 60), then the second 503 is the answer
    assert answer.status_code == 503 and slept == [45.0] and len(sent) == 2


def test_other_answers_are_not_retried_and_a_bad_header_waits_5_s():
    send, sent = _service(Answer(409), Answer(200))
    assert retry_when_busy(send, budget=60, sleep=lambda _: None).status_code == 409
    assert len(sent) == 1
    send, sent = _service(Answer(429, {"retry-after": "soon"}), Answer(200))
    slept: list[float] = []
    assert retry_when_busy(send, budget=60, sleep=slept.append).status_code == 200
    assert slept == [5.0]
