/* evd_cli_request: the FetchRequest that evdal-cli's command line describes.
 *
 * Calls come as `fetch LOOKUP [NAME=VALUE ...]` or as specs `[KEY=]LOOKUP[:NAME=VALUE,...]`
 * (the syntax of evdal-bench's --call). Values are typed by evd_cli_value; NAME:TYPE=VALUE
 * forces a type. In a spec a ',' or '\' inside a value is written "\," or "\\".
 *
 * The request's calls are a map, but people read results in the order they asked for them,
 * so the keys are also kept in command-line order. A call's key defaults to its lookup's name,
 * with "#2", "#3"... on repeats; a key given twice is an error, since results are keyed. */
#pragma once

#include <glib.h>

#include "evd_thrift.h"

G_BEGIN_DECLS

typedef struct {
  evdalFetchRequest *request;
  GPtrArray *keys;             /* char *, in command-line order */
} EvdCliRequest;

EvdCliRequest *evd_cli_request_new (void);
void evd_cli_request_free (EvdCliRequest *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EvdCliRequest, evd_cli_request_free)

/* One call: `key` may be NULL (then the lookup's name), `params` are NAME[:TYPE]=VALUE texts
 * (may be NULL). Errors are G_OPTION_ERROR: the command line is at fault. */
gboolean evd_cli_request_add (EvdCliRequest *r, const char *key, const char *lookup,
                              const char *const *params, GError **error);
/* One call from a spec, "[KEY=]LOOKUP[:NAME=VALUE,...]". */
gboolean evd_cli_request_add_spec (EvdCliRequest *r, const char *spec, GError **error);
/* Marks calls critical: the keys listed in `keys` (comma-separated), or every call when NULL. */
gboolean evd_cli_request_set_critical (EvdCliRequest *r, const char *keys, GError **error);
/* Gives every call its own time budget (LookupCall.timeout_ms). */
void evd_cli_request_set_call_timeout (EvdCliRequest *r, int timeout_ms);
/* The W3C trace id the request carries (its 32 hex digits, not NUL-terminated there: print
 * with "%.32s"), from context.traceparent or the attribute; NULL when it has none. */
const char *evd_cli_request_trace_id (const EvdCliRequest *r);
/* The lookup a call key names (NULL when unknown). */
const char *evd_cli_request_lookup (const EvdCliRequest *r, const char *key);

G_END_DECLS
