/* A library that records which process mapped it.
 *
 * Its ELF constructor appends "PID EXECUTABLE" to the file named by MARKER_FILE (set with -D
 * when the tests compile it). It exports no plugin symbols, because it is code that the dynamic
 * loader maps (a preload), not a plugin line. The executable in each mark line shows whether
 * the broker or the launcher before it mapped the library.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef MARKER_FILE
#define MARKER_FILE "/dev/null"
#endif

__attribute__((constructor)) static void leave_process_mark(void)
{
	char exe[512];
	char line[600];
	ssize_t length = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (length < 0) {
		length = 0;
	}
	exe[length] = '\0';
	int size = snprintf(line, sizeof(line), "%d %s\n", (int)getpid(), exe);
	int fd = open(MARKER_FILE, O_WRONLY | O_APPEND | O_CREAT, 0666);
	if (fd >= 0 && size > 0) {
		ssize_t written = write(fd, line, (size_t)size);
		(void)written;
		close(fd);
	}
}
