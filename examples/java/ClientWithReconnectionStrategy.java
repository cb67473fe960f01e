/*
 * The seed's Java reconnection example, ported to Tether.
 *
 * A reconnection strategy with exponential backoff: on each disconnection a
 * ScheduledExecutorService calls attempt::start after 1, 2, 4, 8, 16 seconds; after 5 retries it
 * aborts (the session closes, CLOSED_FAILED with reason reconnect_aborted). A listener prints
 * every state change and resets the retries when the session is connected again.
 *
 * Build and run (see examples/java/README.md):
 *   javac -cp tether.jar:jna.jar:kotlin-stdlib.jar ClientWithReconnectionStrategy.java
 *   java  -cp .:tether.jar:jna.jar:kotlin-stdlib.jar ClientWithReconnectionStrategy ws://127.0.0.1:8080
 *
 * The session stays open until you press Enter (or standard input ends).
 */

import io.tether.AttemptInfo;
import io.tether.CloseReason;
import io.tether.ReconnectionAttempt;
import io.tether.ReconnectionStrategy;
import io.tether.Session;
import io.tether.SessionState;
import io.tether.StateChange;
import io.tether.Tether;
import io.tether.TetherException;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

public final class ClientWithReconnectionStrategy {

    /** Exponential backoff on a scheduler thread, as in the seed: abort after 5 retries. */
    static final class ExponentialBackoffStrategy implements ReconnectionStrategy {
        private final AtomicInteger retries = new AtomicInteger();
        private final ScheduledExecutorService scheduler = Executors.newScheduledThreadPool(1);

        @Override
        public void performReconnection(ReconnectionAttempt reconnectionAttempt) {
            int retry = retries.getAndIncrement();
            if (retry < 5) {
                int delay = (int) Math.pow(2, retry); // Exponential backoff
                System.out.printf("Attempting to reconnect in %d s (retry %d of 5, last reason %s)%n",
                        delay, retry + 1, reconnectionAttempt.lastReason());
                scheduler.schedule(reconnectionAttempt::start, delay, TimeUnit.SECONDS);
            } else {
                System.out.println("Giving up after 5 retries");
                reconnectionAttempt.abort();
            }
        }

        @Override
        public void onSuccess(AttemptInfo attempt) {
            // Reconnected: the next outage starts from the first delay again.
            retries.set(0);
        }

        @Override
        public void onFailure(AttemptInfo attempt, CloseReason reason) {
            // performReconnection follows (while time remains) and counts the retry.
        }

        void shutdown() {
            scheduler.shutdownNow();
        }
    }

    public static void main(String[] args) throws IOException {
        final String url = args.length > 0 ? args[0] : "ws://127.0.0.1:8080";

        // Set the maximum amount of time we'll try and reconnect for to 10 minutes
        final int maximumTimeoutDuration = 1000 * 60 * 10;

        final ExponentialBackoffStrategy reconnectionStrategy = new ExponentialBackoffStrategy();
        final AtomicReference<Session> opened = new AtomicReference<>();
        final CountDownLatch closed = new CountDownLatch(1);

        final Session session;
        try {
            session = Tether.sessions()
                    .principal("control")
                    .password("password")
                    .reconnectionTimeout(maximumTimeoutDuration)
                    .reconnectionStrategy(reconnectionStrategy)
                    .listener((StateChange change) -> {
                        onStateChanged(change, opened.get(), reconnectionStrategy);
                        if (change.getNewState().isClosed()) {
                            closed.countDown();
                        }
                    })
                    .open(url);
        } catch (TetherException e) {
            System.out.println("Failed to create session: " + e.getMessage());
            reconnectionStrategy.shutdown();
            Tether.shutdown();
            System.exit(1);
            return;
        }

        opened.set(session);
        System.out.printf("Session created (state=%s, id=%s)%n", session.getState(), session.getSessionId());
        System.out.println("Press Enter to close the session.");

        new BufferedReader(new InputStreamReader(System.in)).readLine();

        // Close the session. The listener runs on Tether's thread: let it see the closed state
        // before Tether's threads are stopped.
        session.close();
        try {
            closed.await(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        // Release our scheduler and Tether's threads.
        reconnectionStrategy.shutdown();
        Tether.shutdown();
        System.out.println("Done.");
    }

    private static void onStateChanged(StateChange change, Session session, ExponentialBackoffStrategy strategy) {
        System.out.printf("Session state changed from %s to %s%s%n",
                change.getOldState(), change.getNewState(),
                change.getReason() == null ? "" : " (" + change.getReason() + ")");

        if (change.getNewState() == SessionState.RECOVERING_RECONNECT) {
            // The session has been disconnected, and has entered recovery state. It is during
            // this state that the reconnect strategy will be called.
            System.out.println("The session has been disconnected.");
        }
        if (change.getNewState() == SessionState.CONNECTED_ACTIVE) {
            // The session has connected for the first time, or it has been reconnected (the
            // strategy's onSuccess has reset its backoff).
            if (change.getOldState() == SessionState.RECOVERING_RECONNECT && session != null) {
                System.out.printf("The session has reconnected (id=%s)%n", session.getSessionId());
            }
        }
        if (change.getNewState() == SessionState.CLOSED_BY_CLIENT) {
            System.out.println("The session has been closed.");
        }
        if (change.getNewState() == SessionState.CLOSED_FAILED) {
            System.out.println("The session has failed: " + change.getReason());
        }
    }
}
