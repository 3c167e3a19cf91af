"""Runs one e2e module as `python3 -m unittest -v MODULE` does, with one difference: when a
test was skipped (and none failed) it exits 77, which CTest (SKIP_RETURN_CODE 77, set for every
e2e test in tests/CMakeLists.txt) reports as "Skipped" instead of "Passed".

Every skip in this suite means that something the test needs is missing on the machine (a
tool such as chromium, valgrind, systemd-socket-activate, a client library, a facility such as
an IPv6 loopback or a private mount namespace): a run that skipped has not proven what the
module proves, and must not say it passed. `tools/dev.sh deps` installs every tool, so CI
skips nothing. A module that fails exits 1 whether or not it also skipped."""
import os
import sys
import unittest


def without_peer(suite):
    """A build configured without the C++ peer (-DEVDAL_PEERS=OFF: the TSan build) does not run
    the tests that compare evdal with it (classes with `requires_peer = True`): they are not
    this build's to prove (the other builds run them), so they are left out, said on stderr,
    rather than reported as skipped."""
    kept = unittest.TestSuite()
    left = []
    for test in iter_tests(suite):
        if getattr(test, 'requires_peer', False):
            left.append(test.id())
        else:
            kept.addTest(test)
    for name in left:
        print('not in this build (no C++ peer): %s' % name, file=sys.stderr)
    return kept


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


def main():
    if len(sys.argv) != 2:
        sys.exit('usage: run_e2e.py MODULE')
    sys.path.insert(0, os.getcwd())  # as `python3 -m unittest` finds the module
    suite = unittest.defaultTestLoader.loadTestsFromName(sys.argv[1])
    if os.environ.get('EVDAL_PEERS') == '0':
        suite = without_peer(suite)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if not result.wasSuccessful():
        sys.exit(1)
    if result.skipped:
        for test, reason in result.skipped:
            print('SKIPPED %s: %s' % (test, reason), file=sys.stderr)
        sys.exit(77)
    sys.exit(0)


if __name__ == '__main__':
    main()
