/* evd_sample: the sample web-shop database, the embedded default that `tools/dev.sh run`
 * serves: users, accounts, orders, notifications, roles and permissions, products
 * (storage/schema.sql), filled deterministically (storage/sample.sql) by SQL with two
 * functions of ours: rnd(stream, n), a hash of (seed, stream, n), and randomblob_det(x, len).
 * The same seed and size always give the same rows.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  guint users;      /* 100,000 by default: about a million orders */
  guint64 seed;
} EvdSampleOptions;

/* Builds the database into PATH.tmp-PID, then renames it to PATH: a half-built file never
 * appears under the real name. Ends in WAL mode (readers open it read-only) and ANALYZEd. */
gboolean evd_sample_generate (const char *path, const EvdSampleOptions *options, GError **error);

G_END_DECLS
