/*
 * Programs that end with work in flight, run as child processes by tests/c_suite.rs (which
 * checks their exit status and output, and the values the server applied).
 *
 *   exit_scenarios <ws://url> <scenario> <topic-prefix>
 *
 * THREADS threads share one session; thread i publishes "1", "2", "3", ... on
 * <topic-prefix>/t<i> with the blocking session_publish, until a call fails. Once they are in
 * full swing (START_AFTER publishes applied), the main thread ends the program:
 *
 *   shutdown_then_return  tether_shutdown, join the threads, session_free, return from main;
 *   exit_without_shutdown exit() at once: no close, no shutdown, no free;
 *   close_in_flight       session_close, join the threads, session_free, tether_shutdown,
 *                         return from main. Every publish queued before the close completes;
 *   exit_from_handler     publish on <topic-prefix>/exit, to which the session subscribed: the
 *                         handler calls tether_shutdown (from the callback thread), then
 *                         exit(3).
 *
 * Output: "thread <i> ok <n> error <code>" per thread (n: publishes reported applied, code: the
 * error of the call that failed, 0 if none), then "main returns" or "exit now". For
 * exit_without_shutdown and exit_from_handler the counts are a snapshot taken just before
 * exit(): the threads go on.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tether.h"

#define THREADS 8
#define START_AFTER 200
/* A bound, so that a library that never fails a call after close cannot loop forever. */
#define MAX_PER_THREAD 1000000
#define WAIT_BOUND_S 60
/* The exit status of exit_from_handler: shows the process ended through the handler. */
#define HANDLER_EXIT_STATUS 3

typedef struct {
    SESSION_T *session;
    char topic[128];
    int ok;   /* publishes reported applied */
    int code; /* the error of the call that failed (0: none yet) */
} publisher_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_applied;
static publisher_t g_publishers[THREADS];

static void *publish_loop(void *arg) {
    publisher_t *p = arg;
    for (int i = 1; i <= MAX_PER_THREAD; i++) {
        char value[16];
        int n = snprintf(value, sizeof value, "%d", i);
        TETHER_ERROR_T error = { 0 };
        int ok = session_publish(p->session, p->topic, value, (size_t)n, &error);
        pthread_mutex_lock(&g_mu);
        if (ok) {
            p->ok = i;
            g_applied++;
            pthread_cond_broadcast(&g_cv);
        } else {
            p->code = error.code;
        }
        pthread_mutex_unlock(&g_mu);
        if (!ok) {
            tether_error_free(&error);
            break;
        }
    }
    return NULL;
}

static int in_full_swing(void) { return g_applied >= START_AFTER; }

/* Waits (bounded) until pred() holds; 0 if the bound elapsed first. */
static int wait_for(int (*pred)(void)) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_BOUND_S;
    int ok = 1;
    pthread_mutex_lock(&g_mu);
    while (!pred()) {
        if (pthread_cond_timedwait(&g_cv, &g_mu, &deadline) == ETIMEDOUT) {
            ok = pred();
            break;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return ok;
}

static void print_results(void) {
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < THREADS; i++) {
        printf("thread %d ok %d error %d\n", i, g_publishers[i].ok, g_publishers[i].code);
    }
    pthread_mutex_unlock(&g_mu);
}

static int g_handler_called;

static int handler_called(void) { return g_handler_called; }

/* exit_from_handler: the handler of <topic-prefix>/exit ends the program. */
static void exit_in_handler(const char *topic, const void *value, size_t length, void *context) {
    (void)topic;
    (void)value;
    (void)length;
    (void)context;
    pthread_mutex_lock(&g_mu);
    g_handler_called = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    TETHER_ERROR_T error = { 0 };
    int stopped = tether_shutdown(5000, &error);
    printf("tether_shutdown in the handler returned %d (error %d %s)\n", stopped, error.code,
           error.message ? error.message : "");
    tether_error_free(&error);
    print_results();
    printf("exit now\n");
    exit(HANDLER_EXIT_STATUS);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s ws://HOST:PORT SCENARIO TOPIC-PREFIX\n", argv[0]);
        return 2;
    }
    const char *url = argv[1], *scenario = argv[2], *prefix = argv[3];
    int shutdown_then_return = strcmp(scenario, "shutdown_then_return") == 0;
    int exit_without_shutdown = strcmp(scenario, "exit_without_shutdown") == 0;
    int close_in_flight = strcmp(scenario, "close_in_flight") == 0;
    int exit_from_handler = strcmp(scenario, "exit_from_handler") == 0;
    if (!shutdown_then_return && !exit_without_shutdown && !close_in_flight && !exit_from_handler) {
        fprintf(stderr, "unknown scenario %s\n", scenario);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    TETHER_ERROR_T error = { 0 };
    CREDENTIALS_T *credentials = credentials_create_password("password");
    SESSION_T *session = session_create(url, "control", credentials, NULL, NULL, &error);
    credentials_free(credentials);
    if (session == NULL) {
        printf("session_create failed: %d %s\n", error.code, error.message ? error.message : "");
        tether_error_free(&error);
        return 1;
    }
    char exit_topic[160];
    snprintf(exit_topic, sizeof exit_topic, "%s/exit", prefix);
    if (exit_from_handler && !session_subscribe(session, exit_topic, exit_in_handler, NULL, &error)) {
        printf("session_subscribe failed: %d %s\n", error.code, error.message ? error.message : "");
        tether_error_free(&error);
        return 1;
    }
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        g_publishers[i].session = session;
        snprintf(g_publishers[i].topic, sizeof g_publishers[i].topic, "%s/t%d", prefix, i);
        if (pthread_create(&threads[i], NULL, publish_loop, &g_publishers[i]) != 0) {
            printf("pthread_create failed\n");
            return 1;
        }
    }
    if (!wait_for(in_full_swing)) {
        printf("fewer than %d publishes applied within %d s\n", START_AFTER, WAIT_BOUND_S);
        print_results();
        return 1;
    }

    if (exit_without_shutdown) {
        print_results();
        printf("exit now\n");
        exit(EXIT_SUCCESS);
    }
    if (exit_from_handler) {
        /* The handler exits the process; this thread only waits (bounded) for that. */
        int published = session_publish(session, exit_topic, "exit", 4, &error);
        tether_error_free(&error);
        if (published && wait_for(handler_called)) {
            for (;;) {
                pause();
            }
        }
        printf("the handler was not called (publish %s)\n", published ? "applied" : "failed");
        return 1;
    }
    int status = EXIT_SUCCESS;
    if (shutdown_then_return) {
        int stopped = tether_shutdown(10000, &error);
        printf("tether_shutdown returned %d (error %d %s)\n", stopped, error.code,
               error.message ? error.message : "");
        tether_error_free(&error);
    } else {
        int closed = session_close(session, &error);
        printf("session_close returned %d (error %d %s)\n", closed, error.code,
               error.message ? error.message : "");
        tether_error_free(&error);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
    }
    print_results();
    session_free(session);
    if (close_in_flight && !tether_shutdown(10000, NULL)) {
        printf("tether_shutdown failed\n");
        status = EXIT_FAILURE;
    }
    printf("main returns\n");
    return status;
}
