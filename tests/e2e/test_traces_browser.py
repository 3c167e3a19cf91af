"""/traces in a real browser (issue 7): headless Chromium (Debian's chromium) loads the page of
a live server, and the test checks the DOM Chromium built (one bar per call, escaped names)
and the pixels it painted (each bar as wide as its call was long, in its outcome's colour)."""
import os
import shutil
import subprocess
import tempfile
import unittest

import evdal_harness as h
from evdal_harness import ttypes

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')

LOOKUPS = h.NAP_LOOKUP + """
[lookup broken]
backend = fault
mode = fail
"""

BLUE = (0x2f, 0x7e, 0xd8)    # a call that returned rows
RED = (0xd9, 0x30, 0x25)     # a call that failed
AMBER = (0xe8, 0xa3, 0x17)   # a call that timed out

HOSTILE_ID = 'req-<script>alert(1)</script>&'


def chromium(*args, timeout=90):
    profile = tempfile.mkdtemp(prefix='evdal-chromium-')
    argv = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
            '--disable-dev-shm-usage', '--no-first-run', '--user-data-dir=' + profile]
    try:
        return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def color_runs(png_path, color, tolerance=12):
    """For each pixel row, the horizontal runs of `color`: [(y, x0, length)]."""
    from PIL import Image
    img = Image.open(png_path).convert('RGB')
    w, ht = img.size
    px = img.load()
    runs = []
    for y in range(ht):
        x = 0
        while x < w:
            if all(abs(a - b) <= tolerance for a, b in zip(px[x, y], color)):
                x0 = x
                while x < w and all(abs(a - b) <= tolerance for a, b in zip(px[x, y], color)):
                    x += 1
                runs.append((y, x0, x - x0))
            x += 1
    return runs


def bars(runs):
    """Groups runs of consecutive rows with the same x into bars, top first:
    [(y0, x0, width, height)]."""
    out = []
    for y, x0, n in runs:
        for b in out:
            if b['x0'] == x0 and b['n'] == n and b['y1'] == y - 1:
                b['y1'] = y
                break
        else:
            out.append({'x0': x0, 'n': n, 'y0': y, 'y1': y})
    return sorted((b['y0'], b['x0'], b['n'], b['y1'] - b['y0'] + 1) for b in out
                  if b['y1'] - b['y0'] >= 8)


@unittest.skipUnless(CHROMIUM, 'chromium is not installed (tools/dev.sh deps installs it)')
class TracesInBrowserTest(unittest.TestCase):

    def test_waterfall_renders_one_bar_per_call(self):
        conf = h.config(lookups=LOOKUPS, admin_listen='127.0.0.1:0')
        with h.Server(conf) as server:
            c, t = h.client(server)
            try:
                r = c.fetch(h.fetch_request({
                    'short': h.nap_call(50), 'long': h.nap_call(200),
                    'late': ttypes.LookupCall(lookup='nap', params={
                        'delay_ms': ttypes.Value(int_value=5000)}, timeout_ms=100),
                    'bad': ttypes.LookupCall(lookup='broken')},
                    request_id=HOSTILE_ID, trace=True))
                self.assertEqual(r.results['late'].error.kind, ttypes.ErrorKind.TIMEOUT)
            finally:
                t.close()
            url = 'http://%s/traces' % server.admin_address

            dom = chromium('--dump-dom', url)
            self.assertEqual(dom.returncode, 0, dom.stderr)
            html = dom.stdout
            # The hostile request id is text, never markup: no script element came of it.
            self.assertNotIn('<script>', html)
            self.assertIn('req-&lt;script&gt;alert(1)&lt;/script&gt;&amp;', html)
            # Slowest and most recent both show the one traced request: 4 bars each.
            self.assertEqual(html.count('class="bar"'), 8)
            for key in ('short', 'long', 'late', 'bad'):
                self.assertEqual(html.count('data-key="%s"' % key), 2, key)

            shot = os.path.join(tempfile.mkdtemp(prefix='evdal-shot-'), 'traces.png')
            try:
                r = chromium('--screenshot=' + shot, '--window-size=1000,700', url)
                self.assertTrue(os.path.exists(shot), r.stderr)
                blue = bars(color_runs(shot, BLUE))
                red = bars(color_runs(shot, RED))
                amber = bars(color_runs(shot, AMBER))
            finally:
                shutil.rmtree(os.path.dirname(shot), ignore_errors=True)
            # The first waterfall on the page (the slowest list): widths follow durations.
            self.assertGreaterEqual(len(blue), 2, blue)
            self.assertGreaterEqual(len(amber), 1, amber)
            self.assertGreaterEqual(len(red), 1, red)
            # The first waterfall's blue bars are the two topmost, 'long' above 'short' (rows
            # are in start order, ties by key).
            first = sorted(blue[:2], key=lambda b: b[2])
            short_w, long_w = first[0][2], first[1][2]
            # 50 ms and 200 ms naps: a ratio of 4, give or take the loop's scheduling.
            self.assertGreater(long_w / short_w, 3.0, blue)
            self.assertLess(long_w / short_w, 5.0, blue)
            # The timed-out call is cut at its 100 ms: half the long one.
            self.assertGreater(amber[0][2] / long_w, 0.4, (amber, blue))
            self.assertLess(amber[0][2] / long_w, 0.6, (amber, blue))
            # All bars of one waterfall start at its left edge (every call starts at once).
            self.assertLess(abs(first[0][1] - first[1][1]), 3, blue)
            self.assertLess(abs(amber[0][1] - first[0][1]), 3, (amber, blue))


if __name__ == '__main__':
    unittest.main()
