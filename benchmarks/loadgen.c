/*
 * MQTT load generator for benchmarks/throughput.py.
 *
 * One subscriber and N publishers connect to the broker. The publishers send COUNT messages
 * of SIZE bytes on one topic, at QoS 0 or 1, as fast as a bounded window of unfinished
 * publishes allows. The subscriber, subscribed at the same QoS, counts what arrives. The
 * result is one JSON line on stdout:
 *
 *   receive_rate  received / seconds from the first publish to the last message received
 *   publish_rate  count / seconds from the first publish to the last publish finished
 *   lost          count - received (nonzero when the broker drops messages)
 *
 * A publish is finished when libmosquitto calls on_publish: for QoS 0 after the PUBLISH
 * packet was written to the socket, for QoS 1 when the PUBACK arrived.
 *
 * With -e, the load is also bounded end to end: at most WINDOW x PUBLISHERS messages are
 * published but not yet received. Without it, publishers that are faster than the subscriber
 * fill the broker's queue for the subscriber, and Mosquitto drops QoS 1 messages beyond
 * max_queued_messages (default 1000, mosquitto.conf(5) of 2.0.11) per client. Lost messages
 * stay counted as in transit, so a run with -e stalls and fails once WINDOW x PUBLISHERS
 * messages are lost.
 *
 * Usage: loadgen [-h HOST] [-p PORT] [-q QOS] [-n COUNT] [-s SIZE] [-N PUBLISHERS]
 *                [-w WINDOW] [-e] [-t TOPIC] [-u USERNAME]
 * The password for -u comes from the LOADGEN_PASSWORD environment variable, so that it does
 * not appear in the process list.
 *
 * Exit status: 0 when the run finished, even with lost messages, which the JSON reports;
 * 1 when a connection, subscription or publish failed or the run stalled; 2 on bad arguments.
 *
 * Build: gcc -O2 -Wall -Wextra -o loadgen loadgen.c -lmosquitto -lpthread
 */

#include <errno.h>
#include <limits.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* After the last publish finished, the run ends once this many seconds pass without a message
 * arriving. Messages that would arrive later are counted as lost. */
#define DRAIN_SECONDS 2.0
/* A run in which neither a publish finishes nor a message arrives for this long has stalled,
 * and so has a start-up in which the clients are not connected and subscribed by then. */
#define STALL_SECONDS 15.0
#define MAX_PUBLISHERS 64

struct options {
	const char *host;
	int port;
	int qos;
	long count;
	int size;
	int publishers;
	int window;
	bool end_to_end;
	const char *topic;
	const char *username;
	const char *password;
};

/* A publisher client is driven by its own thread with mosquitto_loop(), not by a
 * libmosquitto network thread (mosquitto_loop_start). With a network thread, every publish
 * wakes that thread through a socket pair before the packet is written, which adds a thread
 * switch and system calls per message. On a small machine those take CPU time from the broker
 * under test. */
struct publisher {
	struct mosquitto *mosq;
	pthread_t thread;
	bool started;     /* `thread` was created */
	bool connected;   /* the CONNACK arrived; only its thread uses it */
	long messages;    /* this publisher's share of the count */
	int unfinished;   /* publishes without on_publish yet; only its thread uses it */
};

/* State shared by the threads. One mutex guards it: the benchmark measures the broker, and an
 * uncontended lock per message costs far less than the broker's work per message. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	pthread_cond_t drained;  /* with -e: messages in transit fell to half the limit */
	struct options opt;
	struct publisher publishers[MAX_PUBLISHERS];
	int connected;      /* publishers connected */
	bool subscribed;
	bool go;            /* the start signal: publishers may publish */
	bool stopping;      /* set before our own disconnects, which are not failures */
	char error[256];    /* first failure, empty while none */
	long finished;      /* publishes finished, all publishers together */
	long published;     /* publishes started, all publishers together */
	long transit_limit; /* with -e: maximum of published - received */
	int waiting;        /* publishers waiting on `drained` */
	long received;
	double start;       /* monotonic seconds at the first publish, 0 before */
	double finish;      /* when the last publish finished */
	double last_received;
	double last_progress;
} run = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.changed = PTHREAD_COND_INITIALIZER,
	.drained = PTHREAD_COND_INITIALIZER,
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Record the first failure and wake every waiting thread. Call with run.lock held. */
static void fail_locked(const char *message, const char *detail)
{
	if (run.error[0] == '\0') {
		snprintf(run.error, sizeof run.error, "%s: %s", message, detail);
	}
	pthread_cond_broadcast(&run.changed);
	pthread_cond_broadcast(&run.drained);
}

static void fail(const char *message, const char *detail)
{
	pthread_mutex_lock(&run.lock);
	fail_locked(message, detail);
	pthread_mutex_unlock(&run.lock);
}

static bool failed(void)
{
	pthread_mutex_lock(&run.lock);
	bool result = run.error[0] != '\0';
	pthread_mutex_unlock(&run.lock);
	return result;
}

static void on_subscriber_connect(struct mosquitto *mosq, void *userdata, int rc)
{
	(void)userdata;
	if (rc != 0) {
		fail("subscriber connect rejected", mosquitto_connack_string(rc));
		return;
	}
	/* Subscribe at the publish QoS, so that messages arrive at that QoS. */
	rc = mosquitto_subscribe(mosq, NULL, run.opt.topic, run.opt.qos);
	if (rc != MOSQ_ERR_SUCCESS) {
		fail("subscribe failed", mosquitto_strerror(rc));
	}
}

static void on_subscribe(struct mosquitto *mosq, void *userdata, int mid, int count,
			 const int *granted_qos)
{
	(void)mosq;
	(void)userdata;
	(void)mid;
	/* A broker that denies the subscription, for example by ACL, grants 0x80 (MQTT 3.1.1). */
	if (count != 1 || granted_qos[0] != run.opt.qos) {
		fail("subscription not granted at the requested QoS", run.opt.topic);
		return;
	}
	pthread_mutex_lock(&run.lock);
	run.subscribed = true;
	pthread_cond_broadcast(&run.changed);
	pthread_mutex_unlock(&run.lock);
}

static void on_message(struct mosquitto *mosq, void *userdata,
		       const struct mosquitto_message *message)
{
	(void)mosq;
	(void)userdata;
	(void)message;
	double t = now();

	pthread_mutex_lock(&run.lock);
	run.received++;
	run.last_received = t;
	run.last_progress = t;
	if (run.received == run.opt.count) {
		pthread_cond_broadcast(&run.changed);
	}
	/* Waking a publisher at half the limit, not at every message, saves wake-ups. */
	if (run.waiting > 0 && run.published - run.received <= run.transit_limit / 2) {
		pthread_cond_broadcast(&run.drained);
	}
	pthread_mutex_unlock(&run.lock);
}

static void on_publisher_connect(struct mosquitto *mosq, void *userdata, int rc)
{
	struct publisher *publisher = userdata;

	(void)mosq;
	if (rc != 0) {
		fail("publisher connect rejected", mosquitto_connack_string(rc));
		return;
	}
	publisher->connected = true;
	pthread_mutex_lock(&run.lock);
	run.connected++;
	pthread_cond_broadcast(&run.changed);
	pthread_mutex_unlock(&run.lock);
}

static void on_publish(struct mosquitto *mosq, void *userdata, int mid)
{
	struct publisher *publisher = userdata;
	double t = now();

	(void)mosq;
	(void)mid;
	publisher->unfinished--;
	pthread_mutex_lock(&run.lock);
	run.finished++;
	run.last_progress = t;
	if (run.finished == run.opt.count) {
		run.finish = t;
		pthread_cond_broadcast(&run.changed);
	}
	pthread_mutex_unlock(&run.lock);
}

static void on_disconnect(struct mosquitto *mosq, void *userdata, int rc)
{
	(void)mosq;
	(void)userdata;
	pthread_mutex_lock(&run.lock);
	if (!run.stopping) {
		fail_locked("connection lost", mosquitto_strerror(rc));
	}
	pthread_mutex_unlock(&run.lock);
}

/* Create a client and connect it. `publisher` is NULL for the subscriber. It becomes the
 * callbacks' userdata, except that libmosquitto passes the client itself when it is NULL. */
static struct mosquitto *connect_client(int index, struct publisher *publisher)
{
	char id[64];
	struct mosquitto *mosq;
	int rc;

	snprintf(id, sizeof id, "loadgen-%ld-%s%d", (long)getpid(), publisher ? "pub" : "sub", index);
	mosq = mosquitto_new(id, true, publisher);
	if (mosq == NULL) {
		fail("mosquitto_new failed", strerror(errno));
		return NULL;
	}
	if (run.opt.username != NULL) {
		mosquitto_username_pw_set(mosq, run.opt.username, run.opt.password);
	}
	mosquitto_disconnect_callback_set(mosq, on_disconnect);
	if (publisher == NULL) {
		mosquitto_connect_callback_set(mosq, on_subscriber_connect);
		mosquitto_subscribe_callback_set(mosq, on_subscribe);
		mosquitto_message_callback_set(mosq, on_message);
	} else {
		mosquitto_connect_callback_set(mosq, on_publisher_connect);
		mosquitto_publish_callback_set(mosq, on_publish);
		/* For QoS 1, let the library send as many messages as the window holds. Its default
		 * of 20 would otherwise queue the rest inside the library and act as the window. */
		mosquitto_max_inflight_messages_set(mosq, (unsigned int)run.opt.window);
	}
	rc = mosquitto_connect(mosq, run.opt.host, run.opt.port, 60);
	if (rc != MOSQ_ERR_SUCCESS) {
		fail("connect failed", rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
	}
	return mosq;
}

/* Run mosquitto_loop() once: send what is queued, read what arrived, and call the callbacks.
 * `timeout_ms` bounds the wait for the socket. */
static bool service(struct mosquitto *mosq, int timeout_ms)
{
	int rc = mosquitto_loop(mosq, timeout_ms, 1);

	if (rc != MOSQ_ERR_SUCCESS) {
		fail("network error", rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
		return false;
	}
	return true;
}

/* Take one message from the end-to-end allowance, or return false when none is left. */
static bool reserve_transit(void)
{
	pthread_mutex_lock(&run.lock);
	bool reserved = !run.opt.end_to_end || run.published - run.received < run.transit_limit;
	if (reserved) {
		run.published++;
	}
	pthread_mutex_unlock(&run.lock);
	return reserved;
}

/* Wait until the subscriber received half of the messages in transit. The timeout lets the
 * caller serve its connection meanwhile. */
static void wait_for_transit(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 10 * 1000 * 1000;
	if (ts.tv_nsec >= 1000 * 1000 * 1000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000 * 1000 * 1000;
	}
	pthread_mutex_lock(&run.lock);
	if (run.published - run.received >= run.transit_limit && run.error[0] == '\0') {
		run.waiting++;
		pthread_cond_timedwait(&run.drained, &run.lock, &ts);
		run.waiting--;
	}
	pthread_mutex_unlock(&run.lock);
}

/* Connect one publisher, wait for the start, then publish its share. At most `window`
 * publishes are unfinished at a time. Without the window, mosquitto_publish would queue every
 * message in client memory at once: the publish rate would then measure the queueing, and the
 * QoS 0 messages would reach the broker in one burst that it may drop. */
static void *publish_all(void *arg)
{
	struct publisher *publisher = arg;
	char *payload = calloc(1, (size_t)run.opt.size + 1);
	long sent = 0;
	bool go = false;

	if (payload == NULL) {
		fail("publish failed", "out of memory");
		return NULL;
	}
	memset(payload, 'x', (size_t)run.opt.size);

	while (!publisher->connected && !failed() && service(publisher->mosq, 100)) {
		/* on_publisher_connect sets `connected` when the CONNACK arrives. */
	}
	pthread_mutex_lock(&run.lock);
	while (!run.go && run.error[0] == '\0') {
		pthread_cond_wait(&run.changed, &run.lock);
	}
	go = run.go && run.error[0] == '\0';
	if (go && run.start == 0) {
		run.start = now();
	}
	pthread_mutex_unlock(&run.lock);

	while (go && (sent < publisher->messages || publisher->unfinished > 0) && !failed()) {
		bool transit_full = false;
		while (sent < publisher->messages && publisher->unfinished < run.opt.window) {
			if (!reserve_transit()) {
				transit_full = true;
				break;
			}
			/* Count first: for QoS 0, on_publish may run inside mosquitto_publish. */
			publisher->unfinished++;
			sent++;
			int rc = mosquitto_publish(publisher->mosq, NULL, run.opt.topic, run.opt.size,
						   payload, run.opt.qos, false);
			if (rc != MOSQ_ERR_SUCCESS) {
				fail("publish failed", mosquitto_strerror(rc));
				break;
			}
		}
		/* With a full window, wait for PUBACKs (QoS 1) or for room in the socket buffer
		 * (QoS 0). Otherwise only poll, so that a fast QoS 0 run still reads the socket. */
		if (!service(publisher->mosq, publisher->unfinished >= run.opt.window ? 100 : 0)) {
			break;
		}
		if (transit_full) {
			wait_for_transit();
		}
	}
	free(payload);
	return NULL;
}

/* Wait until `ready` returns true or a failure is recorded, at most `timeout` seconds when it
 * is positive. Returns false on a failure. Call with run.lock held. */
static bool wait_until(bool (*ready)(void), double timeout)
{
	double deadline = now() + timeout;

	while (!ready() && run.error[0] == '\0') {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000 * 1000 * 1000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000 * 1000 * 1000;
		}
		pthread_cond_timedwait(&run.changed, &run.lock, &ts);
		if (timeout > 0 && now() > deadline) {
			fail_locked("timed out", "clients not connected and subscribed");
		}
	}
	return run.error[0] == '\0';
}

static bool clients_ready(void)
{
	return run.subscribed && run.connected == run.opt.publishers;
}

/* The run is over when every publish finished and either every message arrived or none
 * arrived for DRAIN_SECONDS. It has stalled when nothing happened for STALL_SECONDS. */
static bool run_over(void)
{
	double t = now();

	if (run.finished < run.opt.count) {
		if (t - run.last_progress > STALL_SECONDS) {
			fail_locked("stalled", "no publish finished and no message arrived");
		}
		return false;
	}
	return run.received >= run.opt.count || t - run.last_progress > DRAIN_SECONDS;
}

static long parse_number(const char *text, const char *name, long min, long max)
{
	char *end;
	long value;

	errno = 0;
	value = strtol(text, &end, 10);
	if (errno != 0 || *end != '\0' || end == text || value < min || value > max) {
		fprintf(stderr, "loadgen: invalid %s '%s': expected an integer from %ld to %ld\n",
			name, text, min, max);
		exit(2);
	}
	return value;
}

static void parse_options(int argc, char **argv, struct options *opt)
{
	static char default_topic[64];
	int c;

	snprintf(default_topic, sizeof default_topic, "loadgen/%ld", (long)getpid());
	*opt = (struct options){
		"127.0.0.1", 1883, 0, 100000, 64, 1, 100, false, default_topic, NULL, NULL,
	};
	while ((c = getopt(argc, argv, "h:p:q:n:s:N:w:et:u:")) != -1) {
		switch (c) {
		case 'h': opt->host = optarg; break;
		case 'p': opt->port = (int)parse_number(optarg, "port", 1, 65535); break;
		case 'q': opt->qos = (int)parse_number(optarg, "QoS", 0, 1); break;
		case 'n': opt->count = parse_number(optarg, "count", 1, LONG_MAX); break;
		/* MQTT allows payloads up to 268435455 bytes minus the headers; 16 MiB is plenty. */
		case 's': opt->size = (int)parse_number(optarg, "size", 0, 16 * 1024 * 1024); break;
		case 'N':
			opt->publishers = (int)parse_number(optarg, "publishers", 1, MAX_PUBLISHERS);
			break;
		/* 65535 is the most QoS 1 packet ids one connection can have in flight. */
		case 'w': opt->window = (int)parse_number(optarg, "window", 1, 65535); break;
		case 'e': opt->end_to_end = true; break;
		case 't': opt->topic = optarg; break;
		case 'u': opt->username = optarg; break;
		default:
			fprintf(stderr, "usage: loadgen [-h HOST] [-p PORT] [-q 0|1] [-n COUNT] "
					"[-s SIZE] [-N PUBLISHERS] [-w WINDOW] [-e] [-t TOPIC] "
					"[-u USERNAME]\n");
			exit(2);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "loadgen: unexpected argument '%s'\n", argv[optind]);
		exit(2);
	}
	opt->password = getenv("LOADGEN_PASSWORD");
	run.transit_limit = (long)opt->window * opt->publishers;
}

static void print_result(void)
{
	double publish_seconds = run.finish - run.start;
	double receive_seconds = run.received > 0 ? run.last_received - run.start : 0.0;

	printf("{\"qos\": %d, \"count\": %ld, \"size\": %d, \"publishers\": %d, \"window\": %d, "
	       "\"end_to_end\": %s, \"received\": %ld, \"lost\": %ld, "
	       "\"publish_seconds\": %.6f, \"publish_rate\": %.1f, "
	       "\"receive_seconds\": %.6f, \"receive_rate\": %.1f}\n",
	       run.opt.qos, run.opt.count, run.opt.size, run.opt.publishers, run.opt.window,
	       run.opt.end_to_end ? "true" : "false", run.received, run.opt.count - run.received,
	       publish_seconds, (double)run.opt.count / publish_seconds,
	       receive_seconds, receive_seconds > 0 ? (double)run.received / receive_seconds : 0.0);
}

int main(int argc, char **argv)
{
	struct mosquitto *subscriber;
	bool ok;

	parse_options(argc, argv, &run.opt);
	mosquitto_lib_init();

	/* Connect everything and subscribe before the clock starts. The subscriber only reads,
	 * so a libmosquitto network thread serves it. */
	subscriber = connect_client(0, NULL);
	if (subscriber != NULL && !failed()) {
		int rc = mosquitto_loop_start(subscriber);
		if (rc != MOSQ_ERR_SUCCESS) {
			fail("mosquitto_loop_start failed", mosquitto_strerror(rc));
		}
	}
	for (int i = 0; i < run.opt.publishers && !failed(); i++) {
		struct publisher *publisher = &run.publishers[i];
		/* Spread the remainder so that the shares add up to the count exactly. */
		publisher->messages = run.opt.count / run.opt.publishers
				      + (i < run.opt.count % run.opt.publishers ? 1 : 0);
		publisher->mosq = connect_client(i, publisher);
		if (publisher->mosq == NULL || failed()) {
			break;
		}
		if (pthread_create(&publisher->thread, NULL, publish_all, publisher) != 0) {
			fail("pthread_create failed", strerror(errno));
			break;
		}
		publisher->started = true;
	}

	pthread_mutex_lock(&run.lock);
	ok = wait_until(clients_ready, STALL_SECONDS);
	/* The first publisher to wake sets run.start. */
	run.last_progress = now();
	run.go = ok;
	pthread_cond_broadcast(&run.changed);
	if (ok) {
		ok = wait_until(run_over, 0);
	}
	run.stopping = true;
	pthread_mutex_unlock(&run.lock);

	/* Publisher threads end when their share is finished or when a failure is recorded. */
	for (int i = 0; i < run.opt.publishers; i++) {
		struct publisher *publisher = &run.publishers[i];
		if (publisher->started) {
			pthread_join(publisher->thread, NULL);
		}
		if (publisher->mosq != NULL) {
			mosquitto_disconnect(publisher->mosq);
			mosquitto_destroy(publisher->mosq);
		}
	}
	if (subscriber != NULL) {
		mosquitto_disconnect(subscriber);
		mosquitto_loop_stop(subscriber, false);
		mosquitto_destroy(subscriber);
	}
	mosquitto_lib_cleanup();

	if (!ok) {
		fprintf(stderr, "loadgen: %s\n", run.error);
		return 1;
	}
	print_result();
	return 0;
}
