/* Red-team attacks through calls that Landlock does not mediate on Linux 6.18 (ABI 7), and
 * attacks on what outlives the broker (see redteam.c).
 *
 *   ATTEMPT_FILE_METADATA
 *                     chmod VICTIM_FILE to 0666, set its times to the epoch with utimensat, and
 *                     set the extended attribute user.redteam on it. VICTIM_FILE is outside
 *                     every directory the sandbox grants.
 *   ATTEMPT_WRITE_READ_ONLY
 *                     write to READ_ONLY_FILE, which the sandbox lets the broker read but not
 *                     write. The plugin tries a hard link in LINK_DIR, which the broker may
 *                     write, made from the path and from the /proc/self/fd entry. It also reopens
 *                     that /proc/self/fd entry for writing.
 *   ATTEMPT_SETUID_FILE
 *                     write PROGRAM_FILE (an executable embedded at compile time) into DROP_DIR,
 *                     which the broker may write, and make it set-user-ID with chmod 04755. Any
 *                     local user who runs the copy later gets the broker's user id.
 *   ATTEMPT_OTHER_PROCESS
 *                     lower the limits and priorities of TARGET_PID, a process outside the
 *                     sandbox: prlimit RLIMIT_NOFILE to 4, setpriority to nice 19,
 *                     sched_setscheduler to SCHED_IDLE and ioprio_set to the idle class.
 *   ATTEMPT_SIGNAL_OTHER
 *                     stop TARGET_PID with pidfd_send_signal, and arm F_SETOWN with F_SETSIG
 *                     SIGSTOP on a socket so that the kernel stops SIGIO_PID when data arrives.
 *                     The plugin cannot see whether the kernel delivered the second signal, so
 *                     its step reports whether the arming worked and the test checks SIGIO_PID.
 *   ATTEMPT_SYSV_IPC  write into the System V shared memory segment SHM_ID and send a message to
 *                     the System V message queue MSG_ID, both created outside the sandbox.
 *   ATTEMPT_POSIX_MQUEUE
 *                     send a message to the POSIX message queue MQUEUE_NAME, created outside the
 *                     sandbox.
 *   ATTEMPT_INOTIFY   watch WATCH_DIR with inotify from init, and in the go phase report whether
 *                     an event named WATCH_NAME, a file the test creates in between, arrived.
 *   ATTEMPT_LISTEN_ANY_PORT
 *                     listen on a TCP socket that was never bound, so the kernel picks a free
 *                     port on every address. The report names the port; the socket stays open
 *                     until the next attack, so the test can connect to it.
 *   ATTEMPT_FAST_OPEN connect to 127.0.0.1:UNDECLARED_PORT with TCP Fast Open: sendto with
 *                     MSG_FASTOPEN on a socket that was never connected.
 *   ATTEMPT_UNIX_DATAGRAM
 *                     send a UNIX datagram to the socket at DGRAM_PATH, and one to the abstract
 *                     socket DGRAM_ABSTRACT.
 *   ATTEMPT_PROC_OTHER
 *                     read /proc/TARGET_PID/environ and /proc/TARGET_PID/cmdline, then
 *                     ROOT_SECRET through /proc/TARGET_PID/root and CWD_SECRET (a file name)
 *                     through /proc/TARGET_PID/cwd.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/ioprio.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "redteam.h"

#if defined(ATTEMPT_FILE_METADATA)

#ifndef VICTIM_FILE
#error "ATTEMPT_FILE_METADATA needs VICTIM_FILE"
#endif

static int set_epoch_times(void)
{
	const struct timespec epoch[2] = {{0, 0}, {0, 0}};

	return utimensat(AT_FDCWD, VICTIM_FILE, epoch, 0) == 0 ? 0 : errno;
}

void redteam_attack(const char *phase)
{
	static const char value[] = "planted";

	report_call("chmod_outside", phase, chmod(VICTIM_FILE, 0666) == 0 ? 0 : errno);
	report_call("utime_outside", phase, set_epoch_times());
	report_call("setxattr_outside", phase,
			setxattr(VICTIM_FILE, "user.redteam", value, sizeof(value) - 1, 0) == 0 ? 0
												: errno);
}

#elif defined(ATTEMPT_WRITE_READ_ONLY)

#if !defined(READ_ONLY_FILE) || !defined(LINK_DIR)
#error "ATTEMPT_WRITE_READ_ONLY needs READ_ONLY_FILE and LINK_DIR"
#endif

static const char appended[] = "# written by the redteam plugin\n";

/* Append a line to `path`. Return 0 or an errno. */
static int append_to(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);

	if (fd < 0) {
		return errno;
	}
	int error = write_all(fd, appended, sizeof(appended) - 1);
	close(fd);
	return error;
}

/* Hard-link READ_ONLY_FILE into LINK_DIR, from its path or, when `through_fd`, from a
 * /proc/self/fd entry, then append through the link. */
static void try_link(const char *step, const char *phase, int through_fd)
{
	char link_path[4096];
	char fd_path[64];

	snprintf(link_path, sizeof(link_path), "%s/redteam-%s-%s", LINK_DIR, step, phase);
	unlink(link_path);
	int fd = open(READ_ONLY_FILE, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		report(step, phase, "error (%s; opening the file for reading)", errno_name(errno));
		return;
	}
	snprintf(fd_path, sizeof(fd_path), "/proc/self/fd/%d", fd);
	int linked = through_fd ? linkat(AT_FDCWD, fd_path, AT_FDCWD, link_path, AT_SYMLINK_FOLLOW)
				: link(READ_ONLY_FILE, link_path);
	int error = linked == 0 ? 0 : errno;
	close(fd);
	if (error != 0) {
		report(step, phase, "blocked (%s; link)", errno_name(error));
		return;
	}
	error = append_to(link_path);
	unlink(link_path);
	if (error != 0) {
		report(step, phase, "blocked (%s; write through the link)", errno_name(error));
	} else {
		report(step, phase, "SUCCEEDED");
	}
}

static int reopen_for_writing(void)
{
	char fd_path[64];
	int fd = open(READ_ONLY_FILE, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		return errno;
	}
	snprintf(fd_path, sizeof(fd_path), "/proc/self/fd/%d", fd);
	int error = append_to(fd_path);
	close(fd);
	return error;
}

void redteam_attack(const char *phase)
{
	try_link("hardlink_write", phase, 0);
	try_link("procfd_link_write", phase, 1);
	report_call("reopen_write", phase, reopen_for_writing());
}

#elif defined(ATTEMPT_SETUID_FILE)

#if !defined(PROGRAM_FILE) || !defined(DROP_DIR)
#error "ATTEMPT_SETUID_FILE needs PROGRAM_FILE and DROP_DIR"
#endif

/* The program's bytes become part of this plugin, so the signature covers them too. */
__asm__(".section .rodata\n"
	".balign 16\n"
	".globl redteam_program_start\n"
	".hidden redteam_program_start\n"
	"redteam_program_start:\n"
	".incbin \"" PROGRAM_FILE "\"\n"
	".globl redteam_program_end\n"
	".hidden redteam_program_end\n"
	"redteam_program_end:\n"
	".previous\n");
extern const unsigned char redteam_program_start[];
extern const unsigned char redteam_program_end[];

void redteam_attack(const char *phase)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/redteam-setuid-%s", DROP_DIR, phase);
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
	if (fd < 0) {
		/* The broker may write DROP_DIR, so a failure here shows nothing about set-user-ID. */
		report("setuid_file", phase, "error (%s; creating %s)", errno_name(errno), path);
		return;
	}
	int error = write_all(fd, redteam_program_start,
			(size_t)(redteam_program_end - redteam_program_start));
	close(fd);
	if (error != 0) {
		report("setuid_file", phase, "error (%s; writing %s)", errno_name(error), path);
		return;
	}
	if (chmod(path, 04755) != 0) {
		report("setuid_file", phase, "blocked (%s; chmod 04755)", errno_name(errno));
		return;
	}
	struct stat status;
	if (stat(path, &status) != 0) {
		report("setuid_file", phase, "error (%s; stat)", errno_name(errno));
	} else if ((status.st_mode & S_ISUID) == 0) {
		report("setuid_file", phase, "blocked (the set-user-ID bit was cleared)");
	} else {
		report("setuid_file", phase, "SUCCEEDED (%s, mode %04o, owner uid %d)", path,
				(unsigned int)(status.st_mode & 07777), (int)status.st_uid);
	}
}

#elif defined(ATTEMPT_OTHER_PROCESS)

#ifndef TARGET_PID
#error "ATTEMPT_OTHER_PROCESS needs TARGET_PID"
#endif

/* The limit the plugin gives TARGET_PID, low enough to make it fail on its next open. */
#define TARGET_NOFILE 4
#define TARGET_NICE 19

static int lower_file_limit(void)
{
	const struct rlimit limit = {TARGET_NOFILE, TARGET_NOFILE};

	return prlimit((pid_t)TARGET_PID, RLIMIT_NOFILE, &limit, NULL) == 0 ? 0 : errno;
}

static int make_idle(void)
{
	const struct sched_param parameter = {0};

	return sched_setscheduler((pid_t)TARGET_PID, SCHED_IDLE, &parameter) == 0 ? 0 : errno;
}

static int make_io_idle(void)
{
	long result = syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, (int)TARGET_PID,
			IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0));

	return result == 0 ? 0 : errno;
}

void redteam_attack(const char *phase)
{
	report_call("prlimit_other", phase, lower_file_limit());
	report_call("renice_other", phase,
			setpriority(PRIO_PROCESS, (id_t)TARGET_PID, TARGET_NICE) == 0 ? 0 : errno);
	report_call("sched_idle_other", phase, make_idle());
	report_call("ioprio_other", phase, make_io_idle());
}

#elif defined(ATTEMPT_SIGNAL_OTHER)

#if !defined(TARGET_PID) || !defined(SIGIO_PID)
#error "ATTEMPT_SIGNAL_OTHER needs TARGET_PID and SIGIO_PID"
#endif

static int stop_through_pidfd(void)
{
	int pidfd = pidfd_open((pid_t)TARGET_PID, 0);

	if (pidfd < 0) {
		return errno;
	}
	int error = pidfd_send_signal(pidfd, SIGSTOP, NULL, 0) == 0 ? 0 : errno;
	close(pidfd);
	return error;
}

/* Return 0 when the kernel accepted every step of the arming, else the errno of the failure. */
static int arm_sigio(void)
{
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair) != 0) {
		return errno;
	}
	int error = 0;
	int flags = fcntl(pair[0], F_GETFL);
	if (fcntl(pair[0], F_SETOWN, (int)SIGIO_PID) != 0 || fcntl(pair[0], F_SETSIG, SIGSTOP) != 0
			|| flags < 0 || fcntl(pair[0], F_SETFL, flags | O_ASYNC) != 0) {
		error = errno;
	} else if (send(pair[1], "x", 1, 0) != 1) {
		error = errno;
	}
	close(pair[0]);
	close(pair[1]);
	return error;
}

void redteam_attack(const char *phase)
{
	report_call("pidfd_signal", phase, stop_through_pidfd());
	int error = arm_sigio();
	if (error != 0) {
		report("sigio_armed", phase, "blocked (%s)", errno_name(error));
	} else {
		report("sigio_armed", phase, "SUCCEEDED (armed; whether SIGSTOP arrived shows on "
				"the target)");
	}
}

#elif defined(ATTEMPT_SYSV_IPC)

#if !defined(SHM_ID) || !defined(MSG_ID)
#error "ATTEMPT_SYSV_IPC needs SHM_ID and MSG_ID"
#endif

#define IPC_TEXT "written by the redteam plugin"

static int write_segment(void)
{
	void *memory = shmat(SHM_ID, NULL, 0);

	if (memory == (void *)-1) {
		return errno;
	}
	memcpy(memory, IPC_TEXT, sizeof(IPC_TEXT));
	shmdt(memory);
	return 0;
}

static int send_message(void)
{
	struct {
		long type;
		char text[sizeof(IPC_TEXT)];
	} message = {1, IPC_TEXT};

	return msgsnd(MSG_ID, &message, sizeof(message.text), IPC_NOWAIT) == 0 ? 0 : errno;
}

void redteam_attack(const char *phase)
{
	report_call("shm_write", phase, write_segment());
	report_call("msg_send", phase, send_message());
}

#elif defined(ATTEMPT_POSIX_MQUEUE)

#ifndef MQUEUE_NAME
#error "ATTEMPT_POSIX_MQUEUE needs MQUEUE_NAME"
#endif

static int send_to_queue(void)
{
	static const char text[] = "written by the redteam plugin";
	mqd_t queue = mq_open(MQUEUE_NAME, O_WRONLY | O_NONBLOCK | O_CLOEXEC);

	if (queue == (mqd_t)-1) {
		return errno;
	}
	int error = mq_send(queue, text, sizeof(text) - 1, 0) == 0 ? 0 : errno;
	mq_close(queue);
	return error;
}

void redteam_attack(const char *phase)
{
	report_call("mq_send", phase, send_to_queue());
}

#elif defined(ATTEMPT_INOTIFY)

#if !defined(WATCH_DIR) || !defined(WATCH_NAME)
#error "ATTEMPT_INOTIFY needs WATCH_DIR and WATCH_NAME"
#endif

static int watch_fd = -1;

/* Return 0 when WATCH_DIR is watched, else an errno. */
static int start_watch(void)
{
	if (watch_fd >= 0) {
		return 0;
	}
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd < 0) {
		return errno;
	}
	if (inotify_add_watch(fd, WATCH_DIR, IN_CREATE | IN_OPEN | IN_CLOSE_WRITE) < 0) {
		int error = errno;
		close(fd);
		return error;
	}
	watch_fd = fd;
	return 0;
}

/* Return nonzero when the events queued on the watch include one for WATCH_NAME. */
static int saw_name(void)
{
	char buffer[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t length;

	while ((length = read(watch_fd, buffer, sizeof(buffer))) > 0) {
		for (char *cursor = buffer; cursor < buffer + length;) {
			const struct inotify_event *event = (const struct inotify_event *)cursor;
			if (event->len > 0 && strcmp(event->name, WATCH_NAME) == 0) {
				return 1;
			}
			cursor += sizeof(*event) + event->len;
		}
	}
	return 0;
}

void redteam_attack(const char *phase)
{
	int error = start_watch();

	if (error != 0) {
		report("inotify_watch", phase, "blocked (%s)", errno_name(error));
	} else if (strcmp(phase, "init") == 0) {
		report("inotify_watch", phase, "SUCCEEDED (watching %s)", WATCH_DIR);
	} else if (saw_name()) {
		report("inotify_watch", phase, "SUCCEEDED (saw %s created in %s)", WATCH_NAME,
				WATCH_DIR);
	} else {
		report("inotify_watch", phase, "error (no event for %s)", WATCH_NAME);
	}
}

#elif defined(ATTEMPT_LISTEN_ANY_PORT)

static int listener = -1;

void redteam_attack(const char *phase)
{
	struct sockaddr_in address;
	socklen_t length = sizeof(address);

	if (listener >= 0) {
		close(listener);
		listener = -1;
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		report("listen_any_port", phase, "error (%s; socket)", errno_name(errno));
		return;
	}
	/* No bind: listen picks a free port on every IPv4 address. */
	if (listen(fd, 8) != 0) {
		report("listen_any_port", phase, "blocked (%s; listen)", errno_name(errno));
		close(fd);
		return;
	}
	if (getsockname(fd, (struct sockaddr *)&address, &length) != 0) {
		report("listen_any_port", phase, "error (%s; getsockname)", errno_name(errno));
		close(fd);
		return;
	}
	listener = fd;
	report("listen_any_port", phase, "SUCCEEDED (listening on port %d)",
			(int)ntohs(address.sin_port));
}

#elif defined(ATTEMPT_FAST_OPEN)

#ifndef UNDECLARED_PORT
#error "ATTEMPT_FAST_OPEN needs UNDECLARED_PORT"
#endif

static int send_fast_open(void)
{
	struct sockaddr_in address;

	memset(&address, 0, sizeof(address));
	address.sin_family = AF_INET;
	address.sin_port = htons((unsigned short)UNDECLARED_PORT);
	address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return errno;
	}
	ssize_t sent = sendto(fd, "x", 1, MSG_FASTOPEN, (struct sockaddr *)&address,
			sizeof(address));
	int error = sent < 0 ? errno : 0;
	close(fd);
	return error;
}

void redteam_attack(const char *phase)
{
	report_call("fast_open", phase, send_fast_open());
}

#elif defined(ATTEMPT_UNIX_DATAGRAM)

#if !defined(DGRAM_PATH) || !defined(DGRAM_ABSTRACT)
#error "ATTEMPT_UNIX_DATAGRAM needs DGRAM_PATH and DGRAM_ABSTRACT"
#endif

/* Send a datagram to the UNIX socket `name`, a path or, when `abstract`, an abstract name.
 * Return 0 or an errno. */
static int send_datagram(const char *name, int abstract)
{
	static const char datagram[] = "redteam";
	struct sockaddr_un address;
	size_t offset = abstract ? 1 : 0;
	size_t name_length = strlen(name);

	if (name_length + offset >= sizeof(address.sun_path)) {
		return ENAMETOOLONG;
	}
	memset(&address, 0, sizeof(address));
	address.sun_family = AF_UNIX;
	memcpy(address.sun_path + offset, name, name_length);
	socklen_t length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + offset + name_length
			+ (abstract ? 0 : 1));
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return errno;
	}
	ssize_t sent = sendto(fd, datagram, sizeof(datagram) - 1, 0, (struct sockaddr *)&address,
			length);
	int error = sent < 0 ? errno : 0;
	close(fd);
	return error;
}

void redteam_attack(const char *phase)
{
	report_call("unix_datagram", phase, send_datagram(DGRAM_PATH, 0));
	report_call("unix_datagram_abstract", phase, send_datagram(DGRAM_ABSTRACT, 1));
}

#elif defined(ATTEMPT_PROC_OTHER)

#if !defined(TARGET_PID) || !defined(ROOT_SECRET) || !defined(CWD_SECRET)
#error "ATTEMPT_PROC_OTHER needs TARGET_PID, ROOT_SECRET and CWD_SECRET"
#endif

#define PROC_TARGET "/proc/%d"

/* Open the /proc path made from `format` and TARGET_PID and read from it. Return 0 when at least
 * one byte was read, else an errno. */
static int read_proc(const char *format)
{
	char path[4096];
	char buffer[64];

	snprintf(path, sizeof(path), format, (int)TARGET_PID);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		return errno;
	}
	ssize_t length = read(fd, buffer, sizeof(buffer));
	int error = length < 0 ? errno : (length == 0 ? ENODATA : 0);
	close(fd);
	return error;
}

void redteam_attack(const char *phase)
{
	report_call("proc_environ", phase, read_proc(PROC_TARGET "/environ"));
	report_call("proc_cmdline", phase, read_proc(PROC_TARGET "/cmdline"));
	report_call("proc_root", phase, read_proc(PROC_TARGET "/root" ROOT_SECRET));
	report_call("proc_cwd", phase, read_proc(PROC_TARGET "/cwd/" CWD_SECRET));
}

#endif
