"""/traces (issue 7). In a real browser: headless Chromium (Debian's chromium) loads the page of
a live server, and the test checks the DOM Chromium built (one bar per call, escaped names)
and the pixels it painted (each bar as wide as its call was long, in its outcome's colour).
Without one: which traces /traces.json and the page's two sections keep, and in what order
(slowest first, most recent first, at most the server's 20 of each)."""
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import unittest

import html as htmlmod

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
                # What each call took as evdal recorded it: the widths must follow these (on a
                # loaded machine the 100 ms cut came at 123 ms, and the bar with it).
                took = {k: v.span.end_us - v.span.start_us for k, v in r.results.items()}
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
            # 50 ms and 200 ms naps (about 4 to 1), and the timed-out call cut at its 100 ms
            # (about half the long one): the widths are in the ratios of the recorded times,
            # give or take a few pixels of rounding.
            self.assertGreater(took['long'] / took['short'], 2.5, took)
            self.assertLess(abs(long_w / short_w - took['long'] / took['short']),
                            0.1 * took['long'] / took['short'], (blue, took))
            self.assertGreater(took['late'], 95000, took)   # cut at its 100 ms budget
            self.assertLess(took['late'], took['long'], took)
            self.assertLess(abs(amber[0][2] / long_w - took['late'] / took['long']), 0.05,
                            (amber, blue, took))
            # All bars of one waterfall start at its left edge (every call starts at once).
            self.assertLess(abs(first[0][1] - first[1][1]), 3, blue)
            self.assertLess(abs(amber[0][1] - first[0][1]), 3, (amber, blue))


KEPT = 20   # EVD_MAIN_TRACES_KEPT in server/evd_main.c


def section_ids(page, section):
    """The data-request-id of each trace in the page's section (slowest or recent), in order."""
    start = page.index('<h2 id="%s">' % section)
    end = page.find('<h2 id=', start + 1)
    part = page[start:end if end >= 0 else len(page)]
    return [htmlmod.unescape(x) for x in re.findall(r'<section class="trace" data-request-id="([^"]*)"',
                                                    part)]


class TracesOrderTest(unittest.TestCase):
    """25 traced fetches of known lengths: 5 short ones first, then 20 longer ones in a random
    order. The 20 kept as most recent are the last 20 sent, newest first; the 20 kept as
    slowest are the 20 long ones, slowest first (the short ones were kept until longer ones
    pushed them out)."""

    def fetch(self, c, rid, delay_ms):
        c.fetch(h.fetch_request({'n': h.nap_call(delay_ms)}, request_id=rid, trace=True))

    def traces(self, server):
        status, _, body = server.admin_get('/traces.json')
        self.assertEqual(status, 200)
        return json.loads(body)

    def test_slowest_and_most_recent_are_ordered_and_bounded(self):
        short = [('short-%d' % i, 1 + i) for i in range(5)]              # 1..5 ms
        long_ = [('long-%02d' % i, 40 + 8 * i) for i in range(KEPT)]    # 40..192 ms
        random.Random(7).shuffle(long_)
        sent = short + long_
        delay = dict(sent)
        with h.Server(h.config(admin_listen='127.0.0.1:0')) as server:
            c, t = h.client(server)
            try:
                for rid, ms in short:
                    self.fetch(c, rid, ms)
                # While there are fewer than KEPT, every trace is in both lists.
                tr = self.traces(server)
                self.assertEqual([x['request_id'] for x in tr['recent']],
                                 [rid for rid, _ in reversed(short)])
                self.assertEqual(sorted(x['request_id'] for x in tr['slowest']),
                                 sorted(rid for rid, _ in short))
                for rid, ms in long_:
                    self.fetch(c, rid, ms)
            finally:
                t.close()
            tr = self.traces(server)
            status, _, page = server.admin_get('/traces')
            self.assertEqual(status, 200)
        self.assertEqual(tr['traced_total'], len(sent))
        # Most recent first; the oldest five are gone.
        recent = [x['request_id'] for x in tr['recent']]
        self.assertEqual(recent, [rid for rid, _ in reversed(sent)][:KEPT])
        self.assertEqual(len(recent), KEPT)
        # Slowest first, by the server's own measure; the five short ones were pushed out.
        slowest = [x['request_id'] for x in tr['slowest']]
        durations = [x['duration_us'] for x in tr['slowest']]
        self.assertEqual(durations, sorted(durations, reverse=True))
        self.assertEqual(sorted(slowest), sorted(rid for rid, _ in long_))
        for x in tr['slowest']:
            self.assertGreaterEqual(x['duration_us'], delay[x['request_id']] * 1000 * 0.95)
        # Calls 8 ms apart: the server's order is the order of their lengths, give or take
        # a neighbour, or as many as the scheduling noise spans on a busy machine (measured:
        # how much longer than its nap a call took, at most).
        noise_ms = max(x['duration_us'] / 1000 - delay[x['request_id']] for x in tr['slowest'])
        slack = 1 + int(noise_ms // 8)
        ranks = [sorted(delay.values(), reverse=True).index(delay[rid]) for rid in slowest]
        for i, r in enumerate(ranks):
            self.assertLessEqual(abs(r - i), slack, (noise_ms, slowest,
                                                     [delay[x] for x in slowest]))
        self.assertLessEqual(ranks[0], slack - 1, (noise_ms, slowest))
        # The page shows the same two lists in the same order.
        self.assertEqual(section_ids(page, 'slowest'), slowest)
        self.assertEqual(section_ids(page, 'recent'), recent)
        self.assertLess(page.index('<h2 id="slowest">'), page.index('<h2 id="recent">'))


if __name__ == '__main__':
    unittest.main()
