/* Red-team attacks on the network (see redteam.c). Every address is a loopback address.
 *
 *   ATTEMPT_CONNECT   TCP connect to 127.0.0.1:UNDECLARED_PORT.
 *   ATTEMPT_DECLARED_CONNECT
 *                     TCP connect to 127.0.0.1:DECLARED_PORT, then to 127.0.0.1:UNDECLARED_PORT.
 *   ATTEMPT_OTHER_HOST
 *                     TCP connect to [::1]:DECLARED_PORT, the declared port on a host that the
 *                     manifest does not name.
 *   ATTEMPT_MPTCP     Multipath TCP connect to 127.0.0.1:UNDECLARED_PORT.
 *   ATTEMPT_BIND      listen on 127.0.0.1:UNDECLARED_PORT, and on [::1]:BROKER_PORT, the port of
 *                     the broker's own listener on another address. The sockets stay open until
 *                     the next attack, so the test can connect to them.
 *   ATTEMPT_UDP       send a UDP datagram to 127.0.0.1:UDP_PORT.
 *   ATTEMPT_UNIX_SOCKET
 *                     connect to the UNIX socket at UNIX_PATH and to the abstract UNIX socket
 *                     UNIX_ABSTRACT.
 *   ATTEMPT_RAW_SOCKET
 *                     socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) and socket(AF_PACKET, SOCK_RAW, 0).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "redteam.h"

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

#if defined(ATTEMPT_CONNECT) || defined(ATTEMPT_DECLARED_CONNECT) || defined(ATTEMPT_MPTCP) \
		|| defined(ATTEMPT_OTHER_HOST) || defined(ATTEMPT_BIND) || defined(ATTEMPT_UDP)

/* Fill `address` for `port` on 127.0.0.1, or on ::1 when `ipv6`, and return its length. */
static socklen_t loopback(struct sockaddr_storage *address, int port, int ipv6)
{
	memset(address, 0, sizeof(*address));
	if (ipv6) {
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)address;
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((unsigned short)port);
		v6->sin6_addr = in6addr_loopback;
		return sizeof(*v6);
	}
	struct sockaddr_in *v4 = (struct sockaddr_in *)address;
	v4->sin_family = AF_INET;
	v4->sin_port = htons((unsigned short)port);
	v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sizeof(*v4);
}

#endif

#if defined(ATTEMPT_CONNECT) || defined(ATTEMPT_DECLARED_CONNECT) || defined(ATTEMPT_MPTCP) \
		|| defined(ATTEMPT_OTHER_HOST)

/* Connect a stream socket of `protocol` to `port` on a loopback address. Return 0 or the errno
 * of socket or connect. */
static int connect_port(int port, int ipv6, int protocol)
{
	struct sockaddr_storage address;
	socklen_t length = loopback(&address, port, ipv6);
	int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, protocol);

	if (fd < 0) {
		return errno;
	}
	int error = connect(fd, (struct sockaddr *)&address, length) == 0 ? 0 : errno;
	close(fd);
	return error;
}

#endif

#if defined(ATTEMPT_CONNECT)

#ifndef UNDECLARED_PORT
#error "ATTEMPT_CONNECT needs UNDECLARED_PORT"
#endif

void redteam_attack(const char *phase)
{
	report_call("connect_undeclared", phase, connect_port(UNDECLARED_PORT, 0, 0));
}

#elif defined(ATTEMPT_DECLARED_CONNECT)

#if !defined(DECLARED_PORT) || !defined(UNDECLARED_PORT)
#error "ATTEMPT_DECLARED_CONNECT needs DECLARED_PORT and UNDECLARED_PORT"
#endif

void redteam_attack(const char *phase)
{
	report_call("connect_declared", phase, connect_port(DECLARED_PORT, 0, 0));
	report_call("connect_undeclared", phase, connect_port(UNDECLARED_PORT, 0, 0));
}

#elif defined(ATTEMPT_OTHER_HOST)

#ifndef DECLARED_PORT
#error "ATTEMPT_OTHER_HOST needs DECLARED_PORT"
#endif

void redteam_attack(const char *phase)
{
	report_call("connect_other_host", phase, connect_port(DECLARED_PORT, 1, 0));
}

#elif defined(ATTEMPT_MPTCP)

#ifndef UNDECLARED_PORT
#error "ATTEMPT_MPTCP needs UNDECLARED_PORT"
#endif

void redteam_attack(const char *phase)
{
	report_call("connect_mptcp", phase, connect_port(UNDECLARED_PORT, 0, IPPROTO_MPTCP));
}

#elif defined(ATTEMPT_BIND)

#if !defined(UNDECLARED_PORT) || !defined(BROKER_PORT)
#error "ATTEMPT_BIND needs UNDECLARED_PORT and BROKER_PORT"
#endif

static int listeners[2] = {-1, -1};

/* Listen on `port` of a loopback address with the descriptor kept in `*slot`. Return 0 or an
 * errno. The socket of an earlier attack is closed first, so each phase can bind again. */
static int listen_on(int *slot, int port, int ipv6)
{
	struct sockaddr_storage address;
	socklen_t length = loopback(&address, port, ipv6);

	if (*slot >= 0) {
		close(*slot);
		*slot = -1;
	}
	int fd = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return errno;
	}
	if (bind(fd, (struct sockaddr *)&address, length) != 0 || listen(fd, 8) != 0) {
		int error = errno;
		close(fd);
		return error;
	}
	*slot = fd;
	return 0;
}

void redteam_attack(const char *phase)
{
	report_call("listen_undeclared", phase, listen_on(&listeners[0], UNDECLARED_PORT, 0));
	report_call("listen_broker_port_v6", phase, listen_on(&listeners[1], BROKER_PORT, 1));
}

#elif defined(ATTEMPT_UDP)

#ifndef UDP_PORT
#error "ATTEMPT_UDP needs UDP_PORT"
#endif

static int send_datagram(void)
{
	static const char datagram[] = "redteam";
	struct sockaddr_storage address;
	socklen_t length = loopback(&address, UDP_PORT, 0);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

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
	report_call("udp_send", phase, send_datagram());
}

#elif defined(ATTEMPT_UNIX_SOCKET)

#if !defined(UNIX_PATH) || !defined(UNIX_ABSTRACT)
#error "ATTEMPT_UNIX_SOCKET needs UNIX_PATH and UNIX_ABSTRACT"
#endif

/* Connect to the UNIX socket `name`, a path or, when `abstract`, an abstract name. Return 0 or
 * an errno. */
static int connect_unix(const char *name, int abstract)
{
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
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return errno;
	}
	int error = connect(fd, (struct sockaddr *)&address, length) == 0 ? 0 : errno;
	close(fd);
	return error;
}

void redteam_attack(const char *phase)
{
	report_call("connect_unix_path", phase, connect_unix(UNIX_PATH, 0));
	report_call("connect_unix_abstract", phase, connect_unix(UNIX_ABSTRACT, 1));
}

#elif defined(ATTEMPT_RAW_SOCKET)

/* Open a socket and close it again. Return 0 or the errno of socket. */
static int open_socket(int domain, int type, int protocol)
{
	int fd = socket(domain, type | SOCK_CLOEXEC, protocol);

	if (fd < 0) {
		return errno;
	}
	close(fd);
	return 0;
}

void redteam_attack(const char *phase)
{
	report_call("raw_icmp", phase, open_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
	report_call("packet_socket", phase, open_socket(AF_PACKET, SOCK_RAW, 0));
}

#endif
