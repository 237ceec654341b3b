/* A small shared library for the inventory tests.
 *
 * Test plugins link it, so the tests can check where the loader finds it. HELPER_NAME sets the
 * name of the one exported function, so this source builds several distinct libraries,
 * including both halves of a dependency cycle. It calls nothing from libc, so it also builds
 * as a 32-bit object with -m32 -nostdlib.
 */
#ifndef HELPER_NAME
#define HELPER_NAME inventory_helper
#endif
#ifndef HELPER_VALUE
#define HELPER_VALUE 1
#endif

int HELPER_NAME(void);

int HELPER_NAME(void)
{
	return HELPER_VALUE;
}
