/* evd_quark: EVD_DEFINE_QUARK, G_DEFINE_QUARK made safe to call first from several threads.
 *
 * G_DEFINE_QUARK keeps the quark in a plain static that its first callers write: when two
 * loops or workers make their module's first error at once, that is a data race (harmless in
 * practice, reported by ThreadSanitizer, undefined by C). This one publishes the quark with
 * g_once, so its first caller may be any thread.
 */
#pragma once

#include <glib.h>

#define EVD_DEFINE_QUARK(QN, q_n)                                               \
  GQuark q_n##_quark (void);                                                     \
  GQuark                                                                         \
  q_n##_quark (void)                                                             \
  {                                                                              \
    static gsize quark = 0;                                                      \
                                                                                 \
    if (g_once_init_enter (&quark))                                              \
      g_once_init_leave (&quark, g_quark_from_static_string (#QN));              \
    return (GQuark) quark;                                                       \
  }
