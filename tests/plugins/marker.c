/* A minimal v5 plugin for the tests.
 *
 * Its ELF constructor appends MARKER_TEXT to the file named by MARKER_FILE (both set with -D
 * when the tests compile it), so a test can prove whether these bytes were ever loaded: the
 * constructor runs inside dlopen, before the broker calls any plugin function.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#ifndef MARKER_FILE
#define MARKER_FILE "/dev/null"
#endif
#ifndef MARKER_TEXT
#define MARKER_TEXT "loaded\n"
#endif

__attribute__((constructor)) static void leave_mark(void)
{
	int fd = open(MARKER_FILE, O_WRONLY | O_APPEND | O_CREAT, 0666);
	if (fd >= 0) {
		ssize_t written = write(fd, MARKER_TEXT, strlen(MARKER_TEXT));
		(void)written;
		close(fd);
	}
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data,
		struct mosquitto_opt *options, int option_count)
{
	(void)identifier;
	(void)user_data;
	(void)options;
	(void)option_count;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *options, int option_count)
{
	(void)user_data;
	(void)options;
	(void)option_count;
	return MOSQ_ERR_SUCCESS;
}
