/* evd_metrics: the text of a sample's value, as Prometheus's text format spells it. */
#include <math.h>

#include "evd_metrics.h"

static char *
sample (double value)
{
  GString *out = g_string_new (NULL);

  evd_metrics_sample (out, "evdal_x", value, "lookup", "a\"b", NULL);
  return g_string_free (out, FALSE);
}

static void
check (double value, const char *text)
{
  g_autofree char *got = sample (value);
  g_autofree char *want = g_strdup_printf ("evdal_x{lookup=\"a\\\"b\"} %s\n", text);

  g_assert_cmpstr (got, ==, want);
}

/* Counts as integers, the rest in shortest C-locale form; NaN and the infinities as
 * Prometheus writes them (printf's "nan" and "inf" are not its text), and doubles beyond
 * gint64's range without casting them to it first (undefined; UBSan reports it). */
static void
test_values (void)
{
  check (0, "0");
  check (42, "42");
  check (-7, "-7");
  check (2.5, "2.5");
  check (8e15, "8000000000000000");
  check (1e300, "1e+300");
  check (-1e300, "-1e+300");
  check (9.3e18, "9.3e+18");
  check (NAN, "NaN");
  check (INFINITY, "+Inf");
  check (-INFINITY, "-Inf");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/metrics/values", test_values);
  return g_test_run ();
}
