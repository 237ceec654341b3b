/* Red-team attacks on processes, privileges and the terminal (see redteam.c).
 *
 *   ATTEMPT_EXEC      fork + execve of /bin/sh, and posix_spawn of /bin/sh. Each shell appends
 *                     a line to EXEC_MARK.
 *   ATTEMPT_PTRACE    PTRACE_ATTACH to TARGET_PID, open /proc/TARGET_PID/mem, send SIGCONT.
 *   ATTEMPT_SETUID    setuid and setgid to another id: 0 when the broker runs as another user,
 *                     65534 when it runs as root.
 *   ATTEMPT_NAMESPACE unshare a user namespace, unshare a mount namespace, and clone3 into a
 *                     new user namespace.
 *   ATTEMPT_TERMINAL  push TERMINAL_TEXT into the input of the broker's controlling terminal
 *                     with TIOCSTI, through standard input.
 *
 * Calls that change the caller (setuid, setgid, unshare) run in a forked child, so a call that
 * succeeds leaves the broker itself unchanged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "redteam.h"

extern char **environ;

#if defined(ATTEMPT_EXEC)

#ifndef EXEC_MARK
#error "ATTEMPT_EXEC needs EXEC_MARK, the file the shell appends to"
#endif

static int exec_shell(void)
{
	char *argv[] = {"sh", "-c", "echo execve >> '" EXEC_MARK "'", NULL};

	execve("/bin/sh", argv, environ);
	return errno;
}

static void try_posix_spawn(const char *phase)
{
	char *argv[] = {"sh", "-c", "echo posix_spawn >> '" EXEC_MARK "'", NULL};
	pid_t pid;

	int error = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ);
	if (error != 0) {
		report("posix_spawn", phase, "blocked (%s)", errno_name(error));
		return;
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	if (WIFSIGNALED(status)) {
		report("posix_spawn", phase, "blocked (SIG%s; child killed)",
				sigabbrev_np(WTERMSIG(status)));
	} else {
		report("posix_spawn", phase, "SUCCEEDED (shell exit status %d)", WEXITSTATUS(status));
	}
}

void redteam_attack(const char *phase)
{
	report_child("execve", phase, run_in_child(exec_shell), 1, "execve /bin/sh");
	try_posix_spawn(phase);
}

#elif defined(ATTEMPT_PTRACE)

#ifndef TARGET_PID
#error "ATTEMPT_PTRACE needs TARGET_PID"
#endif

static void try_attach(const char *phase)
{
	pid_t target = (pid_t)TARGET_PID;

	if (ptrace(PTRACE_ATTACH, target, NULL, NULL) != 0) {
		report("ptrace_attach", phase, "blocked (%s)", errno_name(errno));
		return;
	}
	int status = 0;
	while (waitpid(target, &status, __WALL) < 0 && errno == EINTR) {
	}
	int detached = ptrace(PTRACE_DETACH, target, NULL, NULL) == 0;
	report("ptrace_attach", phase, "SUCCEEDED (%s)", detached ? "detached" : "detach failed");
}

static void try_proc_mem(const char *phase)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/mem", (int)TARGET_PID);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		report("proc_mem", phase, "blocked (%s)", errno_name(errno));
		return;
	}
	close(fd);
	report("proc_mem", phase, "SUCCEEDED");
}

void redteam_attack(const char *phase)
{
	try_attach(phase);
	try_proc_mem(phase);
	report_call("signal", phase, kill((pid_t)TARGET_PID, SIGCONT) == 0 ? 0 : errno);
}

#elif defined(ATTEMPT_SETUID)

/* Root tries id 65534 (nobody), which needs CAP_SETUID or CAP_SETGID. Others try root. */
static unsigned int target_id(void)
{
	return geteuid() == 0 ? 65534 : 0;
}

static int change_uid(void)
{
	return setuid(target_id()) == 0 ? 0 : errno;
}

static int change_gid(void)
{
	return setgid(target_id()) == 0 ? 0 : errno;
}

void redteam_attack(const char *phase)
{
	char detail[64];

	snprintf(detail, sizeof(detail), "setuid(%u) from euid %d", target_id(), (int)geteuid());
	report_child("setuid", phase, run_in_child(change_uid), 0, detail);
	snprintf(detail, sizeof(detail), "setgid(%u) from egid %d", target_id(), (int)getegid());
	report_child("setgid", phase, run_in_child(change_gid), 0, detail);
}

#elif defined(ATTEMPT_NAMESPACE)

static int unshare_user(void)
{
	return unshare(CLONE_NEWUSER) == 0 ? 0 : errno;
}

static int unshare_mount(void)
{
	return unshare(CLONE_NEWNS) == 0 ? 0 : errno;
}

/* clone3 keeps its flags in memory, where a seccomp filter cannot read them. */
static int clone3_user(void)
{
	struct clone_args args;

	memset(&args, 0, sizeof(args));
	args.flags = CLONE_NEWUSER;
	args.exit_signal = SIGCHLD;
	long pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid < 0) {
		return errno;
	}
	if (pid == 0) {
		_exit(0);
	}
	int status = 0;
	while (waitpid((pid_t)pid, &status, 0) < 0 && errno == EINTR) {
	}
	return 0;
}

void redteam_attack(const char *phase)
{
	report_child("unshare_user", phase, run_in_child(unshare_user), 0, "unshare(CLONE_NEWUSER)");
	report_child("unshare_mount", phase, run_in_child(unshare_mount), 0, "unshare(CLONE_NEWNS)");
	report_child("clone3_user", phase, run_in_child(clone3_user), 0, "clone3(CLONE_NEWUSER)");
}

#elif defined(ATTEMPT_TERMINAL)

#ifndef TERMINAL_TEXT
#error "ATTEMPT_TERMINAL needs TERMINAL_TEXT"
#endif

/* Each character typed this way reaches whatever reads the terminal next, such as the shell
 * that started the broker. */
void redteam_attack(const char *phase)
{
	const char *text = TERMINAL_TEXT;

	for (const char *cursor = text; *cursor != '\0'; cursor++) {
		if (ioctl(STDIN_FILENO, TIOCSTI, cursor) != 0) {
			report("tiocsti", phase, "blocked (%s; after %d characters)", errno_name(errno),
					(int)(cursor - text));
			return;
		}
	}
	report("tiocsti", phase, "SUCCEEDED");
}

#endif
