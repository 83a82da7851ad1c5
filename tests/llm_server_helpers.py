"""The loopback LLM server of the tests: the one benchmarks/loopback.py holds, shared with the benchmarks."""

from benchmarks.loopback import (  # noqa: F401 - re-exported for the tests
    SMALL_STEP_MARKERS,
    STEP_MARKERS,
    FakeLLMServer,
    answer_each_step,
    free_closed_port,
    step_of,
)
