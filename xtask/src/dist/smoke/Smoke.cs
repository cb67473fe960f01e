// Installed-package check (cargo xtask dist): a session through the fault proxy survives a cut.
// Arguments: the server's URL (through the proxy) and a topic of its own. Prints `ready <id>`
// after the first round trip; the caller then cuts the connection; prints `ok <id>` once the
// session resumed and a second message made the round trip.

using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Threading;
using Tether;

public static class Smoke
{
    static readonly TimeSpan Guard = TimeSpan.FromSeconds(60);

    public static int Main(string[] args)
    {
        try
        {
            Run(args[0], args[1]);
            return 0;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine("FAIL: " + e);
            return 1;
        }
    }

    static string Next(BlockingCollection<string> updates, string what)
    {
        string value;
        if (!updates.TryTake(out value, Guard))
            throw new InvalidOperationException("no " + what + " within " + Guard);
        return value;
    }

    static void Run(string url, string topic)
    {
        var reconnected = new ManualResetEventSlim(false);
        var updates = new BlockingCollection<string>();
        var received = new List<string>();
        var session = Tether.Sessions
            .Principal("control")
            .Password("password")
            .SessionStateChangedHandler((sender, e) =>
            {
                if (e.OldState == SessionState.RECOVERING_RECONNECT && e.NewState == SessionState.CONNECTED_ACTIVE)
                    reconnected.Set();
            })
            .Open(url);
        using (session)
        {
            string id = session.SessionId;
            session.Subscribe(topic, update => updates.Add(update.ValueAsString));
            session.Publish(topic, "one");
            received.Add(Next(updates, "first update"));
            Console.WriteLine("ready " + id);
            Console.Out.Flush();

            if (!reconnected.Wait(Guard))
                throw new InvalidOperationException("no reconnection within " + Guard);
            if (session.SessionId != id)
                throw new InvalidOperationException("session id changed: " + id + " -> " + session.SessionId);
            session.Publish(topic, "two");
            received.Add(Next(updates, "second update"));
            if (string.Join(",", received) != "one,two")
                throw new InvalidOperationException("received " + string.Join(",", received));
            session.Close();
            if (!TetherRuntime.Shutdown(TimeSpan.FromSeconds(5)))
                throw new InvalidOperationException("Tether did not stop within 5 s");
            Console.WriteLine("ok " + id);
        }
    }
}
