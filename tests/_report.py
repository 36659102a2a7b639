"""Print a figure from a test straight to the terminal, past pytest's capture.

    def test_x(say):            # the ``say`` fixture is defined in the test module
        say("8 threads x 500 calls, 0 mismatches")

Used by the hardening tests (concurrency, fuzz, soak) to show what they ran
without ``-s``.
"""
import pytest


def make_say(request):
    config = request.config
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")

    def say(line):
        if reporter is None or capman is None:
            print(line)
            return
        with capman.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)

    return say


@pytest.fixture
def say(request):
    return make_say(request)
