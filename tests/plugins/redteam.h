/* Declarations shared by the sources of the red-team plugin (redteam.c and redteam_*.c).
 *
 * redteam.c contains the plugin interface and the reporting. Each redteam_*.c file contains
 * attacks behind ATTEMPT_* macros. The tests compile all of them together with exactly one ATTEMPT_*
 * macro set, so exactly one file defines redteam_attack.
 */
#ifndef REDTEAM_H
#define REDTEAM_H

#include <stddef.h>

/* Keep these helpers out of the plugin's exported symbols. */
#pragma GCC visibility push(hidden)

/* Run the attack of the selected ATTEMPT_* macro once, reporting each step under `phase`. */
void redteam_attack(const char *phase);

/* Log "redteam <step> <phase>: <verdict>" and publish it, retained, to
 * "redteam/result/<phase>/<step>". The verdict starts with "blocked", "SUCCEEDED" or "error". */
void report(const char *step, const char *phase, const char *format, ...)
	__attribute__((format(printf, 3, 4)));

/* Report "SUCCEEDED" for `error` 0, else "blocked (<errno name>)". */
void report_call(const char *step, const char *phase, int error);

/* Return the symbolic name of `error`, such as "EPERM". */
const char *errno_name(int error);

/* Write all `length` bytes to `fd`. Return 0 or an errno. */
int write_all(int fd, const void *data, size_t length);

/* The result of an action run in a forked child. */
struct child_outcome {
	int fork_error; /* errno of pipe2 or fork, or 0 when the child ran */
	int signal;     /* the signal that killed the child, or 0 */
	int error;      /* the errno the child reported, 0 for success */
};

/* Run `action` in a forked child. `action` returns 0 or an errno. An action that execs a new
 * program reports success by the exec itself, which closes the result pipe unwritten. */
struct child_outcome run_in_child(int (*action)(void));

/* Report a child's outcome. `fork_blocks` is nonzero when a failed fork stops the attack itself
 * (exec) rather than only this plugin's way of isolating it (setuid). */
void report_child(const char *step, const char *phase, struct child_outcome outcome,
		int fork_blocks, const char *detail);

#pragma GCC visibility pop

#endif
