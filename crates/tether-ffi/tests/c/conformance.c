/*
 * The C runner of the conformance scenarios (conformance/scenarios.txt): every scenario
 * against the real server behind the fault proxy, both given by the fixture over HTTP, through
 * tether.h. A scenario whose step the C API cannot do yet is reported as "unsupported" with
 * the reason (counted as skipped), never as passed.
 *
 *   conformance <scenarios.txt> <fixture host:port> <results file> [scenario name]
 *   conformance --child <url>      (the exit_child program)
 *
 * Closes with "N passed, N failed, N skipped". Waits are on a condition variable signalled by
 * the callbacks, bounded by GUARD_MS only so that a failing scenario fails instead of hanging.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tether.h"

#define GUARD_MS 20000
#define MAX_SCENARIOS 64
#define MAX_STEPS 64
#define MAX_ARGS 16
#define MAX_TOPICS 16
#define MAX_CHANGES 256
#define MAX_ATTEMPTS 64
#define TEXT 256

/* ---------------------------------------------------------------------------------------- */
/* The scenario file                                                                         */

typedef struct {
    char key[32];
    char value[96];
} arg_t;

typedef struct {
    char verb[32];
    arg_t args[MAX_ARGS];
    int nargs;
    int line;
} step_t;

typedef struct {
    char name[64];
    step_t steps[MAX_STEPS];
    int nsteps;
} scenario_t;

static scenario_t g_scenarios[MAX_SCENARIOS];
static int g_nscenarios;

static const char *arg(const step_t *s, const char *key) {
    for (int i = 0; i < s->nargs; i++) {
        if (strcmp(s->args[i].key, key) == 0) return s->args[i].value;
    }
    return NULL;
}

static const char *arg_or(const step_t *s, const char *key, const char *fallback) {
    const char *v = arg(s, key);
    return v ? v : fallback;
}

static long num_or(const step_t *s, const char *key, long fallback) {
    const char *v = arg(s, key);
    return v ? strtol(v, NULL, 10) : fallback;
}

static int load(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[1024];
    int number = 0;
    while (fgets(line, sizeof line, f)) {
        number++;
        char *save = NULL;
        char *word = strtok_r(line, " \t\r\n", &save);
        if (!word || word[0] == '#') continue;
        if (strcmp(word, "scenario") == 0) {
            if (g_nscenarios == MAX_SCENARIOS) break;
            scenario_t *sc = &g_scenarios[g_nscenarios++];
            snprintf(sc->name, sizeof sc->name, "%s", strtok_r(NULL, " \t\r\n", &save));
            continue;
        }
        if (strcmp(word, "about") == 0 || g_nscenarios == 0) continue;
        scenario_t *sc = &g_scenarios[g_nscenarios - 1];
        if (sc->nsteps == MAX_STEPS) continue;
        step_t *st = &sc->steps[sc->nsteps++];
        snprintf(st->verb, sizeof st->verb, "%s", word);
        st->line = number;
        while ((word = strtok_r(NULL, " \t\r\n", &save)) && st->nargs < MAX_ARGS) {
            char *eq = strchr(word, '=');
            if (!eq) continue;
            *eq = '\0';
            snprintf(st->args[st->nargs].key, sizeof st->args[0].key, "%s", word);
            snprintf(st->args[st->nargs].value, sizeof st->args[0].value, "%s", eq + 1);
            st->nargs++;
        }
    }
    fclose(f);
    return g_nscenarios > 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Outcomes                                                                                  */

enum { PASS, FAIL, UNSUPPORTED };
static int g_outcome;
static char g_detail[1024];

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_detail, sizeof g_detail, fmt, ap);
    va_end(ap);
    g_outcome = FAIL;
    return 0;
}

/* For a step the C API cannot do (none at the moment). */
__attribute__((unused)) static int unsupported(const char *why) {
    snprintf(g_detail, sizeof g_detail, "%s", why);
    g_outcome = UNSUPPORTED;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The fixture's HTTP API                                                                    */

static const char *g_control;

/* GET /path; fills `body` with the answer ("ok ..." or "error ..."); 0 on a transport error. */
static int http_get(const char *path, char *body, size_t size) {
    char host[64];
    snprintf(host, sizeof host, "%s", g_control);
    char *colon = strrchr(host, ':');
    if (!colon) return 0;
    *colon = '\0';
    struct sockaddr_in addr = { 0 };
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) return 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return 0;
    }
    char request[512];
    int n = snprintf(request, sizeof request, "GET %s HTTP/1.0\r\nHost: fixture\r\n\r\n", path);
    if (write(fd, request, (size_t)n) != n) {
        close(fd);
        return 0;
    }
    char response[8192];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof response - 1 && (r = read(fd, response + got, sizeof response - 1 - got)) > 0) {
        got += (size_t)r;
    }
    close(fd);
    response[got] = '\0';
    char *start = strstr(response, "\r\n\r\n");
    snprintf(body, size, "%s", start ? start + 4 : "");
    size_t len = strlen(body);
    while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r')) body[--len] = '\0';
    return 1;
}

/* Calls the fixture with the step's arguments as the query; 0 (and a failure) unless "ok". */
static int fixture(const char *what, const step_t *s, char *answer, size_t size) {
    char path[512];
    int n = snprintf(path, sizeof path, "/%s", what);
    for (int i = 0; s && i < s->nargs; i++) {
        n += snprintf(path + n, sizeof path - (size_t)n, "%c%s=%s", i == 0 ? '?' : '&', s->args[i].key, s->args[i].value);
    }
    char body[1024];
    if (!http_get(path, body, sizeof body)) return fail("fixture %s: no answer", what);
    if (strncmp(body, "ok", 2) != 0) return fail("fixture %s: %s", what, body);
    if (answer) snprintf(answer, size, "%s", body);
    return 1;
}

/* The value of `key=` in an answer's words. */
static int word_value(const char *answer, const char *key, char *out, size_t size) {
    char pattern[40];
    snprintf(pattern, sizeof pattern, "%s=", key);
    const char *at = strstr(answer, pattern);
    if (!at) return 0;
    at += strlen(pattern);
    size_t len = strcspn(at, " \r\n");
    snprintf(out, size, "%.*s", (int)len, at);
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* What the callbacks saw                                                                    */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

typedef struct {
    char topic[TEXT];
    long count;
    char last[TEXT];
    int paused;
} topic_t;

#define MAX_SENDS 16
#define MAX_GAPS 16

typedef struct {
    char name[32];
    int done;
    TETHER_ERROR_CODE_T code;
} send_t;

static struct {
    SESSION_STATE_T changes[MAX_CHANGES];
    char change_reasons[MAX_CHANGES][40];
    send_t sends[MAX_SENDS];
    int nsends;
    char gap_topics[MAX_GAPS][TEXT];
    int ngaps;
    int nchanges;
    RECONNECTION_ATTEMPT_INFO_T attempts[MAX_ATTEMPTS];
    int nattempts;
    int decision; /* -1: undecided; else the action for the waiting strategy call */
    int successes, failures;
    topic_t topics[MAX_TOPICS];
    int ntopics;
} g;

static void reset_record(void) {
    pthread_mutex_lock(&g_mu);
    memset(&g, 0, sizeof g);
    g.decision = -1;
    pthread_mutex_unlock(&g_mu);
}

static struct timespec deadline_in(long ms) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

typedef int (*predicate_t)(const void *arg);

/* Waits (g_mu held) until pred holds; 0 if the guard elapsed first. */
static int wait_locked(predicate_t pred, const void *a) {
    struct timespec deadline = deadline_in(GUARD_MS);
    while (!pred(a)) {
        if (pthread_cond_timedwait(&g_cv, &g_mu, &deadline) == ETIMEDOUT) return pred(a);
    }
    return 1;
}

static void on_state(SESSION_T *session, SESSION_STATE_T old_state, SESSION_STATE_T new_state) {
    if (old_state == CONNECTING) return;
    const char *reason = session_state_change_reason(session);
    pthread_mutex_lock(&g_mu);
    if (g.nchanges < MAX_CHANGES) {
        snprintf(g.change_reasons[g.nchanges], sizeof g.change_reasons[0], "%s", reason ? reason : "");
        g.changes[g.nchanges++] = new_state;
    }
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static SESSION_T *g_session;

/* Gap reports: the topics named with at least one lost update. */
static void on_gap(SESSION_T *session, const GAP_REPORT_T *report) {
    (void)session;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < report->topic_count && g.ngaps < MAX_GAPS; i++) {
        if (report->lost_count > 0 && report->topics[i].count > 0) {
            snprintf(g.gap_topics[g.ngaps++], TEXT, "%s", report->topics[i].topic);
        }
    }
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

/* The outcome of a session_send (context: its slot in g.sends, or NULL for none kept). */
static void on_sent(void *context, TETHER_ERROR_CODE_T code, const char *message) {
    (void)message;
    pthread_mutex_lock(&g_mu);
    send_t *slot = context;
    if (slot) {
        slot->code = code;
        slot->done = 1;
    }
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

/* The runner's strategy: records the attempt's facts, then waits for a `decide` step (or for
 * the session to close: the reconnection timeout closes it whatever the strategy does). */
static RECONNECTION_ATTEMPT_ACTION_T manual(SESSION_T *session, void *args) {
    (void)args;
    RECONNECTION_ATTEMPT_INFO_T info;
    int have = session_reconnection_attempt_get(session, &info);
    pthread_mutex_lock(&g_mu);
    if (have && g.nattempts < MAX_ATTEMPTS) g.attempts[g.nattempts++] = info;
    g.decision = -1;
    pthread_cond_broadcast(&g_cv);
    while (g.decision < 0 && !session_is_closed(session)) {
        struct timespec t = deadline_in(50);
        pthread_cond_timedwait(&g_cv, &g_mu, &t);
    }
    int action = g.decision < 0 ? RECONNECTION_ATTEMPT_ACTION_ABORT : g.decision;
    pthread_mutex_unlock(&g_mu);
    return action;
}

static void on_success(SESSION_T *session, void *args) {
    (void)session;
    (void)args;
    pthread_mutex_lock(&g_mu);
    g.successes++;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void on_failure(SESSION_T *session, void *args) {
    (void)session;
    (void)args;
    pthread_mutex_lock(&g_mu);
    g.failures++;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void on_update(const char *topic, const void *value, size_t length, void *context) {
    topic_t *t = context;
    /* A paused consumer holds the callback thread until resume_consumer. */
    pthread_mutex_lock(&g_mu);
    struct timespec deadline = deadline_in(GUARD_MS);
    while (t->paused) {
        if (pthread_cond_timedwait(&g_cv, &g_mu, &deadline) == ETIMEDOUT) break;
    }
    (void)topic;
    t->count++;
    snprintf(t->last, sizeof t->last, "%.*s", (int)(length < TEXT - 1 ? length : TEXT - 1), (const char *)value);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

/* ---------------------------------------------------------------------------------------- */
/* Steps                                                                                     */

static char g_url[512];
static long g_timeout_ms;
static uint64_t g_last_elapsed;

static const char *error_name(const TETHER_ERROR_T *e) {
    switch (e->code) {
    case TETHER_ERROR_ACCESS_DENIED: return "access_denied";
    case TETHER_ERROR_INVALID_TOPIC: return "invalid_topic";
    case TETHER_ERROR_SESSION_CLOSED: return "closed";
    case TETHER_ERROR_OUTCOME_UNKNOWN: return "outcome_unknown";
    case TETHER_ERROR_QUEUE_FULL: return "queue_full";
    default: return "other";
    }
}

static topic_t *topic_of(const char *name) {
    for (int i = 0; i < g.ntopics; i++) {
        if (strcmp(g.topics[i].topic, name) == 0) return &g.topics[i];
    }
    return NULL;
}

static char g_ca_file[512];

static int do_open(const step_t *s) {
    SESSION_OPTIONS_T options = { 0 };
    char pem[16384] = "";
    if (arg(s, "ca") && strcmp(arg(s, "ca"), "fixture") == 0) {
        FILE *f = fopen(g_ca_file, "r");
        if (!f) return fail("cannot read the CA file %s", g_ca_file);
        size_t got = fread(pem, 1, sizeof pem - 1, f);
        fclose(f);
        pem[got] = '\0';
        options.tls_root_certificates_pem = pem;
    }
    options.ping_period_ms = (uint32_t)num_or(s, "ping_ms", 0);
    options.delivery_limit = (uint32_t)num_or(s, "delivery_limit", 0);
    options.strict = num_or(s, "strict", 0) == 1;
    options.max_queued_requests = (uint32_t)num_or(s, "queue", 0);
    options.close_timeout_ms = (uint32_t)num_or(s, "close_timeout_ms", 0);
    options.on_gap = on_gap;
    g_timeout_ms = num_or(s, "timeout_ms", 60000);
    const char *kind = arg(s, "strategy");
    RECONNECTION_STRATEGY_T *strategy = NULL;
    if (!kind || strcmp(kind, "default") == 0) {
        strategy = make_reconnection_strategy_default();
    } else if (strcmp(kind, "manual") == 0) {
        strategy = make_reconnection_strategy_user_function(manual, NULL, on_success, on_failure);
    } else if (strcmp(kind, "constant") == 0) {
        strategy = make_reconnection_strategy_repeating_attempt((uint32_t)num_or(s, "max_attempts", 0), (uint32_t)num_or(s, "delay_ms", 0));
    } else if (strcmp(kind, "backoff") == 0) {
        const char *j = arg_or(s, "jitter", "full");
        int jitter = strcmp(j, "none") == 0 ? RECONNECTION_JITTER_NONE
                     : strcmp(j, "equal") == 0 ? RECONNECTION_JITTER_EQUAL
                     : strcmp(j, "decorrelated") == 0 ? RECONNECTION_JITTER_DECORRELATED
                                                      : RECONNECTION_JITTER_FULL;
        strategy = make_reconnection_strategy_exponential_backoff((uint32_t)num_or(s, "initial_ms", 250), 2.0,
                                                                  (uint32_t)num_or(s, "max_ms", 10000), jitter,
                                                                  (uint32_t)num_or(s, "max_attempts", 0));
    } else if (strcmp(kind, "abort") == 0) {
        strategy = make_reconnection_strategy_abort_immediately();
    } else {
        return fail("strategy=%s", kind);
    }
    if (!strategy) return fail("cannot make the strategy");
    reconnection_strategy_set_timeout(strategy, (uint32_t)g_timeout_ms);
    CREDENTIALS_T *credentials = credentials_create_password("password");
    SESSION_LISTENER_T listener = { on_state, NULL };
    TETHER_ERROR_T error = { 0 };
    const char *urls[] = { g_url };
    SESSION_T *session = session_create_with_options(urls, 1, arg_or(s, "principal", "control"), credentials, &listener,
                                                     strategy, &options, &error);
    credentials_free(credentials);
    free_reconnection_strategy(strategy);
    int want_error = arg(s, "expect") && strcmp(arg(s, "expect"), "error") == 0;
    if (!session) {
        int ok = want_error ? 1 : fail("cannot open: %s", error.message ? error.message : "?");
        tether_error_free(&error);
        return ok;
    }
    if (want_error) {
        session_free(session);
        return fail("opened, but it should have failed");
    }
    if (g_session) session_free(g_session);
    g_session = session;
    return 1;
}

static int expect_outcome(const step_t *s, const char *got) {
    const char *want = arg_or(s, "expect", "ok");
    return strcmp(got, want) == 0 ? 1 : fail("outcome %s, expected %s", got, want);
}

typedef struct {
    const char *topic;
    long count;
    const char *last;
} received_t;

static int received(const void *a) {
    const received_t *r = a;
    topic_t *t = topic_of(r->topic);
    return t && t->count >= r->count && (!r->last || strcmp(t->last, r->last) == 0);
}

typedef struct {
    int from;
    SESSION_STATE_T state;
    int found;
} state_wait_t;

static int state_entered(const void *a) {
    state_wait_t *w = (state_wait_t *)a;
    for (int i = w->from; i < g.nchanges; i++) {
        if (g.changes[i] == w->state) {
            w->found = i;
            return 1;
        }
    }
    return 0;
}

static int send_done(const void *a) {
    return ((const send_t *)a)->done;
}

static int gap_named(const void *a) {
    for (int i = 0; i < g.ngaps; i++) {
        if (strcmp(g.gap_topics[i], (const char *)a) == 0) return 1;
    }
    return 0;
}

static int attempt_count(const void *a) {
    return g.nattempts >= *(const int *)a;
}

static int hooks(const void *a) {
    const int *want = a;
    return g.successes >= want[0] && g.failures >= want[1];
}

static SESSION_STATE_T state_named(const char *name) {
    for (int s = CONNECTING; s <= CLOSED_FAILED; s++) {
        if (strcmp(session_state_as_string(s), name) == 0) return s;
    }
    return SESSION_STATE_UNKNOWN;
}

static void *decide_thread(void *a) {
    int action = *(int *)a;
    pthread_mutex_lock(&g_mu);
    g.decision = action;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

static int g_cursor;

/* Polls the session's own state (every event, or 20 ms): for facts no callback reports while
 * a callback holds the session's callback thread. */
static int poll_until(int (*done)(void)) {
    struct timespec deadline = deadline_in(GUARD_MS);
    pthread_mutex_lock(&g_mu);
    while (!done()) {
        struct timespec now, t = deadline_in(20);
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec > deadline.tv_sec || (now.tv_sec == deadline.tv_sec && now.tv_nsec > deadline.tv_nsec)) {
            pthread_mutex_unlock(&g_mu);
            return 0;
        }
        pthread_cond_timedwait(&g_cv, &g_mu, &t);
    }
    pthread_mutex_unlock(&g_mu);
    return 1;
}

static SESSION_STATE_T g_wanted;
static int session_in_wanted(void) { return session_state_get(g_session) == g_wanted; }
static int session_closed(void) { return session_is_closed(g_session); }

static int step(const step_t *s, const char *self) {
    const char *v = s->verb;
    if (strcmp(v, "env") == 0) {
        char answer[1024];
        if (!fixture("env", s, answer, sizeof answer)) return 0;
        if (!word_value(answer, "url", g_url, sizeof g_url)) return fail("no url in %s", answer);
        if (!word_value(answer, "ca", g_ca_file, sizeof g_ca_file)) g_ca_file[0] = '\0';
        return 1;
    }
    if (strcmp(v, "open") == 0) return do_open(s);
    if (strcmp(v, "server_publish") == 0) return fixture("publish", s, NULL, 0);
    if (strcmp(v, "cut") == 0 || strcmp(v, "stall") == 0 || strcmp(v, "refuse") == 0 || strcmp(v, "heal") == 0 ||
        strcmp(v, "drain") == 0) {
        return fixture(v, s, NULL, 0);
    }
    if (strcmp(v, "expect_proxy") == 0) {
        char path[64];
        snprintf(path, sizeof path, "wait_refused?n=%s", arg_or(s, "refused", "0"));
        return fixture(path, NULL, NULL, 0);
    }
    if (strcmp(v, "exit_child") == 0) {
        char command[1024];
        snprintf(command, sizeof command, "'%s' --child '%s'", self, g_url);
        FILE *p = popen(command, "r");
        if (!p) return fail("cannot run the child");
        char out[4096] = { 0 };
        size_t got = fread(out, 1, sizeof out - 1, p);
        out[got] = '\0';
        int status = pclose(p);
        if (status != 0 || !strstr(out, "done")) return fail("child: status %d, output %s", status, out);
        return 1;
    }
    if (!g_session) return fail("no session: `open` first");
    TETHER_ERROR_T error = { 0 };
    if (strcmp(v, "subscribe") == 0) {
        pthread_mutex_lock(&g_mu);
        if (g.ntopics == MAX_TOPICS) {
            pthread_mutex_unlock(&g_mu);
            return fail("too many topics");
        }
        topic_t *t = &g.topics[g.ntopics++];
        snprintf(t->topic, sizeof t->topic, "%s", arg_or(s, "topic", ""));
        t->paused = arg(s, "consumer") && strcmp(arg(s, "consumer"), "paused") == 0;
        pthread_mutex_unlock(&g_mu);
        if (!session_subscribe(g_session, t->topic, on_update, t, &error)) {
            int r = fail("subscribe: %s", error.message ? error.message : "?");
            tether_error_free(&error);
            return r;
        }
        return 1;
    }
    if (strcmp(v, "resume_consumer") == 0) {
        pthread_mutex_lock(&g_mu);
        topic_t *t = topic_of(arg_or(s, "topic", ""));
        if (t) t->paused = 0;
        pthread_cond_broadcast(&g_cv);
        pthread_mutex_unlock(&g_mu);
        return t ? 1 : fail("no such consumer");
    }
    if (strcmp(v, "publish") == 0) {
        const char *value = arg_or(s, "value", "");
        int ok = session_publish(g_session, arg_or(s, "topic", ""), value, strlen(value), &error);
        int r = expect_outcome(s, ok ? "ok" : error_name(&error));
        tether_error_free(&error);
        return r;
    }
    if (strcmp(v, "send") == 0) {
        const char *value = arg_or(s, "value", "");
        send_t *slot = NULL;
        pthread_mutex_lock(&g_mu);
        if (arg(s, "as") && g.nsends < MAX_SENDS) {
            slot = &g.sends[g.nsends++];
            snprintf(slot->name, sizeof slot->name, "%s", arg(s, "as"));
        }
        pthread_mutex_unlock(&g_mu);
        int ok = session_send(g_session, arg_or(s, "topic", ""), value, strlen(value), on_sent, slot, &error);
        int r = expect_outcome(s, ok ? "ok" : error_name(&error));
        tether_error_free(&error);
        return r;
    }
    if (strcmp(v, "await_send") == 0) {
        send_t *slot = NULL;
        pthread_mutex_lock(&g_mu);
        for (int i = 0; i < g.nsends; i++) {
            if (strcmp(g.sends[i].name, arg_or(s, "name", "")) == 0) slot = &g.sends[i];
        }
        int ok = slot && wait_locked(send_done, slot);
        TETHER_ERROR_T outcome = { ok ? slot->code : TETHER_ERROR_NONE, NULL };
        pthread_mutex_unlock(&g_mu);
        if (!ok) return fail("no outcome for send %s", arg_or(s, "name", ""));
        return expect_outcome(s, outcome.code == TETHER_ERROR_NONE ? "ok" : error_name(&outcome));
    }
    if (strcmp(v, "expect_received") == 0) {
        received_t r = { arg_or(s, "topic", ""), num_or(s, "count", 1), arg(s, "last") };
        pthread_mutex_lock(&g_mu);
        int ok = wait_locked(received, &r);
        topic_t *t = topic_of(r.topic);
        long count = t ? t->count : 0;
        char last[TEXT];
        snprintf(last, sizeof last, "%s", t ? t->last : "");
        pthread_mutex_unlock(&g_mu);
        return ok ? 1 : fail("timed out waiting for %ld update(s) of %s (got %ld, the last %s)", r.count, r.topic, count, last);
    }
    if (strcmp(v, "expect_state") == 0) {
        state_wait_t w = { g_cursor, state_named(arg_or(s, "state", "")), -1 };
        pthread_mutex_lock(&g_mu);
        int ok = wait_locked(state_entered, &w);
        char reason[40] = "";
        if (ok) snprintf(reason, sizeof reason, "%s", g.change_reasons[w.found]);
        pthread_mutex_unlock(&g_mu);
        if (!ok) return fail("timed out waiting for the session to enter %s", arg_or(s, "state", ""));
        g_cursor = w.found + 1;
        if (arg(s, "reason") && strcmp(arg(s, "reason"), reason) != 0) {
            return fail("entered %s with reason %s, not %s", arg_or(s, "state", ""), reason, arg(s, "reason"));
        }
        return 1;
    }
    if (strcmp(v, "wait_state") == 0) {
        g_wanted = state_named(arg_or(s, "state", ""));
        return poll_until(session_in_wanted) ? 1 : fail("timed out waiting for %s", arg_or(s, "state", ""));
    }
    if (strcmp(v, "expect_attempt") == 0) {
        int n = (int)num_or(s, "number", 1);
        pthread_mutex_lock(&g_mu);
        int ok = wait_locked(attempt_count, &n);
        RECONNECTION_ATTEMPT_INFO_T info = ok ? g.attempts[n - 1] : (RECONNECTION_ATTEMPT_INFO_T){ 0 };
        pthread_mutex_unlock(&g_mu);
        if (!ok) return fail("timed out waiting for reconnection attempt %d", n);
        char wrong[512] = "";
        size_t w = 0;
        if ((int)info.number != n) w += (size_t)snprintf(wrong + w, sizeof wrong - w, "number %u; ", info.number);
        const char *reason = arg(s, "last_reason");
        if (reason && (!info.last_reason || strcmp(info.last_reason, reason) != 0)) {
            w += (size_t)snprintf(wrong + w, sizeof wrong - w, "last reason %s; ", info.last_reason ? info.last_reason : "(null)");
        }
        const char *retry = arg(s, "retry_after");
        if (retry && strcmp(retry, "none") == 0 && info.retry_after_ms != RECONNECTION_NO_RETRY_AFTER) {
            w += (size_t)snprintf(wrong + w, sizeof wrong - w, "retry-after %lld, expected none; ", (long long)info.retry_after_ms);
        } else if (retry && strcmp(retry, "none") != 0 && info.retry_after_ms != strtoll(retry, NULL, 10)) {
            w += (size_t)snprintf(wrong + w, sizeof wrong - w, "retry-after %lld, expected %s; ", (long long)info.retry_after_ms, retry);
        }
        if (info.remaining_ms == 0 || info.remaining_ms > (uint64_t)g_timeout_ms) {
            w += (size_t)snprintf(wrong + w, sizeof wrong - w, "remaining %llu (timeout %ld); ", (unsigned long long)info.remaining_ms, g_timeout_ms);
        }
        if (info.elapsed_ms < g_last_elapsed) {
            w += (size_t)snprintf(wrong + w, sizeof wrong - w, "elapsed %llu went back; ", (unsigned long long)info.elapsed_ms);
        }
        g_last_elapsed = info.elapsed_ms;
        return w == 0 ? 1 : fail("attempt %d: %s", n, wrong);
    }
    if (strcmp(v, "decide") == 0) {
        int action = strcmp(arg_or(s, "action", ""), "start") == 0 ? RECONNECTION_ATTEMPT_ACTION_START : RECONNECTION_ATTEMPT_ACTION_ABORT;
        pthread_mutex_lock(&g_mu);
        int waiting = g.nattempts > 0 && g.decision < 0;
        pthread_mutex_unlock(&g_mu);
        if (!waiting) return fail("no attempt waits for a decision");
        if (arg(s, "from") && strcmp(arg(s, "from"), "thread") == 0) {
            pthread_t t;
            pthread_create(&t, NULL, decide_thread, &action);
            pthread_join(t, NULL);
        } else {
            decide_thread(&action);
        }
        return 1;
    }
    if (strcmp(v, "expect_hooks") == 0) {
        int want[2] = { (int)num_or(s, "success", 0), (int)num_or(s, "failure", 0) };
        pthread_mutex_lock(&g_mu);
        wait_locked(hooks, want);
        int got[2] = { g.successes, g.failures };
        pthread_mutex_unlock(&g_mu);
        if (got[0] != want[0] || got[1] != want[1]) {
            return fail("hooks: %d success, %d failure; expected %d, %d", got[0], got[1], want[0], want[1]);
        }
        return 1;
    }
    if (strcmp(v, "expect_gap") == 0) {
        pthread_mutex_lock(&g_mu);
        int ok = wait_locked(gap_named, arg_or(s, "topic", ""));
        pthread_mutex_unlock(&g_mu);
        return ok ? 1 : fail("timed out waiting for a gap report naming %s", arg_or(s, "topic", ""));
    }
    if (strcmp(v, "expect_ping_period") == 0) {
        uint32_t got = session_ping_period_ms(g_session);
        return (long)got == num_or(s, "ms", -1) ? 1 : fail("ping period %u ms, expected %s", got, arg_or(s, "ms", "?"));
    }
    if (strcmp(v, "close") == 0) {
        int ok = session_close(g_session, &error);
        tether_error_free(&error);
        return ok ? 1 : fail("close failed");
    }
    if (strcmp(v, "expect_closed") == 0) {
        if (!poll_until(session_closed)) return fail("timed out waiting for the session to close");
        const char *state = session_state_as_string(session_state_get(g_session));
        const char *reason = session_close_reason(g_session);
        if (strcmp(state, arg_or(s, "state", "")) != 0 || !reason || strcmp(reason, arg_or(s, "reason", "")) != 0) {
            return fail("closed in %s (%s), expected %s (%s)", state, reason ? reason : "(null)", arg_or(s, "state", ""), arg_or(s, "reason", ""));
        }
        return 1;
    }
    return fail("unknown step %s", v);
}

/* ---------------------------------------------------------------------------------------- */

/* The exit_child program: opens, subscribes, publishes, gets its update, prints "done" and
 * returns from main with the session open (no close, no free, no shutdown). */
static topic_t g_child_topic;

static int child(const char *url) {
    CREDENTIALS_T *credentials = credentials_create_password("password");
    TETHER_ERROR_T error = { 0 };
    SESSION_T *session = session_create(url, "control", credentials, NULL, NULL, &error);
    credentials_free(credentials);
    if (!session) {
        printf("cannot open: %s\n", error.message ? error.message : "?");
        return 1;
    }
    snprintf(g_child_topic.topic, sizeof g_child_topic.topic, "exit/t");
    g_child_topic.paused = 0;
    if (!session_subscribe(session, "exit/t", on_update, &g_child_topic, &error) ||
        !session_publish(session, "exit/t", "bye", 3, &error)) {
        printf("failed: %s\n", error.message ? error.message : "?");
        return 1;
    }
    pthread_mutex_lock(&g_mu);
    struct timespec deadline = deadline_in(GUARD_MS);
    while (g_child_topic.count < 1) {
        if (pthread_cond_timedwait(&g_cv, &g_mu, &deadline) == ETIMEDOUT) break;
    }
    int got = g_child_topic.count >= 1 && strcmp(g_child_topic.last, "bye") == 0;
    pthread_mutex_unlock(&g_mu);
    if (!got) {
        printf("no update\n");
        return 1;
    }
    printf("done\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "--child") == 0) return child(argv[2]);
    if (argc < 4) {
        fprintf(stderr, "usage: %s <scenarios.txt> <fixture host:port> <results file> [scenario]\n", argv[0]);
        return 2;
    }
    if (!load(argv[1])) {
        fprintf(stderr, "cannot read scenarios from %s\n", argv[1]);
        return 2;
    }
    g_control = argv[2];
    const char *only = argc > 4 ? argv[4] : NULL;
    FILE *results = only ? NULL : fopen(argv[3], "w");
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < g_nscenarios; i++) {
        scenario_t *sc = &g_scenarios[i];
        if (only && !strstr(sc->name, only)) continue;
        reset_record();
        g_outcome = PASS;
        g_detail[0] = '\0';
        g_cursor = 0;
        g_last_elapsed = 0;
        g_timeout_ms = 60000;
        for (int j = 0; j < sc->nsteps; j++) {
            const step_t *st = &sc->steps[j];
            if (!step(st, argv[0])) {
                char detail[sizeof g_detail];
                memcpy(detail, g_detail, sizeof detail);
                snprintf(g_detail, sizeof g_detail, "line %d: %s: %.900s", st->line, st->verb, detail);
                break;
            }
        }
        if (g_session) {
            pthread_mutex_lock(&g_mu);
            for (int t = 0; t < g.ntopics; t++) g.topics[t].paused = 0;
            g.decision = RECONNECTION_ATTEMPT_ACTION_ABORT;
            pthread_cond_broadcast(&g_cv);
            pthread_mutex_unlock(&g_mu);
            session_free(g_session);
            g_session = NULL;
        }
        const char *word = g_outcome == PASS ? "pass" : g_outcome == FAIL ? "FAIL" : "unsupported";
        if (g_outcome == PASS) passed++;
        else if (g_outcome == FAIL) failed++;
        else skipped++;
        printf("%s\t%s\t%s\n", sc->name, word, g_detail);
        if (results) fprintf(results, "%s\t%s\t%s\n", sc->name, word, g_detail);
    }
    if (results) fclose(results);
    tether_shutdown(5000, NULL);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed == 0 ? 0 : 1;
}
