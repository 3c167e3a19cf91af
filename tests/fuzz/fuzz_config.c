/* fuzz_config: libFuzzer target for the configuration: the pre-scan, GKeyFile, every getter
 * of [server] and of the lookups (delay, static, fault; [database] groups are left out, since
 * they open files), and the final check. Any input must end in a config or a list of
 * problems, never a crash or a leak. */
#include <string.h>

#include "evd_config.h"
#include "evd_data_access.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (EvdConfig) cfg = NULL;
  g_autoptr (EvdDataAccess) service = NULL;
  g_autoptr (GError) error = NULL;

  /* A [database] group would open a file named by the input: not a parser's business. */
  if (g_strstr_len ((const char *) data, (gssize) size, "database") != NULL)
    return 0;
  cfg = evd_config_load_data ((const char *) data, size, "fuzz.conf", "/nonexistent");
  service = evd_data_access_new (cfg, NULL, NULL);
  if (!evd_config_check (cfg, &error) && (error == NULL || error->message[0] == '\0'))
    __builtin_trap ();  /* a failed check must say why */
  return 0;
}
