/*
 * log.h - diagnostics on stderr, written with write(2).
 *
 * Safe on the fault path and in a preloaded library: no stdio, no malloc,
 * formatting into a stack buffer. Each file defines LOG_PREFIX before
 * including this header. Log once, where a failure is detected; per-fault
 * events are counters, not log lines.
 */
#ifndef UPG_LOG_H
#define UPG_LOG_H

#include <errno.h>

#include "upager.h"

#ifndef LOG_PREFIX
#define LOG_PREFIX ""
#endif

enum upg_log_level { UPG_LOG_ERR, UPG_LOG_WARN, UPG_LOG_INFO, UPG_LOG_DEBUG };

/* Messages above this level are dropped; UPAGER_LOG=err|warn|info|debug. */
extern int upg_log_level;

void upg_log(int level, const char *prefix, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), cold));

#define pr_err(fmt, ...) upg_log(UPG_LOG_ERR, LOG_PREFIX, fmt, ##__VA_ARGS__)
#define pr_warn(fmt, ...) upg_log(UPG_LOG_WARN, LOG_PREFIX, fmt, ##__VA_ARGS__)
#define pr_info(fmt, ...) upg_log(UPG_LOG_INFO, LOG_PREFIX, fmt, ##__VA_ARGS__)
#define pr_debug(fmt, ...) upg_log(UPG_LOG_DEBUG, LOG_PREFIX, fmt, ##__VA_ARGS__)
/* Like pr_err, appending strerror of the negative errno value err. */
#define pr_perr(err, fmt, ...) \
	upg_log(UPG_LOG_ERR, LOG_PREFIX, fmt ": %s", ##__VA_ARGS__, upg_strerror(err))

#endif /* UPG_LOG_H */
