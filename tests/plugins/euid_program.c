/* A program that prints its real and effective user ids, as "uid=N euid=N".
 *
 * The red-team plugin drops a set-user-ID copy of it. The test runs that copy as an
 * unprivileged user, and the effective id shows whose privileges the copy grants.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("uid=%d euid=%d\n", (int)getuid(), (int)geteuid());
	return 0;
}
