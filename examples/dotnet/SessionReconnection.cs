// The seed's C# example ("Specifying a reconnection strategy"), ported to Tether's .NET
// binding (bindings/dotnet). The changes:
// - `Diffusion.Sessions` becomes `Tether.Sessions.Factory`, and the credentials are given
//   with `.Password(password)`;
// - no `CertificateValidation`: this example speaks plain ws:// to a development server;
// - a `Main` that takes the server URL (default ws://localhost:8080, where
//   `tether-server --dev` listens), keeps the session open until Enter is pressed (or standard
//   input ends), then closes it and disposes it;
// - when the session leaves RECOVERING_RECONNECT for CONNECTED_ACTIVE it also says
//   "The session has reconnected." with its (unchanged) session id.
//
// Build and run (see bindings/dotnet/README.md):
//   mcs -out:SessionReconnection.exe -r:Tether.dll examples/dotnet/SessionReconnection.cs
//   LD_LIBRARY_PATH=target/debug mono SessionReconnection.exe ws://127.0.0.1:8080

using System;
using System.Threading.Tasks;
using Tether;
using static System.Console;

/// <summary>
/// Implementation that demonstrates session reconnection strategy.
/// </summary>
public sealed class SessionReconnection
{
    private int maximumTimeoutDuration = 1000 * 60 * 10;

    private ReconnectionStrategy reconnectionStrategy = new ReconnectionStrategy();

    public SessionReconnection(string serverUrl)
    {
        var factory = Tether.Sessions.Factory;

        var session = Connect(serverUrl, factory);

        if (session != null)
        {
            WriteLine("The session has been created.");

            // Ported: keep the session open until Enter is pressed, then close it.
            WriteLine("Press Enter to close the session.");
            ReadLine();
            session.Close();
            session.Dispose();
        }
    }

    public ISession Connect(string url, ISessionFactory initialFactory)
    {
        try
        {
            string principal = "control";
            string password = "password";

            var factory = initialFactory
                .Principal(principal)
                .Password(password)
                .ReconnectionTimeout(maximumTimeoutDuration)
                .ReconnectionStrategy(reconnectionStrategy)
                .SessionStateChangedHandler(OnSessionStateChanged);

            return factory.Open(url);
        }
        catch (Exception ex)
        {
            WriteLine($"Session connection error : {ex}.");
        }

        return null;
    }

    private void OnSessionStateChanged(object sender, SessionListenerEventArgs e)
    {
        if (e.NewState == SessionState.RECOVERING_RECONNECT)
        {
            // The session has been disconnected, and has entered
            // recovery state. It is during this state that
            // the reconnect strategy will be called
            WriteLine("The session has been disconnected.");
        }

        if (e.NewState == SessionState.CONNECTED_ACTIVE)
        {
            // The session has connected for the first time, or it has
            // been reconnected.
            reconnectionStrategy.Retries = 0;

            WriteLine("The session has connected.");
        }

        if (e.OldState == SessionState.RECOVERING_RECONNECT)
        {
            // The session has left recovery state. It may either be
            // attempting to reconnect, or the attempt has been aborted;
            // this will be reflected in the newState.
            if (e.NewState == SessionState.CONNECTED_ACTIVE)
            {
                // Ported: say so, with the session id (the same as before the disconnection).
                WriteLine($"The session has reconnected (session id {((ISession)sender).SessionId}).");
            }
        }

        if (e.NewState == SessionState.CLOSED_BY_CLIENT)
        {
            WriteLine("The session has been closed.");
        }
    }

    /// <summary>
    /// A reconnection strategy that gets applied after the connection failure notification.
    /// </summary>
    private class ReconnectionStrategy : IReconnectionStrategy
    {
        public int Retries { get; set; }

        // Set the maximum interval between reconnect attempts to 60 seconds.
        private long maximumAttemptInterval = 1000 * 60;

        public ReconnectionStrategy() => Retries = 0;

        public async Task PerformReconnection(IReconnectionAttempt reconnection)
        {
            long wait = Math.Min((long)Math.Pow(2, Retries++) * 100L, maximumAttemptInterval);

            await Task.Delay(TimeSpan.FromMilliseconds(wait));

            WriteLine("Attempting to reconnect...");

            reconnection.Start();
        }
    }

    public static void Main(string[] args)
    {
        new SessionReconnection(args.Length > 0 ? args[0] : "ws://localhost:8080");
    }
}
