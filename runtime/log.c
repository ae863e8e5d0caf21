/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int upg_log_level = UPG_LOG_WARN;

__attribute__((constructor)) static void log_init(void)
{
	static const char *const names[] = { "err", "warn", "info", "debug" };
	const char *env = getenv("UPAGER_LOG");

	if (!env)
		return;
	for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
		if (!strcmp(env, names[i]))
			upg_log_level = i;
}

void upg_log(int level, const char *prefix, const char *fmt, ...)
{
	static const char *const tags[] = { "error", "warning", "info", "debug" };
	char buf[512];
	int saved = errno, n;
	va_list ap;

	if (level > upg_log_level)
		return;
	/* vsnprintf does not allocate for plain conversions. */
	n = snprintf(buf, sizeof(buf), "upager: %s: %s", tags[level], prefix);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
		/* Nowhere left to report it. */
	}
	errno = saved;
}
