// Installed-package check (cargo xtask dist): a session through the fault proxy survives a cut.
// Arguments: the server's URL (through the proxy) and a topic of its own. Prints `ready <id>`
// after the first round trip; the caller then cuts the connection; prints `ok <id>` once the
// session resumed and a second message made the round trip.

import io.tether.Session;
import io.tether.SessionState;
import io.tether.StateChange;
import io.tether.Tether;
import io.tether.TopicListener;
import io.tether.TopicUpdate;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

public final class Smoke {
    private static final long GUARD_SECONDS = 60;

    public static void main(String[] args) throws Exception {
        try {
            run(args[0], args[1]);
        } catch (Throwable e) {
            System.err.println("FAIL: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    private static String next(BlockingQueue<String> updates, String what) throws InterruptedException {
        String value = updates.poll(GUARD_SECONDS, TimeUnit.SECONDS);
        if (value == null) {
            throw new IllegalStateException("no " + what + " within " + GUARD_SECONDS + " s");
        }
        return value;
    }

    private static void run(String url, String topic) throws Exception {
        CountDownLatch reconnected = new CountDownLatch(1);
        BlockingQueue<String> updates = new LinkedBlockingQueue<>();
        List<String> received = new ArrayList<>();
        Session session = Tether.sessions()
                .principal("control")
                .password("password")
                .listener((StateChange change) -> {
                    if (change.getOldState() == SessionState.RECOVERING_RECONNECT
                            && change.getNewState() == SessionState.CONNECTED_ACTIVE) {
                        reconnected.countDown();
                    }
                })
                .open(url);
        String id = session.getSessionId();
        session.subscribe(topic, new TopicListener() {
            @Override
            public void onUpdate(TopicUpdate update) {
                updates.add(new String(update.getValue(), StandardCharsets.UTF_8));
            }
        });
        session.publish(topic, "one");
        received.add(next(updates, "first update"));
        System.out.println("ready " + id);
        System.out.flush();

        if (!reconnected.await(GUARD_SECONDS, TimeUnit.SECONDS)) {
            throw new IllegalStateException("no reconnection within " + GUARD_SECONDS + " s");
        }
        if (!id.equals(session.getSessionId())) {
            throw new IllegalStateException("session id changed: " + id + " -> " + session.getSessionId());
        }
        session.publish(topic, "two");
        received.add(next(updates, "second update"));
        if (!received.equals(List.of("one", "two"))) {
            throw new IllegalStateException("received " + received);
        }
        session.close();
        Tether.shutdown();
        System.out.println("ok " + id);
    }
}
