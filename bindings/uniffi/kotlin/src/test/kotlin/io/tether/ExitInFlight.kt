package io.tether

import java.util.concurrent.CountDownLatch

/**
 * Run in child JVMs by [ExitTest]: ends the JVM while publishes are in flight, without
 * `close()` or `Tether.shutdown()` of its own. Four daemon threads publish with the blocking
 * call, and 2,000 `publishAsync` calls (publish `i` on topic `<base>/load/<i % 16>`) are queued
 * without waiting. Prints `base <base>` first.
 *
 * Arguments: url, mode:
 * - `return`: main returns (every other thread of the program is a daemon);
 * - `exit-main`: `System.exit(5)` from main;
 * - `exit-topic`: `System.exit(3)` from a topic listener (Tether's callback thread), once
 *   every publish is queued, half of them after the one that triggers it;
 * - `exit-state`: `System.exit(4)` from a session listener, when another session closes.
 */
object ExitInFlight {
    const val PUBLISHES = 2000
    const val TOPICS = 16

    @JvmStatic
    fun main(args: Array<String>) {
        val (url, mode) = args
        val base = "exit/${ProcessHandle.current().pid()}/${System.nanoTime()}"
        println("base $base")
        val factory = Tether.sessions().principal("control").password("password")
        val session = factory.open(url)
        repeat(4) { t ->
            Thread({
                var i = 0
                try {
                    while (true) session.publish("$base/threads/$t", (i++).toString())
                } catch (e: TetherException) {
                    // The session closed under the thread: the JVM is exiting.
                }
            }, "publisher-$t").apply { isDaemon = true }.start()
        }
        fun queue(from: Int, to: Int) {
            for (i in from until to) session.publishAsync("$base/load/${i % TOPICS}", i.toString())
        }
        when (mode) {
            "return" -> queue(0, PUBLISHES)
            "exit-main" -> {
                queue(0, PUBLISHES)
                System.exit(5)
            }
            "exit-topic" -> {
                val queued = CountDownLatch(1)
                session.subscribe("$base/trigger") {
                    queued.await() // so that every publish is queued before the exit
                    System.exit(3)
                }
                queue(0, PUBLISHES / 2)
                session.publishAsync("$base/trigger", "exit now")
                queue(PUBLISHES / 2, PUBLISHES)
                queued.countDown()
                Thread.sleep(Long.MAX_VALUE) // the listener ends the JVM
            }
            "exit-state" -> {
                val other = factory.listener { change ->
                    if (change.newState == SessionState.CLOSED_BY_CLIENT) System.exit(4)
                }.open(url)
                queue(0, PUBLISHES)
                other.close()
                Thread.sleep(Long.MAX_VALUE) // the listener ends the JVM
            }
            else -> error("unknown mode $mode")
        }
    }
}
