/* A v5 plugin that attacks the broker loading it, for the sandbox tests.
 *
 * The tests sign it, so it passes verification like any trusted plugin. They compile this file
 * together with redteam_files.c, redteam_network.c, redteam_process.c and redteam_escape.c, and
 * set exactly one ATTEMPT_* macro. The comment at the top of each of those files lists its
 * attacks.
 *
 * The plugin attacks once from mosquitto_plugin_init (phase "init") and again each time a client
 * publishes to "redteam/go" (phase "go"). Each step logs one warning and publishes the same
 * text, retained, to "redteam/result/<phase>/<step>":
 *
 *   redteam <step> <phase>: blocked (<errno or signal name>[; detail])
 *   redteam <step> <phase>: SUCCEEDED[ (detail)]
 *   redteam <step> <phase>: error (<detail>)
 *
 * "error" means the plugin could not prepare the step, so the step shows nothing about the
 * sandbox. Before each attack the plugin publishes its ids and prctl state to
 * "redteam/context/<phase>", and its open file descriptors to "redteam/fds/<phase>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "redteam.h"

#define GO_TOPIC "redteam/go"
/* File descriptors above this are not listed in "redteam/fds/<phase>". */
#define MAX_LISTED_FD 256

static mosquitto_plugin_id_t *plugin_id;

/* Reporting. */

const char *errno_name(int error)
{
	const char *name = strerrorname_np(error);
	return name != NULL ? name : "unknown errno";
}

static void publish_text(const char *topic, const char *text)
{
	mosquitto_broker_publish_copy(NULL, topic, (int)strlen(text), text, 1, true, NULL);
}

void report(const char *step, const char *phase, const char *format, ...)
{
	char verdict[768];
	char text[1024];
	char topic[256];
	va_list args;

	va_start(args, format);
	vsnprintf(verdict, sizeof(verdict), format, args);
	va_end(args);
	snprintf(text, sizeof(text), "redteam %s %s: %s", step, phase, verdict);
	snprintf(topic, sizeof(topic), "redteam/result/%s/%s", phase, step);
	mosquitto_log_printf(MOSQ_LOG_WARNING, "%s", text);
	publish_text(topic, text);
}

void report_call(const char *step, const char *phase, int error)
{
	if (error == 0) {
		report(step, phase, "SUCCEEDED");
	} else {
		report(step, phase, "blocked (%s)", errno_name(error));
	}
}

static void report_context(const char *phase)
{
	char text[256];
	char topic[128];

	snprintf(text, sizeof(text), "uid=%d euid=%d gid=%d egid=%d no_new_privs=%d seccomp=%d",
			(int)getuid(), (int)geteuid(), (int)getgid(), (int)getegid(),
			prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), prctl(PR_GET_SECCOMP, 0, 0, 0, 0));
	snprintf(topic, sizeof(topic), "redteam/context/%s", phase);
	mosquitto_log_printf(MOSQ_LOG_WARNING, "redteam context %s: %s", phase, text);
	publish_text(topic, text);
}

static char file_type(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return 'f';
	case S_IFDIR:
		return 'd';
	case S_IFCHR:
		return 'c';
	case S_IFSOCK:
		return 's';
	case S_IFIFO:
		return 'p';
	default:
		return '?';
	}
}

/* Publish one "fd:type:access[:seals=N]" entry per open descriptor, space-separated. The types
 * are f (regular file), d, c (character device), s (socket), p (pipe) and ? (anything else,
 * such as an epoll instance). Seals appear for memfds. */
static void report_descriptors(const char *phase)
{
	static const char *access_names[] = {"r", "w", "rw", "?"};
	char text[4096] = "";
	char topic[128];
	size_t used = 0;

	for (int fd = 0; fd <= MAX_LISTED_FD && used < sizeof(text) - 64; fd++) {
		int flags = fcntl(fd, F_GETFL);
		struct stat status;
		if (flags < 0 || fstat(fd, &status) != 0) {
			continue;
		}
		int seals = fcntl(fd, F_GET_SEALS);
		used += (size_t)snprintf(text + used, sizeof(text) - used, "%s%d:%c:%s", used ? " " : "",
				fd, file_type(status.st_mode), access_names[flags & O_ACCMODE]);
		if (seals >= 0) {
			used += (size_t)snprintf(text + used, sizeof(text) - used, ":seals=%d", seals);
		}
	}
	snprintf(topic, sizeof(topic), "redteam/fds/%s", phase);
	mosquitto_log_printf(MOSQ_LOG_WARNING, "redteam fds %s: %s", phase, text);
	publish_text(topic, text);
}

/* Helpers for the attack files. */

int write_all(int fd, const void *data, size_t length)
{
	const unsigned char *cursor = data;

	while (length > 0) {
		ssize_t written = write(fd, cursor, length);
		if (written < 0) {
			if (errno == EINTR) {
				continue;
			}
			return errno;
		}
		cursor += written;
		length -= (size_t)written;
	}
	return 0;
}

struct child_outcome run_in_child(int (*action)(void))
{
	struct child_outcome outcome = {0, 0, 0};
	int fds[2];

	if (pipe2(fds, O_CLOEXEC) != 0) {
		outcome.fork_error = errno;
		return outcome;
	}
	pid_t pid = fork();
	if (pid < 0) {
		outcome.fork_error = errno;
		close(fds[0]);
		close(fds[1]);
		return outcome;
	}
	if (pid == 0) {
		close(fds[0]);
		int result = action();
		ssize_t written = write(fds[1], &result, sizeof(result));
		_exit(written == (ssize_t)sizeof(result) ? 0 : 1);
	}
	close(fds[1]);
	int reported = 0;
	ssize_t length;
	do {
		length = read(fds[0], &reported, sizeof(reported));
	} while (length < 0 && errno == EINTR);
	close(fds[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	if (length == (ssize_t)sizeof(reported)) {
		outcome.error = reported;
	} else if (WIFSIGNALED(status)) {
		outcome.signal = WTERMSIG(status);
	}
	return outcome;
}

void report_child(const char *step, const char *phase, struct child_outcome outcome,
		int fork_blocks, const char *detail)
{
	if (outcome.fork_error != 0) {
		report(step, phase, "%s (fork: %s)", fork_blocks ? "blocked" : "error",
				errno_name(outcome.fork_error));
	} else if (outcome.signal != 0) {
		report(step, phase, "blocked (SIG%s; child killed)", sigabbrev_np(outcome.signal));
	} else if (outcome.error != 0) {
		report(step, phase, "blocked (%s; %s)", errno_name(outcome.error), detail);
	} else {
		report(step, phase, "SUCCEEDED (%s)", detail);
	}
}

/* The plugin interface. */

static void attack(const char *phase)
{
	report_context(phase);
	report_descriptors(phase);
	redteam_attack(phase);
}

static int on_message(int event, void *event_data, void *user_data)
{
	struct mosquitto_evt_message *message = event_data;

	(void)event;
	(void)user_data;
	if (message->topic != NULL && strcmp(message->topic, GO_TOPIC) == 0) {
		attack("go");
	}
	return MOSQ_ERR_SUCCESS;
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
	(void)user_data;
	(void)options;
	(void)option_count;
	plugin_id = identifier;
	int rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	attack("init");
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *options, int option_count)
{
	(void)user_data;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
}
