/* Red-team attacks on files and on running code the plugin wrote itself (see redteam.c).
 *
 *   ATTEMPT_READ_SECRET
 *                     open and read /etc/shadow and SECRET_FILE.
 *   ATTEMPT_WRITE_CONFIG
 *                     create CONF_D_DIR/evil.conf and append to CONFIG_FILE.
 *   ATTEMPT_DLOPEN    write PAYLOAD_FILE (a shared object embedded at compile time) into
 *                     PERSISTENCE_DIR and into SCRATCH_DIR, and dlopen each copy. Then map
 *                     anonymous memory writable and executable, make writable memory executable
 *                     with mprotect, dlopen the payload from a memfd, switch
 *                     memory-deny-write-execute off, and set the READ_IMPLIES_EXEC personality.
 *   ATTEMPT_DLOPEN_ALIAS
 *                     write the payload into PERSISTENCE_DIR and dlopen it through ALIAS_DIR, a
 *                     second mount of the same directory.
 *   ATTEMPT_PLANT_SYMLINK
 *                     replace REPLACED_DIR, a directory inside the writable persistence directory
 *                     on the path of a granted directory, with a symlink to SYMLINK_TARGET, for
 *                     the next launch to follow.
 *   ATTEMPT_CODE_MEMORY
 *                     write machine code through one mapping and run it through another of the
 *                     same memory: a shared anonymous mapping duplicated with mremap, and a System
 *                     V shared memory segment attached twice. Also write into the plugin's own
 *                     code through /proc/self/mem, which ignores page protections.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <unistd.h>

#include "redteam.h"

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65 /* from Linux 6.3, newer than the Debian 12 headers */
#endif

#ifdef PAYLOAD_FILE

/* The payload's bytes become part of this plugin, so the signature covers them too. */
__asm__(".section .rodata\n"
	".balign 16\n"
	".globl redteam_payload_start\n"
	".hidden redteam_payload_start\n"
	"redteam_payload_start:\n"
	".incbin \"" PAYLOAD_FILE "\"\n"
	".globl redteam_payload_end\n"
	".hidden redteam_payload_end\n"
	"redteam_payload_end:\n"
	".previous\n");
extern const unsigned char redteam_payload_start[];
extern const unsigned char redteam_payload_end[];

static int write_payload_fd(int fd)
{
	return write_all(fd, redteam_payload_start,
			(size_t)(redteam_payload_end - redteam_payload_start));
}

static void report_dlopen(const char *step, const char *phase, void *handle, int error)
{
	if (handle != NULL) {
		report(step, phase, "SUCCEEDED");
	} else {
		const char *message = dlerror();
		report(step, phase, "blocked (%s; %s)", error != 0 ? errno_name(error) : "dlopen",
				message != NULL ? message : "dlopen returned NULL");
	}
}

/* Write the payload to `path`, or report the step and return nonzero when that fails. A failure
 * is "blocked", or "error" where the broker may write (`writable`), because then the step never
 * reached the loading it is about. */
static int write_payload_file(const char *step, const char *phase, const char *path,
		int writable)
{
	const char *verdict = writable ? "error" : "blocked";

	/* A new file each time: rewriting a file that is mapped already would crash the broker. */
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (fd < 0) {
		report(step, phase, "%s (%s; creating %s)", verdict, errno_name(errno), path);
		return 1;
	}
	int error = write_payload_fd(fd);
	close(fd);
	if (error != 0) {
		report(step, phase, "%s (%s; writing %s)", verdict, errno_name(error), path);
		return 1;
	}
	return 0;
}

/* Write the payload into `directory` and dlopen it from `load_directory`. `writable` is nonzero
 * when the broker may write `directory`, as it may write its persistence directory. */
static void try_written(const char *step, const char *phase, const char *directory,
		const char *load_directory, int writable)
{
	char path[4096];
	char load_path[4096];

	snprintf(path, sizeof(path), "%s/redteam-%s-%s.so", directory, step, phase);
	snprintf(load_path, sizeof(load_path), "%s/redteam-%s-%s.so", load_directory, step, phase);
	if (write_payload_file(step, phase, path, writable) != 0) {
		return;
	}
	errno = 0;
	void *handle = dlopen(load_path, RTLD_NOW | RTLD_LOCAL);
	report_dlopen(step, phase, handle, errno);
}

#endif

#if defined(ATTEMPT_READ_SECRET)

#ifndef SECRET_FILE
#error "ATTEMPT_READ_SECRET needs SECRET_FILE"
#endif

/* Open `path` and read from it. Return 0 when at least one byte was read, else an errno. */
static int read_some(const char *path)
{
	char buffer[64];
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
	report_call("read_shadow", phase, read_some("/etc/shadow"));
	report_call("read_host_key", phase, read_some(SECRET_FILE));
}

#elif defined(ATTEMPT_WRITE_CONFIG)

#if !defined(CONF_D_DIR) || !defined(CONFIG_FILE)
#error "ATTEMPT_WRITE_CONFIG needs CONF_D_DIR and CONFIG_FILE"
#endif

static const char config_line[] = "# written by the redteam plugin\n";

/* Append a comment line to `path`. Return 0 or an errno. */
static int append_line(const char *path, int flags)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | flags, 0644);

	if (fd < 0) {
		return errno;
	}
	int error = write_all(fd, config_line, sizeof(config_line) - 1);
	close(fd);
	return error;
}

void redteam_attack(const char *phase)
{
	report_call("create_conf_d", phase, append_line(CONF_D_DIR "/evil.conf", O_CREAT));
	report_call("append_config", phase, append_line(CONFIG_FILE, 0));
}

#elif defined(ATTEMPT_DLOPEN)

#if !defined(PAYLOAD_FILE) || !defined(PERSISTENCE_DIR) || !defined(SCRATCH_DIR)
#error "ATTEMPT_DLOPEN needs PAYLOAD_FILE, PERSISTENCE_DIR and SCRATCH_DIR"
#endif

static void try_memfd(const char *phase)
{
	char path[64];
	int fd = memfd_create("redteam-payload", MFD_CLOEXEC);

	if (fd < 0) {
		report("memfd_dlopen", phase, "blocked (%s; memfd_create)", errno_name(errno));
		return;
	}
	int error = write_payload_fd(fd);
	if (error != 0) {
		report("memfd_dlopen", phase, "error (writing the memfd: %s)", errno_name(error));
		close(fd);
		return;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	errno = 0;
	void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	report_dlopen("memfd_dlopen", phase, handle, errno);
	close(fd);
}

static void try_mmap_exec(const char *phase)
{
	size_t size = (size_t)sysconf(_SC_PAGESIZE);
	void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE | PROT_EXEC,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (memory == MAP_FAILED) {
		report("mmap_exec", phase, "blocked (%s)", errno_name(errno));
		return;
	}
	munmap(memory, size);
	report("mmap_exec", phase, "SUCCEEDED");
}

static void try_mprotect_exec(const char *phase)
{
	size_t size = (size_t)sysconf(_SC_PAGESIZE);
	unsigned char *memory = mmap(NULL, size, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (memory == MAP_FAILED) {
		report("mprotect_exec", phase, "error (mmap: %s)", errno_name(errno));
		return;
	}
	memory[0] = 0xc3; /* x86 "ret", written at run time and never called */
	int error = mprotect(memory, size, PROT_READ | PROT_EXEC) == 0 ? 0 : errno;
	munmap(memory, size);
	report_call("mprotect_exec", phase, error);
}

/* Runs in a child, because the personality makes every later readable mapping executable. */
static int set_read_implies_exec(void)
{
	return personality(READ_IMPLIES_EXEC) >= 0 ? 0 : errno;
}

/* Runs in a child, like set_read_implies_exec, because the setting is permanent. */
static int clear_mdwe(void)
{
	return prctl(PR_SET_MDWE, 0, 0, 0, 0) == 0 ? 0 : errno;
}

void redteam_attack(const char *phase)
{
	try_written("dlopen_persistence", phase, PERSISTENCE_DIR, PERSISTENCE_DIR, 1);
	try_written("dlopen_scratch", phase, SCRATCH_DIR, SCRATCH_DIR, 0);
	try_mmap_exec(phase);
	try_mprotect_exec(phase);
	try_memfd(phase);
	report_child("mdwe_clear", phase, run_in_child(clear_mdwe), 0, "prctl(PR_SET_MDWE, 0)");
	report_child("read_implies_exec", phase, run_in_child(set_read_implies_exec), 0,
			"personality(READ_IMPLIES_EXEC)");
}

#elif defined(ATTEMPT_DLOPEN_ALIAS)

#if !defined(PAYLOAD_FILE) || !defined(PERSISTENCE_DIR) || !defined(ALIAS_DIR)
#error "ATTEMPT_DLOPEN_ALIAS needs PAYLOAD_FILE, PERSISTENCE_DIR and ALIAS_DIR"
#endif

void redteam_attack(const char *phase)
{
	try_written("dlopen_alias", phase, PERSISTENCE_DIR, ALIAS_DIR, 1);
}

#elif defined(ATTEMPT_PLANT_SYMLINK)

#if !defined(REPLACED_DIR) || !defined(SYMLINK_TARGET)
#error "ATTEMPT_PLANT_SYMLINK needs REPLACED_DIR and SYMLINK_TARGET"
#endif

void redteam_attack(const char *phase)
{
	char target[4096];
	ssize_t length = readlink(REPLACED_DIR, target, sizeof(target) - 1);

	if (length >= 0) {
		target[length] = '\0';
		if (strcmp(target, SYMLINK_TARGET) == 0) {
			report("plant_symlink", phase, "SUCCEEDED (planted before)");
			return;
		}
	}
	if (rename(REPLACED_DIR, REPLACED_DIR ".moved") != 0) {
		report("plant_symlink", phase, "blocked (%s; rename)", errno_name(errno));
	} else if (symlink(SYMLINK_TARGET, REPLACED_DIR) != 0) {
		report("plant_symlink", phase, "blocked (%s; symlink)", errno_name(errno));
	} else {
		report("plant_symlink", phase, "SUCCEEDED");
	}
}

#elif defined(ATTEMPT_CODE_MEMORY)

/* x86-64 "mov eax, 42; ret". */
static const unsigned char code[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};
#define CODE_RESULT 42

typedef int (*code_function)(void);

/* Copy `code` in through `writable` and call it through `executable`. */
static void run_code(const char *step, const char *phase, void *writable, void *executable)
{
	memcpy(writable, code, sizeof(code));
	int result = ((code_function)executable)();
	if (result == CODE_RESULT) {
		report(step, phase, "SUCCEEDED (written code ran and returned %d)", result);
	} else {
		report(step, phase, "error (written code returned %d)", result);
	}
}

static void try_mremap_alias(const char *phase)
{
	size_t size = (size_t)sysconf(_SC_PAGESIZE);
	void *executable = mmap(NULL, size, PROT_READ | PROT_EXEC, MAP_SHARED | MAP_ANONYMOUS,
			-1, 0);

	if (executable == MAP_FAILED) {
		report("mremap_alias", phase, "blocked (%s; mmap read+exec)", errno_name(errno));
		return;
	}
	/* An old size of 0 maps the same shared pages a second time. */
	void *writable = mremap(executable, 0, size, MREMAP_MAYMOVE);
	if (writable == MAP_FAILED) {
		report("mremap_alias", phase, "blocked (%s; mremap)", errno_name(errno));
	} else if (mprotect(writable, size, PROT_READ | PROT_WRITE) != 0) {
		report("mremap_alias", phase, "blocked (%s; mprotect read+write)", errno_name(errno));
		munmap(writable, size);
	} else {
		run_code("mremap_alias", phase, writable, executable);
		munmap(writable, size);
	}
	munmap(executable, size);
}

static void try_shm(const char *phase)
{
	size_t size = (size_t)sysconf(_SC_PAGESIZE);
	int id = shmget(IPC_PRIVATE, size, IPC_CREAT | 0600);

	if (id < 0) {
		report("shm_exec", phase, "blocked (%s; shmget)", errno_name(errno));
		return;
	}
	void *writable = shmat(id, NULL, 0);
	int write_error = writable == (void *)-1 ? errno : 0;
	void *executable = shmat(id, NULL, SHM_RDONLY | SHM_EXEC);
	int exec_error = executable == (void *)-1 ? errno : 0;
	/* Marked for removal now, so the segment lives only as long as these mappings. */
	shmctl(id, IPC_RMID, NULL);
	if (write_error != 0) {
		report("shm_exec", phase, "error (shmat read+write: %s)", errno_name(write_error));
	} else if (exec_error != 0) {
		report("shm_exec", phase, "blocked (%s; shmat SHM_EXEC)", errno_name(exec_error));
	} else {
		run_code("shm_exec", phase, writable, executable);
	}
	if (write_error == 0) {
		shmdt(writable);
	}
	if (exec_error == 0) {
		shmdt(executable);
	}
}

/* A function of the plugin's own code, whose first byte the /proc/self/mem step rewrites. */
static int own_code(void)
{
	return CODE_RESULT;
}

static void try_proc_self_mem(const char *phase)
{
	unsigned char byte;
	off_t address = (off_t)(uintptr_t)own_code;
	int fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		report("proc_self_mem", phase, "blocked (%s; open)", errno_name(errno));
		return;
	}
	if (pread(fd, &byte, 1, address) != 1) {
		report("proc_self_mem", phase, "error (pread: %s)", errno_name(errno));
	} else if (pwrite(fd, &byte, 1, address) != 1) {
		/* The same byte goes back, so the code stays as it was even where this works. */
		report("proc_self_mem", phase, "blocked (%s; pwrite)", errno_name(errno));
	} else {
		report("proc_self_mem", phase, "SUCCEEDED (wrote into the plugin's code, result %d)",
				own_code());
	}
	close(fd);
}

void redteam_attack(const char *phase)
{
	try_mremap_alias(phase);
	try_shm(phase);
	try_proc_self_mem(phase);
}

#endif
