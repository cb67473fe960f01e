/*
 * Installed-package check (cargo xtask dist): a session through the fault proxy survives a cut.
 * Arguments: the server's URL (through the proxy) and a topic of its own. Prints `ready <id>`
 * after the first round trip; the caller then cuts the connection; prints `ok <id>` once the
 * session resumed and a second message made the round trip.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tether.h"

#define GUARD_SECONDS 60

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static char received[2][16];
static int received_count;
static int reconnections;

static void on_state(SESSION_T *session, SESSION_STATE_T old_state, SESSION_STATE_T new_state) {
    (void)session;
    if (old_state == RECOVERING_RECONNECT && new_state == CONNECTED_ACTIVE) {
        pthread_mutex_lock(&lock);
        reconnections++;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
    }
}

static void on_update(const char *topic, const void *value, size_t length, void *context) {
    (void)topic;
    (void)context;
    pthread_mutex_lock(&lock);
    if (received_count < 2) {
        size_t n = length < sizeof received[0] - 1 ? length : sizeof received[0] - 1;
        memcpy(received[received_count], value, n);
        received[received_count][n] = '\0';
    }
    received_count++;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

/* Waits until *counter reaches at least `n`; 0 on success, -1 past the guard. */
static int wait_for(const int *counter, int n) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += GUARD_SECONDS;
    int rc = 0;
    pthread_mutex_lock(&lock);
    while (*counter < n && rc != ETIMEDOUT) {
        rc = pthread_cond_timedwait(&changed, &lock, &deadline);
    }
    int ok = *counter >= n;
    pthread_mutex_unlock(&lock);
    return ok ? 0 : -1;
}

static int fail(const char *what, TETHER_ERROR_T *error) {
    if (error) {
        fprintf(stderr, "FAIL: %s: error %d: %s\n", what, error->code,
                error->message ? error->message : "");
        tether_error_free(error);
    } else {
        fprintf(stderr, "FAIL: %s\n", what);
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) return fail("usage: smoke <url> <topic>", NULL);
    const char *topic = argv[2];
    TETHER_ERROR_T error = {0};
    CREDENTIALS_T *credentials = credentials_create_password("password");
    SESSION_LISTENER_T listener = {.on_state_changed = on_state, .context = NULL};
    SESSION_T *session = session_create(argv[1], "control", credentials, &listener, NULL, &error);
    credentials_free(credentials);
    if (session == NULL) return fail("session_create", &error);
    char *id = session_id_to_string(session_id_get(session));

    if (!session_subscribe(session, topic, on_update, NULL, &error)) return fail("subscribe", &error);
    if (!session_publish(session, topic, "one", 3, &error)) return fail("publish one", &error);
    if (wait_for(&received_count, 1) != 0) return fail("no first update", NULL);
    printf("ready %s\n", id);
    fflush(stdout);

    if (wait_for(&reconnections, 1) != 0) return fail("no reconnection", NULL);
    char *after = session_id_to_string(session_id_get(session));
    if (strcmp(id, after) != 0) return fail("the session id changed", NULL);
    free(after);
    if (!session_publish(session, topic, "two", 3, &error)) return fail("publish two", &error);
    if (wait_for(&received_count, 2) != 0) return fail("no second update", NULL);
    pthread_mutex_lock(&lock);
    int right = received_count == 2 && strcmp(received[0], "one") == 0 && strcmp(received[1], "two") == 0;
    pthread_mutex_unlock(&lock);
    if (!right) return fail("received something else than one, two", NULL);

    if (!session_close(session, &error)) return fail("close", &error);
    session_free(session);
    if (!tether_shutdown(5000, &error)) return fail("tether_shutdown", &error);
    printf("ok %s\n", id);
    free(id);
    return 0;
}
