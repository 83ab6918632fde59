/*
 * Preloaded only into brokers run under AddressSanitizer.
 *
 * With the ASan runtime preloaded into Debian's uninstrumented mosquitto
 * 2.0.11, glibc's gettext lock is already unbalanced when main() starts
 * (seen with glibc 2.36 and GCC 12's libasan), so the next writer of that
 * lock waits forever. libpq takes it once, in bindtextdomain(), the first
 * time it formats a message; the registry loader thread then hangs. This
 * stand-in leaves libpq's messages untranslated (the tests run in the C
 * locale anyway) and takes no lock.
 */
#include <libintl.h>

char *bindtextdomain(const char *domainname, const char *dirname)
{
	(void)domainname;
	return (char *)dirname;
}
