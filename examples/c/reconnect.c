/**
 * Copyright © 2021 - 2023 DiffusionData Ltd.
 *
 * Licensed under the Apache License, Version 2.0 (the "License");
 * you may not use this file except in compliance with the License.
 * You may obtain a copy of the License at
 *
 * http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS,
 * WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 * See the License for the specific language governing permissions and
 * limitations under the License.
 *
 * This example shows how to make a synchronous connection with a
 * user-defined reconnection strategy which reconnects with an exponential
 * backoff.
 *
 * Ported to Tether from the seed's C example. The changes (see README.md):
 * - the include ("tether.h") and the error type's name (TETHER_ERROR_T);
 * - SESSION_T is opaque: session->state and session->id become
 *   session_state_get(session) and session_id_get(session);
 * - the URL may be given as the first argument (default ws://localhost:8080,
 *   where `tether-server --dev` listens).
 */

#include <stdio.h>
#include <stdlib.h>

#ifndef WIN32
        #include <unistd.h>
#else
        #define sleep(x) Sleep(1000 * x)
#endif

#include <time.h>

#include "tether.h"

/*
 * This callback is used when the session state changes, e.g. when a session
 * moves from a "connecting" to a "connected" state, or from "connected" to
 * "closed".
 */
static void on_session_state_changed(SESSION_T *session,
        const SESSION_STATE_T old_state,
        const SESSION_STATE_T new_state)
{
        printf("Session state changed from %s (%d) to %s (%d)\n",
               session_state_as_string(old_state), old_state,
               session_state_as_string(new_state), new_state);
}

typedef struct {
        double current_wait;
        double max_wait;
} BACKOFF_STRATEGY_ARGS_T;

static RECONNECTION_ATTEMPT_ACTION_T backoff_reconnection_strategy(
        SESSION_T *session,
        void *args)
{
        BACKOFF_STRATEGY_ARGS_T *backoff_args = args;

        printf("Waiting for %f ms\n", backoff_args->current_wait);

        // Block this (library-owned) thread for the wait, then reconnect.
        struct timespec wait = {
                .tv_sec = (time_t)(backoff_args->current_wait / 1000),
                .tv_nsec = (long)((long long)backoff_args->current_wait % 1000) * 1000000L
        };
        nanosleep(&wait, NULL);

        // But only up to some maximum time.
        if(backoff_args->current_wait > backoff_args->max_wait) {
                backoff_args->current_wait = backoff_args->max_wait;
        }

        return RECONNECTION_ATTEMPT_ACTION_START;
}

static void backoff_success(SESSION_T *session, void *args)
{
        printf("Reconnection successful\n");

        BACKOFF_STRATEGY_ARGS_T *backoff_args = args;
        backoff_args->current_wait = 0; // Reset wait.
}

static void backoff_failure(SESSION_T *session, void *args)
{
        printf("Reconnection failed (%s)\n", session_state_as_string(session_state_get(session)));

        BACKOFF_STRATEGY_ARGS_T *backoff_args = args;

        // Exponential backoff.
        if(backoff_args->current_wait == 0) {
                backoff_args->current_wait = 0.01;
        }
        else {
                backoff_args->current_wait *= 2;
        }
}

int main(int argc, char **argv)
{
        const char *url = argc > 1 ? argv[1] : "ws://localhost:8080";
        const char *principal = "control";
        const char *password = "password";

        CREDENTIALS_T *credentials = credentials_create_password(password);

        SESSION_T *session;
        TETHER_ERROR_T error = { 0 };
        SESSION_LISTENER_T session_listener = {
                .on_state_changed = on_session_state_changed
        };

        // Set the arguments to our exponential backoff strategy
        BACKOFF_STRATEGY_ARGS_T backoff_args = {
                .current_wait = 0,
                .max_wait = 5000
        };

        // Create the backoff strategy
        RECONNECTION_STRATEGY_T *reconnection_strategy =
                make_reconnection_strategy_user_function(
                        backoff_reconnection_strategy,
                        &backoff_args,
                        backoff_success,
                        backoff_failure);

        // Only retry for 30 seconds
        reconnection_strategy_set_timeout(reconnection_strategy, 30 * 1000);

        // Create a session, synchronously
        session = session_create(url, principal, credentials, &session_listener, reconnection_strategy, &error);
        if(session != NULL) {
                char *sid_str = session_id_to_string(session_id_get(session));
                printf("Session created (state=%d, id=%s)\n", session_state_get(session), sid_str);
                free(sid_str);
        }
        else {
                printf("Failed to create session: %s\n", error.message);
                free(error.message);
        }

        // With the exception of backoff_args, the reconnection strategy is
        // copied withing session_create() and may be freed now
        free_reconnection_strategy(reconnection_strategy);

        // Sleep for a while
        sleep(5);

        // Close the session, and release resources and memory
        session_close(session, NULL);
        session_free(session);

        credentials_free(credentials);

        return EXIT_SUCCESS;
}
