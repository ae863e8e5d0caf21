/* version.c - version and error strings. */
#include <limits.h>
#include <string.h>

#include "upager.h"

#define STR2(x) #x
#define STR(x) STR2(x)

const char *upg_version(void)
{
	return STR(UPG_VERSION_MAJOR) "." STR(UPG_VERSION_MINOR) "." STR(UPG_VERSION_PATCH);
}

int upg_version_number(void)
{
	return UPG_VERSION_MAJOR * 10000 + UPG_VERSION_MINOR * 100 + UPG_VERSION_PATCH;
}

const char *upg_strerror(int err)
{
	const char *s;

	if (err == INT_MIN)
		return "Unknown error";
	if (err < 0)
		err = -err;
	if (err == 0)
		return "Success";
	/* Static, thread-safe (glibc 2.32). */
	s = strerrordesc_np(err);
	return s ? s : "Unknown error";
}
