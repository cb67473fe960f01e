/*
 * One thread, blocking session_publish in a loop: how many publishes per second a plain C
 * program gets (each call returns once the server has applied the publish).
 *
 *   publish_loop <ws://url> [count]     (count: 10000 by default)
 *
 * Prints "<count> publishes in <s> s: <n> publishes/s" and exits 0, or prints the failure and
 * exits 1. tests/c_suite.rs builds it (target/tmp/tether-ffi-c/publish_loop) and runs it
 * against a local server; see crates/tether-ffi/README.md for measuring with it.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "tether.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s ws://HOST:PORT [count]\n", argv[0]);
        return 2;
    }
    long count = argc == 3 ? strtol(argv[2], NULL, 10) : 10000;
    if (count <= 0) {
        fprintf(stderr, "count must be a positive number\n");
        return 2;
    }
    TETHER_ERROR_T error = { 0 };
    CREDENTIALS_T *credentials = credentials_create_password("password");
    SESSION_T *session = session_create(argv[1], "control", credentials, NULL, NULL, &error);
    credentials_free(credentials);
    if (session == NULL) {
        printf("session_create failed: %d %s\n", error.code, error.message ? error.message : "");
        tether_error_free(&error);
        return 1;
    }
    char topic[64];
    snprintf(topic, sizeof topic, "c/publish-loop/%ld", (long)getpid());
    int status = 0;
    double start = now_s();
    for (long i = 1; i <= count; i++) {
        char value[24];
        int n = snprintf(value, sizeof value, "%ld", i);
        if (!session_publish(session, topic, value, (size_t)n, &error)) {
            printf("publish %ld failed: %d %s\n", i, error.code, error.message ? error.message : "");
            tether_error_free(&error);
            status = 1;
            break;
        }
    }
    double elapsed = now_s() - start;
    if (status == 0) {
        printf("%ld publishes in %.3f s: %.0f publishes/s\n", count, elapsed, (double)count / elapsed);
    }
    session_free(session);
    tether_shutdown(5000, NULL);
    return status;
}
