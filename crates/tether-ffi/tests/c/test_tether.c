/*
 * C tests of tether.h against a real server behind the fault proxy.
 *
 *   test_tether <ws://proxy-url> <control host:port> [test name ...]
 *
 * Runs every test (or the named ones) and closes with "N passed, N failed". Waits are on
 * condition variables signalled by the callbacks, bounded by WAIT_BOUND_MS only so that a
 * failing test fails instead of hanging; no sleep is used to synchronise.
 *
 * Environment: TETHER_SERVER_URL, the server itself (not through the proxy), for the fallback
 * URL test. The "drain" test runs only when named: it prints "drain now" and expects the
 * harness to drain the server (retry-after hint TETHER_RETRY_AFTER_MS) and start it again on
 * the same address from what the drain saved.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tether.h"

/* Generous: under valgrind everything is tens of times slower. */
#define WAIT_BOUND_MS 60000

static const char *g_url;
static const char *g_control;
static int g_check_failed;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            printf("    check failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
            g_check_failed = 1;                                                          \
        }                                                                                \
    } while (0)

/* Like CHECK, but ends the test (after its clean-up label). */
#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            printf("    required check failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            g_check_failed = 1;                                                          \
            goto done;                                                                   \
        }                                                                                \
    } while (0)

static void sleep_ms(long ms) {
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Waiting on a condition with a bound                                                       */

typedef int (*predicate_t)(void *arg);

/* Waits (mutex held by the caller) until pred(arg) holds; 0 if the bound elapsed first. */
static int wait_locked(pthread_mutex_t *mu, pthread_cond_t *cv, predicate_t pred, void *arg) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_BOUND_MS / 1000;
    while (!pred(arg)) {
        if (pthread_cond_timedwait(cv, mu, &deadline) == ETIMEDOUT) {
            return pred(arg);
        }
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* The fault proxy's HTTP control API                                                        */

/* Sends one request; returns the HTTP status (0 on a socket error). */
static int control(const char *method, const char *path) {
    char host[64];
    const char *colon = strrchr(g_control, ':');
    if (colon == NULL || (size_t)(colon - g_control) >= sizeof host) {
        return 0;
    }
    memcpy(host, g_control, (size_t)(colon - g_control));
    host[colon - g_control] = '\0';

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        return 0;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return 0;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return 0;
    }
    char request[512];
    int n = snprintf(request, sizeof request,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                     method, path, g_control);
    if (write(fd, request, (size_t)n) != n) {
        close(fd);
        return 0;
    }
    char response[4096];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof response - 1 && (r = read(fd, response + got, sizeof response - 1 - got)) > 0) {
        got += (size_t)r;
    }
    close(fd);
    response[got] = '\0';
    int status = 0;
    if (sscanf(response, "HTTP/1.1 %d", &status) != 1) {
        return 0;
    }
    return status;
}

static int proxy_cut(void) { return control("POST", "/cut?mode=rst") == 200; }
static int proxy_refuse(void) { return control("POST", "/refuse") == 200; }
static int proxy_heal(void) { return control("POST", "/heal") == 200; }

/* ---------------------------------------------------------------------------------------- */
/* A listener that records every state change                                               */

#define MAX_CHANGES 32

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
    SESSION_STATE_T old_state[MAX_CHANGES];
    SESSION_STATE_T new_state[MAX_CHANGES];
    SESSION_T *session;  /* the pointer the callbacks received */
    int foreign_session; /* a callback received another pointer */
    int on_main_thread;  /* a callback ran on the test's thread */
    pthread_t main_thread;
    /* Optional action run inside the callback on entering this state. */
    SESSION_STATE_T act_on;
    int (*action)(SESSION_T *session);
    int action_result;
} recorder_t;

static void recorder_init(recorder_t *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->main_thread = pthread_self();
    r->act_on = SESSION_STATE_UNKNOWN;
}

static void recorder_destroy(recorder_t *r) {
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static void on_state_changed(SESSION_T *session, SESSION_STATE_T old_state, SESSION_STATE_T new_state) {
    recorder_t *r = session_listener_context(session);
    int (*action)(SESSION_T *) = NULL;
    pthread_mutex_lock(&r->mu);
    if (r->session == NULL) {
        r->session = session;
    } else if (r->session != session) {
        r->foreign_session = 1;
    }
    if (pthread_equal(pthread_self(), r->main_thread)) {
        r->on_main_thread = 1;
    }
    if (r->count < MAX_CHANGES) {
        r->old_state[r->count] = old_state;
        r->new_state[r->count] = new_state;
        r->count++;
    }
    if (new_state == r->act_on) {
        action = r->action;
    }
    pthread_mutex_unlock(&r->mu);
    if (action != NULL) {
        int result = action(session);
        pthread_mutex_lock(&r->mu);
        r->action_result = result;
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

typedef struct {
    recorder_t *r;
    int n;
} count_arg_t;

static int has_count(void *arg) {
    count_arg_t *a = arg;
    return a->r->count >= a->n;
}

/* Waits until the listener has seen n changes. */
static int wait_changes(recorder_t *r, int n) {
    count_arg_t a = { r, n };
    pthread_mutex_lock(&r->mu);
    int ok = wait_locked(&r->mu, &r->cv, has_count, &a);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static int change_is(recorder_t *r, int i, SESSION_STATE_T old_state, SESSION_STATE_T new_state) {
    pthread_mutex_lock(&r->mu);
    int ok = i < r->count && r->old_state[i] == old_state && r->new_state[i] == new_state;
    if (!ok) {
        printf("    change %d: expected %s -> %s, got %s -> %s\n", i,
               session_state_as_string(old_state), session_state_as_string(new_state),
               i < r->count ? session_state_as_string(r->old_state[i]) : "(none)",
               i < r->count ? session_state_as_string(r->new_state[i]) : "(none)");
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static int changes(recorder_t *r) {
    pthread_mutex_lock(&r->mu);
    int n = r->count;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* A user strategy that records its calls                                                    */

#define MAX_CALLS 64

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls, successes, failures;
    /* The attempt facts each strategy call read (session_reconnection_attempt_get), and those
     * of the latest on_success / on_failure call. */
    RECONNECTION_ATTEMPT_INFO_T info[MAX_CALLS];
    int info_ok[MAX_CALLS];
    RECONNECTION_ATTEMPT_INFO_T success_info, failure_info;
    int success_info_ok, failure_info_ok;
    int honour_hint; /* sleep the server's retry-after hint before answering */
    long block_ms;                        /* how long the strategy blocks before answering */
    RECONNECTION_ATTEMPT_ACTION_T action; /* what it answers */
    SESSION_T *session;                   /* the pointer the callbacks received */
    int foreign_session;
    int on_main_thread;
    pthread_t main_thread;
    SESSION_STATE_T state_in_callback; /* session_state_get inside the strategy */
    int recovering_in_callback;        /* session_is_recovering inside the strategy */
    int wait_successes, wait_failures; /* what wait_strategy waits for */
} strategy_args_t;

static void strategy_args_init(strategy_args_t *s, long block_ms, RECONNECTION_ATTEMPT_ACTION_T action) {
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->block_ms = block_ms;
    s->action = action;
    s->main_thread = pthread_self();
    s->state_in_callback = SESSION_STATE_UNKNOWN;
}

static void strategy_args_destroy(strategy_args_t *s) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

static void note_session(strategy_args_t *s, SESSION_T *session) {
    if (s->session == NULL) {
        s->session = session;
    } else if (s->session != session) {
        s->foreign_session = 1;
    }
    if (pthread_equal(pthread_self(), s->main_thread)) {
        s->on_main_thread = 1;
    }
}

static RECONNECTION_ATTEMPT_ACTION_T recording_strategy(SESSION_T *session, void *args) {
    strategy_args_t *s = args;
    SESSION_STATE_T state = session_state_get(session);
    int recovering = session_is_recovering(session);
    RECONNECTION_ATTEMPT_INFO_T info;
    memset(&info, 0, sizeof info);
    int info_ok = session_reconnection_attempt_get(session, &info);
    pthread_mutex_lock(&s->mu);
    note_session(s, session);
    if (s->calls < MAX_CALLS) {
        s->info[s->calls] = info;
        s->info_ok[s->calls] = info_ok;
    }
    s->calls++;
    s->state_in_callback = state;
    s->recovering_in_callback = recovering;
    long block_ms = s->block_ms;
    if (s->honour_hint && info_ok && info.retry_after_ms > block_ms) {
        block_ms = (long)info.retry_after_ms; /* wait as long as the server asked */
    }
    RECONNECTION_ATTEMPT_ACTION_T action = s->action;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (block_ms > 0) {
        sleep_ms(block_ms); /* a C strategy may block: it never runs on an async worker */
    }
    return action;
}

static void recording_success(SESSION_T *session, void *args) {
    strategy_args_t *s = args;
    RECONNECTION_ATTEMPT_INFO_T info;
    int info_ok = session_reconnection_attempt_get(session, &info);
    pthread_mutex_lock(&s->mu);
    note_session(s, session);
    s->success_info = info;
    s->success_info_ok = info_ok;
    s->successes++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void recording_failure(SESSION_T *session, void *args) {
    strategy_args_t *s = args;
    RECONNECTION_ATTEMPT_INFO_T info;
    int info_ok = session_reconnection_attempt_get(session, &info);
    pthread_mutex_lock(&s->mu);
    note_session(s, session);
    s->failure_info = info;
    s->failure_info_ok = info_ok;
    s->failures++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int strategy_reached(void *arg) {
    strategy_args_t *s = arg;
    return s->successes >= s->wait_successes && s->failures >= s->wait_failures;
}

static int wait_strategy(strategy_args_t *s, int successes, int failures) {
    pthread_mutex_lock(&s->mu);
    s->wait_successes = successes;
    s->wait_failures = failures;
    int ok = wait_locked(&s->mu, &s->cv, strategy_reached, s);
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                   */

static SESSION_T *open_session(recorder_t *r, const RECONNECTION_STRATEGY_T *strategy) {
    CREDENTIALS_T *credentials = credentials_create_password("password");
    SESSION_LISTENER_T listener = { on_state_changed, r };
    TETHER_ERROR_T error = { 0 };
    SESSION_T *session = session_create(g_url, "control", credentials, &listener, strategy, &error);
    credentials_free(credentials);
    if (session == NULL) {
        printf("    session_create failed: %d %s\n", error.code, error.message ? error.message : "");
        tether_error_free(&error);
    }
    return session;
}

static char *id_of(SESSION_T *session) {
    return session_id_to_string(session_id_get(session));
}

static int str_eq(const char *a, const char *b) {
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* Checks an error's code and that its message mentions `needle`, then frees it. */
static int error_is(TETHER_ERROR_T *error, TETHER_ERROR_CODE_T code, const char *needle) {
    int ok = error->code == code && error->message != NULL &&
             (needle == NULL || strstr(error->message, needle) != NULL);
    if (!ok) {
        printf("    expected error %d mentioning \"%s\", got %d \"%s\"\n", code, needle ? needle : "",
               error->code, error->message ? error->message : "(null)");
    }
    tether_error_free(error);
    return ok && error->code == TETHER_ERROR_NONE && error->message == NULL;
}

/* The number of threads of this process (Linux: /proc/self/status); -1 if unknown. */
static int thread_count(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return -1;
    }
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "Threads: %d", &n) == 1) {
            break;
        }
    }
    fclose(f);
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* Tests                                                                                     */

static void test_create_and_close(void) {
    recorder_t r;
    recorder_init(&r);
    char *id = NULL;
    SESSION_T *session = open_session(&r, NULL);
    REQUIRE(session != NULL);
    CHECK(session_state_get(session) == CONNECTED_ACTIVE);
    CHECK(session_is_connected(session));
    CHECK(!session_is_recovering(session));
    CHECK(!session_is_closed(session));
    CHECK(session_close_reason(session) == NULL);
    CHECK(session_listener_context(session) == &r);
    id = id_of(session);
    REQUIRE(id != NULL);
    CHECK(strlen(id) == 32 && strspn(id, "0123456789abcdef") == 32);
    CHECK(str_eq(session_state_as_string(session_state_get(session)), "CONNECTED_ACTIVE"));
    /* No reconnection attempt yet: no facts, and the struct is left untouched. */
    RECONNECTION_ATTEMPT_INFO_T info = { 42, 0, 0, NULL, 0 };
    CHECK(!session_reconnection_attempt_get(session, &info));
    CHECK(info.number == 42);

    REQUIRE(wait_changes(&r, 1));
    CHECK(change_is(&r, 0, CONNECTING, CONNECTED_ACTIVE));

    TETHER_ERROR_T error = { 0 };
    CHECK(session_close(session, &error));
    CHECK(error.code == TETHER_ERROR_NONE && error.message == NULL);
    /* session_close returns once the listener has been told. */
    CHECK(changes(&r) == 2);
    CHECK(change_is(&r, 1, CONNECTED_ACTIVE, CLOSED_BY_CLIENT));
    CHECK(session_state_get(session) == CLOSED_BY_CLIENT);
    CHECK(session_is_closed(session));
    CHECK(str_eq(session_close_reason(session), "closed_by_client"));
    CHECK(session_close(session, NULL)); /* closing twice is harmless */
    CHECK(r.session == session && !r.foreign_session);
    CHECK(!r.on_main_thread);
done:
    tether_string_free(id);
    session_free(session);
    recorder_destroy(&r);
}

static void test_strategy_start_reconnects_same_session(void) {
    recorder_t r;
    strategy_args_t s;
    recorder_init(&r);
    strategy_args_init(&s, 200, RECONNECTION_ATTEMPT_ACTION_START);
    char *before = NULL, *after = NULL;
    RECONNECTION_STRATEGY_T *strategy = make_reconnection_strategy_user_function(
        recording_strategy, &s, recording_success, recording_failure);
    REQUIRE(strategy != NULL);
    reconnection_strategy_set_timeout(strategy, 30000);
    SESSION_T *session = open_session(&r, strategy);
    free_reconnection_strategy(strategy); /* copied by session_create */
    REQUIRE(session != NULL);
    before = id_of(session);
    REQUIRE(wait_changes(&r, 1));

    REQUIRE(proxy_cut());
    REQUIRE(wait_strategy(&s, 1, 0));
    REQUIRE(wait_changes(&r, 3));
    CHECK(change_is(&r, 0, CONNECTING, CONNECTED_ACTIVE));
    CHECK(change_is(&r, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
    CHECK(change_is(&r, 2, RECOVERING_RECONNECT, CONNECTED_ACTIVE));
    CHECK(session_is_connected(session));
    after = id_of(session);
    CHECK(str_eq(before, after));
    pthread_mutex_lock(&s.mu);
    CHECK(s.calls == 1);
    CHECK(s.successes == 1);
    CHECK(s.failures == 0);
    CHECK(s.state_in_callback == RECOVERING_RECONNECT);
    CHECK(s.recovering_in_callback);
    CHECK(s.session == session && !s.foreign_session);
    CHECK(!s.on_main_thread);
    /* The strategy read the attempt's facts: the first attempt after a lost connection, no
     * hint from the server, time left within the 30 s timeout. */
    CHECK(s.info_ok[0]);
    CHECK(s.info[0].number == 1);
    CHECK(str_eq(s.info[0].last_reason, "transport_error") ||
          str_eq(s.info[0].last_reason, "connection_error"));
    CHECK(s.info[0].retry_after_ms == RECONNECTION_NO_RETRY_AFTER);
    CHECK(s.info[0].remaining_ms > 0 && s.info[0].remaining_ms <= 30000);
    CHECK(s.info[0].elapsed_ms + s.info[0].remaining_ms <= 30000);
    /* on_success saw the attempt that succeeded. */
    CHECK(s.success_info_ok && s.success_info.number == 1);
    CHECK(str_eq(s.success_info.last_reason, s.info[0].last_reason));
    pthread_mutex_unlock(&s.mu);

    /* A second cut: the strategy is called again and the session resumes again. */
    REQUIRE(proxy_cut());
    REQUIRE(wait_strategy(&s, 2, 0));
    REQUIRE(wait_changes(&r, 5));
    CHECK(change_is(&r, 3, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
    CHECK(change_is(&r, 4, RECOVERING_RECONNECT, CONNECTED_ACTIVE));
    tether_string_free(after);
    after = id_of(session);
    CHECK(str_eq(before, after));
    CHECK(session_close(session, NULL));
    CHECK(change_is(&r, 5, CONNECTED_ACTIVE, CLOSED_BY_CLIENT));
done:
    tether_string_free(before);
    tether_string_free(after);
    session_free(session);
    strategy_args_destroy(&s);
    recorder_destroy(&r);
}

static void test_strategy_abort_closes_failed(void) {
    recorder_t r;
    strategy_args_t s;
    recorder_init(&r);
    strategy_args_init(&s, 50, RECONNECTION_ATTEMPT_ACTION_ABORT);
    RECONNECTION_STRATEGY_T *strategy = make_reconnection_strategy_user_function(
        recording_strategy, &s, recording_success, recording_failure);
    SESSION_T *session = open_session(&r, strategy);
    free_reconnection_strategy(strategy);
    REQUIRE(session != NULL);
    REQUIRE(wait_changes(&r, 1));
    REQUIRE(proxy_cut());
    REQUIRE(wait_changes(&r, 3));
    CHECK(change_is(&r, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
    CHECK(change_is(&r, 2, RECOVERING_RECONNECT, CLOSED_FAILED));
    CHECK(session_state_get(session) == CLOSED_FAILED);
    CHECK(session_is_closed(session));
    CHECK(str_eq(session_close_reason(session), "reconnect_aborted"));
    pthread_mutex_lock(&s.mu);
    CHECK(s.calls == 1 && s.successes == 0 && s.failures == 0);
    pthread_mutex_unlock(&s.mu);
    /* Operations on a closed session fail with a typed error. */
    TETHER_ERROR_T error = { 0 };
    CHECK(!session_publish(session, "c/closed", "x", 1, &error));
    CHECK(error_is(&error, TETHER_ERROR_SESSION_CLOSED, "closed"));
done:
    session_free(session);
    strategy_args_destroy(&s);
    recorder_destroy(&r);
}

static void test_failure_callbacks_while_refused(void) {
    recorder_t r;
    strategy_args_t s;
    recorder_init(&r);
    strategy_args_init(&s, 20, RECONNECTION_ATTEMPT_ACTION_START);
    RECONNECTION_STRATEGY_T *strategy = make_reconnection_strategy_user_function(
        recording_strategy, &s, recording_success, recording_failure);
    reconnection_strategy_set_timeout(strategy, 60000);
    SESSION_T *session = open_session(&r, strategy);
    free_reconnection_strategy(strategy);
    REQUIRE(session != NULL);
    REQUIRE(wait_changes(&r, 1));
    REQUIRE(proxy_refuse());
    REQUIRE(proxy_cut());
    REQUIRE(wait_strategy(&s, 0, 3)); /* three refused attempts, each reported */
    CHECK(session_is_recovering(session));
    REQUIRE(proxy_heal());
    REQUIRE(wait_strategy(&s, 1, 3));
    REQUIRE(wait_changes(&r, 3));
    CHECK(change_is(&r, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
    CHECK(change_is(&r, 2, RECOVERING_RECONNECT, CONNECTED_ACTIVE));
    pthread_mutex_lock(&s.mu);
    /* Every attempt the strategy started either failed or was the successful one. */
    CHECK(s.successes == 1);
    CHECK(s.calls == s.failures + 1);
    /* Attempt n is number n; from the second on, the reason is the refusal of the previous. */
    for (int i = 0; i < s.calls && i < MAX_CALLS; i++) {
        CHECK(s.info_ok[i] && s.info[i].number == (uint32_t)(i + 1));
        CHECK(s.info[i].retry_after_ms == RECONNECTION_NO_RETRY_AFTER);
        if (i > 0) {
            CHECK(s.info[i].last_reason != NULL && !str_eq(s.info[i].last_reason, "server_draining"));
            CHECK(s.info[i].elapsed_ms >= s.info[i - 1].elapsed_ms);
        }
    }
    CHECK(s.success_info_ok && s.success_info.number == (uint32_t)s.calls);
    pthread_mutex_unlock(&s.mu);
    CHECK(session_close(session, NULL));
done:
    proxy_heal();
    session_free(session);
    strategy_args_destroy(&s);
    recorder_destroy(&r);
}

static void test_timeout_closes_failed(void) {
    recorder_t r;
    strategy_args_t s;
    recorder_init(&r);
    strategy_args_init(&s, 50, RECONNECTION_ATTEMPT_ACTION_START);
    RECONNECTION_STRATEGY_T *strategy = make_reconnection_strategy_user_function(
        recording_strategy, &s, recording_success, recording_failure);
    reconnection_strategy_set_timeout(strategy, 1000);
    SESSION_T *session = open_session(&r, strategy);
    free_reconnection_strategy(strategy);
    REQUIRE(session != NULL);
    REQUIRE(wait_changes(&r, 1));
    REQUIRE(proxy_refuse()); /* every attempt fails until the timeout elapses */
    REQUIRE(proxy_cut());
    REQUIRE(wait_changes(&r, 3));
    CHECK(change_is(&r, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
    CHECK(change_is(&r, 2, RECOVERING_RECONNECT, CLOSED_FAILED));
    CHECK(str_eq(session_close_reason(session), "reconnect_timeout"));
    pthread_mutex_lock(&s.mu);
    CHECK(s.calls >= 1);
    CHECK(s.successes == 0);
    pthread_mutex_unlock(&s.mu);
done:
    proxy_heal();
    session_free(session);
    strategy_args_destroy(&s);
    recorder_destroy(&r);
}

static void test_built_in_strategies(void) {
    RECONNECTION_STRATEGY_T *strategies[3] = {
        make_reconnection_strategy_repeating_attempt(5, 10),
        make_reconnection_strategy_exponential_backoff(10, 2.0, 100, RECONNECTION_JITTER_FULL, 0),
        make_reconnection_strategy_default(),
    };
    reconnection_strategy_set_timeout(strategies[2], 30000);
    for (int i = 0; i < 3; i++) {
        recorder_t r;
        recorder_init(&r);
        CHECK(strategies[i] != NULL);
        SESSION_T *session = open_session(&r, strategies[i]);
        CHECK(session != NULL);
        if (session != NULL && wait_changes(&r, 1) && proxy_cut() && wait_changes(&r, 3)) {
            CHECK(change_is(&r, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
            CHECK(change_is(&r, 2, RECOVERING_RECONNECT, CONNECTED_ACTIVE));
            /* The facts the built-in strategy was given are recorded too. */
            RECONNECTION_ATTEMPT_INFO_T info;
            CHECK(session_reconnection_attempt_get(session, &info));
            CHECK(info.number == 1 && info.last_reason != NULL);
            CHECK(info.retry_after_ms == RECONNECTION_NO_RETRY_AFTER);
        } else {
            CHECK(!"the session resumed with a built-in strategy");
        }
        session_free(session); /* closes it */
        CHECK(changes(&r) == 4);
        recorder_destroy(&r);
        free_reconnection_strategy(strategies[i]);
    }

    /* A repeating strategy gives up after its count of failed attempts. */
    recorder_t r;
    recorder_init(&r);
    RECONNECTION_STRATEGY_T *twice = make_reconnection_strategy_repeating_attempt(2, 10);
    SESSION_T *session = open_session(&r, twice);
    free_reconnection_strategy(twice);
    REQUIRE(session != NULL);
    REQUIRE(wait_changes(&r, 1));
    REQUIRE(proxy_refuse());
    REQUIRE(proxy_cut());
    REQUIRE(wait_changes(&r, 3));
    CHECK(change_is(&r, 2, RECOVERING_RECONNECT, CLOSED_FAILED));
    CHECK(str_eq(session_close_reason(session), "reconnect_aborted"));
done:
    proxy_heal();
    session_free(session);
    recorder_destroy(&r);
}

/* Subscription records: every value received, in order. */
#define MAX_VALUES 512

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
    int values[MAX_VALUES];
    int bad; /* a value that was not a number, or a wrong topic */
    const char *topic;
    int want;
} received_t;

static void received_init(received_t *v, const char *topic) {
    memset(v, 0, sizeof *v);
    pthread_mutex_init(&v->mu, NULL);
    pthread_cond_init(&v->cv, NULL);
    v->topic = topic;
}

static void received_destroy(received_t *v) {
    pthread_mutex_destroy(&v->mu);
    pthread_cond_destroy(&v->cv);
}

static void on_update(const char *topic, const void *value, size_t length, void *context) {
    received_t *v = context;
    char text[32];
    int parsed = -1;
    if (length < sizeof text) {
        memcpy(text, value, length);
        text[length] = '\0';
        parsed = atoi(text);
    }
    pthread_mutex_lock(&v->mu);
    if (strcmp(topic, v->topic) != 0 || parsed < 0) {
        v->bad = 1;
    } else if (v->count < MAX_VALUES) {
        v->values[v->count++] = parsed;
    }
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->mu);
}

static int received_enough(void *arg) {
    received_t *v = arg;
    return v->count >= v->want;
}

static int wait_received(received_t *v, int n) {
    pthread_mutex_lock(&v->mu);
    v->want = n;
    int ok = wait_locked(&v->mu, &v->cv, received_enough, v);
    pthread_mutex_unlock(&v->mu);
    return ok;
}

static int received_count(received_t *v) {
    pthread_mutex_lock(&v->mu);
    int n = v->count;
    pthread_mutex_unlock(&v->mu);
    return n;
}

#define PUBLISHED 200

typedef struct {
    SESSION_T *session;
    const char *topic;
    int failures;
} publisher_t;

static void *publish_all(void *arg) {
    publisher_t *p = arg;
    for (int i = 1; i <= PUBLISHED; i++) {
        char value[16];
        int n = snprintf(value, sizeof value, "%d", i);
        TETHER_ERROR_T error = { 0 };
        if (!session_publish(p->session, p->topic, value, (size_t)n, &error)) {
            printf("    publish %d failed: %d %s\n", i, error.code, error.message ? error.message : "");
            tether_error_free(&error);
            p->failures++;
        }
    }
    return NULL;
}

static void test_subscribe_publish_across_a_cut(void) {
    recorder_t rp, rs;
    received_t got, sentinel;
    recorder_init(&rp);
    recorder_init(&rs);
    received_init(&got, "c/stream/values");
    received_init(&sentinel, "c/sentinel");
    TETHER_ERROR_T error = { 0 };
    int started = 0;
    pthread_t thread;
    SESSION_T *subscriber = open_session(&rs, NULL); /* NULL: the default strategy */
    SESSION_T *publisher = open_session(&rp, NULL);
    REQUIRE(subscriber != NULL && publisher != NULL);
    REQUIRE(session_subscribe(subscriber, "c/stream/*", on_update, &got, &error));
    REQUIRE(session_subscribe(subscriber, "c/sentinel", on_update, &sentinel, &error));

    publisher_t p = { publisher, "c/stream/values", 0 };
    REQUIRE(pthread_create(&thread, NULL, publish_all, &p) == 0);
    started = 1;
    REQUIRE(wait_received(&got, PUBLISHED / 4));
    REQUIRE(proxy_cut()); /* both sessions lose their connection mid-stream */
    REQUIRE(wait_received(&got, PUBLISHED));
    pthread_join(thread, NULL);
    started = 0;
    CHECK(p.failures == 0);
    REQUIRE(wait_changes(&rs, 3));
    CHECK(change_is(&rs, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
    CHECK(change_is(&rs, 2, RECOVERING_RECONNECT, CONNECTED_ACTIVE));

    /* Nothing lost, nothing twice, in order. */
    pthread_mutex_lock(&got.mu);
    CHECK(got.count == PUBLISHED);
    CHECK(!got.bad);
    int in_order = 1;
    for (int i = 0; i < got.count; i++) {
        if (got.values[i] != i + 1) {
            in_order = 0;
        }
    }
    CHECK(in_order);
    pthread_mutex_unlock(&got.mu);

    /* After unsubscribe the handler is not called again: the update published before the
     * sentinel would reach the callback thread before the sentinel's does. */
    REQUIRE(session_unsubscribe(subscriber, "c/stream/*", &error));
    CHECK(session_publish(publisher, "c/stream/values", "999", 3, &error));
    CHECK(session_publish(publisher, "c/sentinel", "1", 1, &error));
    REQUIRE(wait_received(&sentinel, 1));
    CHECK(received_count(&got) == PUBLISHED);
    CHECK(!sentinel.bad);

done:
    if (started) {
        pthread_join(thread, NULL);
    }
    tether_error_free(&error);
    session_free(publisher);
    session_free(subscriber);
    received_destroy(&got);
    received_destroy(&sentinel);
    recorder_destroy(&rp);
    recorder_destroy(&rs);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t length;
    unsigned char bytes[16];
    int calls;
} binary_t;

static void on_binary(const char *topic, const void *value, size_t length, void *context) {
    binary_t *b = context;
    (void)topic;
    pthread_mutex_lock(&b->mu);
    b->length = length;
    if (length <= sizeof b->bytes) {
        memcpy(b->bytes, value, length);
    }
    b->calls++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static int binary_called(void *arg) {
    return ((binary_t *)arg)->calls >= 1;
}

static void test_binary_values(void) {
    recorder_t r;
    binary_t b;
    recorder_init(&r);
    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    TETHER_ERROR_T error = { 0 };
    const unsigned char value[5] = { 'a', 0, 'b', 0, 0xff };
    SESSION_T *session = open_session(&r, NULL);
    REQUIRE(session != NULL);
    REQUIRE(session_subscribe(session, "c/binary", on_binary, &b, &error));
    REQUIRE(session_publish(session, "c/binary", value, sizeof value, &error));
    pthread_mutex_lock(&b.mu);
    CHECK(wait_locked(&b.mu, &b.cv, binary_called, &b));
    CHECK(b.length == sizeof value && memcmp(b.bytes, value, sizeof value) == 0);
    pthread_mutex_unlock(&b.mu);
    /* An empty value: NULL with length 0 is allowed. */
    CHECK(session_publish(session, "c/empty", NULL, 0, &error));
done:
    tether_error_free(&error);
    session_free(session);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
    recorder_destroy(&r);
}

static void test_invalid_arguments(void) {
    TETHER_ERROR_T error = { 0 };
    recorder_t r;
    recorder_init(&r);
    SESSION_LISTENER_T listener = { on_state_changed, &r };
    CREDENTIALS_T *good = credentials_create_password("password");
    CREDENTIALS_T *wrong = credentials_create_password("not the password");
    const char bad_utf8[] = { 'w', 's', (char)0xff, (char)0xfe, 0 };

    CHECK(session_create(NULL, "control", good, &listener, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "url"));
    CHECK(session_create(bad_utf8, "control", good, &listener, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_INVALID_UTF8, "url"));
    CHECK(session_create(g_url, bad_utf8, good, &listener, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_INVALID_UTF8, "principal"));
    CHECK(session_create("http://127.0.0.1:1", "control", good, &listener, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_INVALID_URL, NULL));
    CHECK(session_create(g_url, NULL, good, &listener, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_INVALID_ARGUMENT, "principal"));
    CHECK(session_create(g_url, "control", wrong, &listener, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_AUTHENTICATION_FAILED, "authentication_failed"));
    CHECK(session_create("ws://127.0.0.1:1", "control", good, &listener, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_CONNECTION_FAILED, NULL));
    /* A NULL error pointer is allowed: the failure is only in the return value. */
    CHECK(session_create(NULL, NULL, NULL, NULL, NULL, NULL) == NULL);
    /* A failed session_create makes no callback. */
    CHECK(changes(&r) == 0);

    CHECK(credentials_create_password(NULL) == NULL);
    CHECK(credentials_create_password(bad_utf8) == NULL);
    CHECK(make_reconnection_strategy_user_function(NULL, NULL, NULL, NULL) == NULL);
    CHECK(make_reconnection_strategy_exponential_backoff(10, 0.5, 100, RECONNECTION_JITTER_NONE, 0) == NULL);
    CHECK(make_reconnection_strategy_exponential_backoff(10, 2.0, 100, 42, 0) == NULL);

    CHECK(!session_close(NULL, &error));
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "session"));
    CHECK(session_state_get(NULL) == SESSION_STATE_UNKNOWN);
    CHECK(str_eq(session_state_as_string(42), "UNKNOWN"));
    CHECK(str_eq(session_state_as_string(SESSION_STATE_UNKNOWN), "UNKNOWN"));
    CHECK(str_eq(session_state_as_string(CLOSED_FAILED), "CLOSED_FAILED"));
    CHECK(!session_is_connected(NULL) && !session_is_recovering(NULL) && !session_is_closed(NULL));
    CHECK(session_close_reason(NULL) == NULL);
    RECONNECTION_ATTEMPT_INFO_T info;
    CHECK(!session_reconnection_attempt_get(NULL, &info));
    CHECK(session_id_get(NULL) == NULL);
    CHECK(session_id_to_string(NULL) == NULL);
    CHECK(session_listener_context(NULL) == NULL);
    CHECK(!session_subscribe(NULL, "a", on_update, NULL, &error));
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "session"));
    CHECK(!session_publish(NULL, "a", "x", 1, &error));
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "session"));
    session_free(NULL);
    credentials_free(NULL);
    free_reconnection_strategy(NULL);
    reconnection_strategy_set_timeout(NULL, 10);
    tether_error_free(NULL);
    tether_string_free(NULL);

    SESSION_T *session = session_create(g_url, "control", good, &listener, NULL, &error);
    REQUIRE(session != NULL);
    CHECK(!session_subscribe(session, NULL, on_update, NULL, &error));
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "selector"));
    CHECK(!session_subscribe(session, "a/b", NULL, NULL, &error));
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "handler"));
    CHECK(!session_subscribe(session, bad_utf8, on_update, NULL, &error));
    CHECK(error_is(&error, TETHER_ERROR_INVALID_UTF8, "selector"));
    CHECK(!session_subscribe(session, "a//b", on_update, NULL, &error));
    CHECK(error_is(&error, TETHER_ERROR_INVALID_TOPIC, NULL));
    CHECK(!session_unsubscribe(session, NULL, &error));
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "selector"));
    CHECK(!session_publish(session, NULL, "x", 1, &error));
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "topic"));
    CHECK(!session_publish(session, "a/b", NULL, 5, &error));
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "value"));
    CHECK(!session_publish(session, "a/*", "x", 1, &error));
    CHECK(error_is(&error, TETHER_ERROR_INVALID_TOPIC, NULL));
    CHECK(!session_publish(session, bad_utf8, "x", 1, &error));
    CHECK(error_is(&error, TETHER_ERROR_INVALID_UTF8, "topic"));
    CHECK(!session_reconnection_attempt_get(session, NULL));
    /* The session is still fine after all that. */
    CHECK(session_is_connected(session));
    CHECK(session_publish(session, "a/b", "x", 1, &error));
    CHECK(error.code == TETHER_ERROR_NONE);
    CHECK(session_close(session, &error));
done:
    tether_error_free(&error);
    session_free(session);
    credentials_free(good);
    credentials_free(wrong);
    recorder_destroy(&r);
}

/* Opens a session with several URLs, as control/password. */
static SESSION_T *open_with_urls(recorder_t *r, const char *const *urls, size_t count,
                                 const RECONNECTION_STRATEGY_T *strategy, TETHER_ERROR_T *error) {
    CREDENTIALS_T *credentials = credentials_create_password("password");
    SESSION_LISTENER_T listener = { on_state_changed, r };
    SESSION_T *session = session_create_with_urls(urls, count, "control", credentials, &listener, strategy, error);
    credentials_free(credentials);
    return session;
}

/* session_create_with_urls: opening uses the first URL that answers; a reconnection attempt
 * goes back to the URL the session was on, then tries the next. */
static void test_fallback_urls(void) {
    recorder_t ro, r;
    strategy_args_t s;
    recorder_init(&ro);
    recorder_init(&r);
    strategy_args_init(&s, 20, RECONNECTION_ATTEMPT_ACTION_START);
    TETHER_ERROR_T error = { 0 };
    SESSION_T *opened = NULL, *session = NULL;
    char *before = NULL, *after = NULL;
    const char *server = getenv("TETHER_SERVER_URL");
    REQUIRE(server != NULL);

    /* Nothing listens on the first URL: the session opens on the second. */
    const char *dead_first[2] = { "ws://127.0.0.1:1", g_url };
    opened = open_with_urls(&ro, dead_first, 2, NULL, &error);
    if (opened == NULL) {
        printf("    session_create_with_urls failed: %d %s\n", error.code, error.message ? error.message : "");
        tether_error_free(&error);
    }
    REQUIRE(opened != NULL);
    CHECK(session_is_connected(opened));
    CHECK(session_close(opened, &error));

    /* On the proxy first; the proxy stops answering; the session resumes on the server. */
    RECONNECTION_STRATEGY_T *strategy = make_reconnection_strategy_user_function(
        recording_strategy, &s, recording_success, recording_failure);
    reconnection_strategy_set_timeout(strategy, 30000);
    const char *urls[2] = { g_url, server };
    session = open_with_urls(&r, urls, 2, strategy, &error);
    free_reconnection_strategy(strategy);
    REQUIRE(session != NULL);
    REQUIRE(wait_changes(&r, 1));
    before = id_of(session);
    REQUIRE(proxy_refuse());
    REQUIRE(proxy_cut());
    REQUIRE(wait_changes(&r, 3));
    CHECK(change_is(&r, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
    CHECK(change_is(&r, 2, RECOVERING_RECONNECT, CONNECTED_ACTIVE));
    /* The proxy still refuses: only the second URL can have taken the resume. */
    after = id_of(session);
    CHECK(str_eq(before, after));
    pthread_mutex_lock(&s.mu);
    CHECK(s.calls == 2 && s.failures == 1 && s.successes == 1);
    CHECK(s.info_ok[1] && s.info[1].number == 2);
    pthread_mutex_unlock(&s.mu);
    CHECK(session_publish(session, "c/fallback", "1", 1, &error));
    CHECK(session_close(session, &error));

    /* Bad lists. */
    const char *one[1] = { g_url };
    const char *with_null[2] = { g_url, NULL };
    const char *bad_url[2] = { g_url, "http://127.0.0.1:1" };
    CHECK(open_with_urls(&ro, NULL, 1, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "urls"));
    CHECK(open_with_urls(&ro, one, 0, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_INVALID_ARGUMENT, "url_count"));
    CHECK(open_with_urls(&ro, with_null, 2, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_NULL_ARGUMENT, "urls"));
    CHECK(open_with_urls(&ro, bad_url, 2, NULL, &error) == NULL);
    CHECK(error_is(&error, TETHER_ERROR_INVALID_URL, NULL));
done:
    proxy_heal();
    tether_error_free(&error);
    tether_string_free(before);
    tether_string_free(after);
    session_free(opened);
    session_free(session);
    strategy_args_destroy(&s);
    recorder_destroy(&ro);
    recorder_destroy(&r);
}

/* Run only when named, with a harness that drains the server when it reads "drain now" and
 * starts it again on the same address: a user strategy reads reason server_draining and the
 * server's hint, and waits that long; the default strategy was given the same facts; both
 * sessions come back with their ids. */
static void test_drain(void) {
    recorder_t ru, rd;
    strategy_args_t s;
    recorder_init(&ru);
    recorder_init(&rd);
    strategy_args_init(&s, 0, RECONNECTION_ATTEMPT_ACTION_START);
    s.honour_hint = 1;
    SESSION_T *user = NULL, *dflt = NULL;
    char *user_before = NULL, *user_after = NULL, *dflt_before = NULL, *dflt_after = NULL;
    TETHER_ERROR_T error = { 0 };
    const char *hint_text = getenv("TETHER_RETRY_AFTER_MS");
    REQUIRE(hint_text != NULL);
    long hint = atol(hint_text);
    REQUIRE(hint > 0);

    RECONNECTION_STRATEGY_T *strategy = make_reconnection_strategy_user_function(
        recording_strategy, &s, recording_success, recording_failure);
    reconnection_strategy_set_timeout(strategy, 60000);
    user = open_session(&ru, strategy);
    free_reconnection_strategy(strategy);
    dflt = open_session(&rd, NULL);
    REQUIRE(user != NULL && dflt != NULL);
    REQUIRE(wait_changes(&ru, 1) && wait_changes(&rd, 1));
    user_before = id_of(user);
    dflt_before = id_of(dflt);

    printf("drain now\n");
    /* Sent away, recovering (never CLOSED_BY_SERVER), and back once the server is. */
    REQUIRE(wait_changes(&ru, 3));
    REQUIRE(wait_changes(&rd, 3));
    CHECK(change_is(&ru, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
    CHECK(change_is(&ru, 2, RECOVERING_RECONNECT, CONNECTED_ACTIVE));
    CHECK(change_is(&rd, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
    CHECK(change_is(&rd, 2, RECOVERING_RECONNECT, CONNECTED_ACTIVE));

    pthread_mutex_lock(&s.mu);
    CHECK(s.calls >= 1 && s.info_ok[0]);
    CHECK(s.info[0].number == 1);
    CHECK(str_eq(s.info[0].last_reason, "server_draining"));
    CHECK(s.info[0].retry_after_ms == hint);
    if (!str_eq(s.info[0].last_reason, "server_draining") || s.info[0].retry_after_ms != hint) {
        printf("    the user strategy read %s, retry after %lld ms\n",
               s.info[0].last_reason ? s.info[0].last_reason : "(null)", (long long)s.info[0].retry_after_ms);
    }
    pthread_mutex_unlock(&s.mu);

    /* The default strategy was handed the same facts (it waits at least the hint, so its first
     * attempt came after the restart the harness makes at once). */
    RECONNECTION_ATTEMPT_INFO_T info;
    memset(&info, 0, sizeof info);
    CHECK(session_reconnection_attempt_get(dflt, &info));
    CHECK(info.number == 1);
    CHECK(str_eq(info.last_reason, "server_draining"));
    CHECK(info.retry_after_ms == hint);

    user_after = id_of(user);
    dflt_after = id_of(dflt);
    CHECK(str_eq(user_before, user_after));
    CHECK(str_eq(dflt_before, dflt_after));
    CHECK(session_publish(user, "c/drain", "1", 1, &error));
    CHECK(session_publish(dflt, "c/drain", "2", 1, &error));
    CHECK(session_close(user, &error));
    CHECK(session_close(dflt, &error));
done:
    tether_error_free(&error);
    tether_string_free(user_before);
    tether_string_free(user_after);
    tether_string_free(dflt_before);
    tether_string_free(dflt_after);
    session_free(user);
    session_free(dflt);
    strategy_args_destroy(&s);
    recorder_destroy(&ru);
    recorder_destroy(&rd);
}

static void test_access_denied(void) {
    TETHER_ERROR_T error = { 0 };
    CREDENTIALS_T *credentials = credentials_create_password("secret");
    SESSION_T *session = session_create(g_url, "reader", credentials, NULL, NULL, &error);
    credentials_free(credentials);
    REQUIRE(session != NULL);
    CHECK(!session_subscribe(session, "private/x", on_update, NULL, &error));
    CHECK(error_is(&error, TETHER_ERROR_ACCESS_DENIED, NULL));
    CHECK(!session_publish(session, "private/x", "x", 1, &error));
    CHECK(error_is(&error, TETHER_ERROR_ACCESS_DENIED, NULL));
    CHECK(session_is_connected(session)); /* a refusal leaves the session open */
done:
    tether_error_free(&error);
    session_free(session);
}

/* Run inside the listener: close the session from its own callback. */
static int close_from_callback(SESSION_T *session) {
    TETHER_ERROR_T error = { 0 };
    int ok = session_close(session, &error);
    tether_error_free(&error);
    return ok;
}

static void test_close_from_a_callback(void) {
    recorder_t r;
    recorder_init(&r);
    r.act_on = RECOVERING_RECONNECT;
    r.action = close_from_callback;
    RECONNECTION_STRATEGY_T *strategy = make_reconnection_strategy_repeating_attempt(0, 60000);
    SESSION_T *session = open_session(&r, strategy);
    free_reconnection_strategy(strategy);
    REQUIRE(session != NULL);
    REQUIRE(wait_changes(&r, 1));
    REQUIRE(proxy_cut());
    REQUIRE(wait_changes(&r, 3));
    CHECK(change_is(&r, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
    CHECK(change_is(&r, 2, RECOVERING_RECONNECT, CLOSED_BY_CLIENT));
    pthread_mutex_lock(&r.mu);
    CHECK(r.action_result == 1);
    pthread_mutex_unlock(&r.mu);
done:
    session_free(session);
    recorder_destroy(&r);
}

/* Run inside the listener: free the session from its own callback. */
static int free_from_callback(SESSION_T *session) {
    session_free(session);
    return 1;
}

static int action_done(void *arg) {
    return ((recorder_t *)arg)->action_result != 0;
}

static void test_free_from_a_callback(void) {
    recorder_t r;
    recorder_init(&r);
    r.act_on = RECOVERING_RECONNECT;
    r.action = free_from_callback;
    RECONNECTION_STRATEGY_T *strategy = make_reconnection_strategy_repeating_attempt(0, 60000);
    SESSION_T *session = open_session(&r, strategy);
    free_reconnection_strategy(strategy);
    REQUIRE(session != NULL);
    REQUIRE(wait_changes(&r, 1));
    REQUIRE(proxy_cut());
    pthread_mutex_lock(&r.mu);
    int freed = wait_locked(&r.mu, &r.cv, action_done, &r);
    pthread_mutex_unlock(&r.mu);
    REQUIRE(freed);
    session = NULL; /* freed by the callback */
    /* Stopping the runtime joins the callback threads: every callback that will ever run has
     * run. The session was closed by session_free, but a freed session calls back no more. */
    CHECK(tether_shutdown(10000, NULL));
    CHECK(changes(&r) == 2);
    CHECK(change_is(&r, 1, CONNECTED_ACTIVE, RECOVERING_RECONNECT));
done:
    session_free(session);
    recorder_destroy(&r);
}

/* What a topic handler saw when it called tether_shutdown. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    SESSION_T *sessions[2]; /* every open session */
    int calls;
    int done;           /* the first call returned from tether_shutdown */
    int returned;       /* tether_shutdown's result */
    int code;           /* and its error code */
    int closed_in_call; /* every session was closed when it returned */
} shutdown_in_handler_t;

static void shutdown_in_handler(const char *topic, const void *value, size_t length, void *context) {
    shutdown_in_handler_t *s = context;
    (void)topic;
    (void)value;
    (void)length;
    pthread_mutex_lock(&s->mu);
    int first = s->calls++ == 0;
    pthread_mutex_unlock(&s->mu);
    if (!first) {
        return;
    }
    /* A handler that ends the program, say: it shuts the library down from its own thread. */
    TETHER_ERROR_T error = { 0 };
    int returned = tether_shutdown(10000, &error);
    int code = error.code;
    tether_error_free(&error);
    int closed = session_is_closed(s->sessions[0]) && session_is_closed(s->sessions[1]);
    pthread_mutex_lock(&s->mu);
    s->returned = returned;
    s->code = code;
    s->closed_in_call = closed;
    s->done = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int handler_called(void *arg) {
    return ((shutdown_in_handler_t *)arg)->done;
}

/* tether_shutdown from a callback proceeds: it closes every session and stops the runtime,
 * then reports (false, TETHER_ERROR_WRONG_THREAD) that it could not join the calling thread.
 * A publish the server applied is not reported failed; a later session_create works. */
static void test_shutdown_from_a_callback(void) {
    recorder_t rs, rp, rn;
    recorder_init(&rs);
    recorder_init(&rp);
    recorder_init(&rn);
    shutdown_in_handler_t s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    TETHER_ERROR_T error = { 0 };
    SESSION_T *fresh = NULL;
    /* Topics of this process: a topic's current value is delivered on subscribing. */
    char topic[64], after[64];
    snprintf(topic, sizeof topic, "c/shutdown-in-handler/%ld", (long)getpid());
    snprintf(after, sizeof after, "c/after-shutdown-in-handler/%ld", (long)getpid());
    received_t got;
    received_init(&got, after);
    SESSION_T *subscriber = open_session(&rs, NULL);
    SESSION_T *publisher = open_session(&rp, NULL);
    REQUIRE(subscriber != NULL && publisher != NULL);
    s.sessions[0] = subscriber;
    s.sessions[1] = publisher;
    REQUIRE(session_subscribe(subscriber, topic, shutdown_in_handler, &s, &error));
    /* Applied by the server (the handler runs because of it): never reported failed. */
    if (!session_publish(publisher, topic, "1", 1, &error)) {
        printf("    the publish the handler saw failed: %d %s\n", error.code, error.message ? error.message : "");
        CHECK(!"a publish the server applied is reported failed");
    }
    tether_error_free(&error);
    pthread_mutex_lock(&s.mu);
    int called = wait_locked(&s.mu, &s.cv, handler_called, &s);
    int returned = s.returned, code = s.code, closed_in_call = s.closed_in_call;
    pthread_mutex_unlock(&s.mu);
    REQUIRE(called);
    CHECK(!returned);
    CHECK(code == TETHER_ERROR_WRONG_THREAD);
    CHECK(closed_in_call);
    CHECK(session_is_closed(subscriber) && session_is_closed(publisher));
    /* Calls on the old sessions fail at once, without hanging. */
    CHECK(!session_publish(publisher, topic, "2", 1, &error));
    CHECK(error_is(&error, TETHER_ERROR_SESSION_CLOSED, "closed"));
    CHECK(session_close(subscriber, &error));
    session_free(subscriber);
    subscriber = NULL;
    session_free(publisher);
    publisher = NULL;

    /* A fresh runtime for a new session. */
    fresh = open_session(&rn, NULL);
    REQUIRE(fresh != NULL);
    REQUIRE(session_subscribe(fresh, after, on_update, &got, &error));
    REQUIRE(session_publish(fresh, after, "7", 1, &error));
    REQUIRE(wait_received(&got, 1));
    CHECK(got.values[0] == 7);
    CHECK(session_close(fresh, &error));
    CHECK(changes(&rn) == 2);
done:
    tether_error_free(&error);
    session_free(fresh);
    session_free(publisher);
    session_free(subscriber);
    received_destroy(&got);
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.cv);
    recorder_destroy(&rs);
    recorder_destroy(&rp);
    recorder_destroy(&rn);
}

/* Also shows that a session can be created after tether_shutdown (a fresh runtime). */
static void test_shutdown(void) {
    recorder_t r;
    recorder_init(&r);
    TETHER_ERROR_T error = { 0 };
    SESSION_T *session = open_session(&r, NULL);
    REQUIRE(session != NULL);
    REQUIRE(wait_changes(&r, 1));
    CHECK(tether_shutdown(10000, &error));
    CHECK(error.code == TETHER_ERROR_NONE);
    CHECK(session_is_closed(session));
    CHECK(session_close(session, &error)); /* after shutdown: nothing to do, no hang */
    /* A call on a session of the stopped runtime fails at once, and starts no fresh runtime
     * (no new threads; threads of earlier runtimes may still be ending). */
    int threads = thread_count();
    CHECK(!session_publish(session, "c/after-shutdown", "x", 1, &error));
    CHECK(error_is(&error, TETHER_ERROR_SESSION_CLOSED, "closed"));
    CHECK(thread_count() <= threads);
done:
    tether_error_free(&error);
    session_free(session);
    recorder_destroy(&r);
}

/* ---------------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    void (*run)(void);
    int only_when_named; /* needs the harness's help */
} test_t;

static const test_t TESTS[] = {
    { "create_and_close", test_create_and_close, 0 },
    { "strategy_start_reconnects_same_session", test_strategy_start_reconnects_same_session, 0 },
    { "strategy_abort_closes_failed", test_strategy_abort_closes_failed, 0 },
    { "failure_callbacks_while_refused", test_failure_callbacks_while_refused, 0 },
    { "timeout_closes_failed", test_timeout_closes_failed, 0 },
    { "built_in_strategies", test_built_in_strategies, 0 },
    { "subscribe_publish_across_a_cut", test_subscribe_publish_across_a_cut, 0 },
    { "binary_values", test_binary_values, 0 },
    { "invalid_arguments", test_invalid_arguments, 0 },
    { "access_denied", test_access_denied, 0 },
    { "fallback_urls", test_fallback_urls, 0 },
    { "close_from_a_callback", test_close_from_a_callback, 0 },
    { "free_from_a_callback", test_free_from_a_callback, 0 },
    { "shutdown_from_a_callback", test_shutdown_from_a_callback, 0 },
    { "drain", test_drain, 1 },
    /* Last: stops the runtime. */
    { "shutdown", test_shutdown, 0 },
};

static int selected(const test_t *test, int argc, char **argv) {
    const char *name = test->name;
    if (argc <= 3) {
        return !test->only_when_named;
    }
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ws://PROXY CONTROL_HOST:PORT [test ...]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_url = argv[1];
    g_control = argv[2];
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++) {
        if (!selected(&TESTS[i], argc, argv)) {
            continue;
        }
        g_check_failed = 0;
        printf("test %s ...\n", TESTS[i].name);
        TESTS[i].run();
        printf("test %s ... %s\n", TESTS[i].name, g_check_failed ? "FAILED" : "ok");
        if (g_check_failed) {
            failed++;
        } else {
            passed++;
        }
    }
    /* Join the library's threads (a no-op when the shutdown test already did). */
    tether_shutdown(10000, NULL);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
