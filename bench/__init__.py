"""Easel's benchmarks: `python -m bench.run` (load), `python -m bench.pacing` (an OpenAI image limit) and
`python -m bench.attachments` (memory with attachments at their limits), each run from a checkout's root.

They are development tools, like the test suite, and not part of what is installed (bot, handlers, storage).
They measure Easel against the test suite's own fakes (tests/fakes/), the same servers the tests use, and
import nothing else from tests/: the fakes only through their public interface (constructors, attributes, and
the observers they tell as they handle the app's calls), so a change to a fake's insides cannot break them.
"""
