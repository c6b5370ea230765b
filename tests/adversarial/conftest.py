"""The adversarial suite: every input a careless user or an attacker tried, replayed with small generated inputs.

Each test runs under a hard time bound (SIGALRM), so unbounded work fails the test instead of hanging the suite. That
bound is a hang guard, set far above any normal run on a loaded machine; it is no speed claim (those live in
benchmarks/), and no test here asserts how long something took.
"""

import signal

import pytest

TIME_BOUND_S = 60


@pytest.fixture(autouse=True)
def time_bound(request):
    bound = getattr(request.node.get_closest_marker("time_bound"), "args", (TIME_BOUND_S,))[0]

    def expired(signum, frame):
        raise TimeoutError(f"{request.node.name}: still running after {bound} s (unbounded work?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(bound)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
