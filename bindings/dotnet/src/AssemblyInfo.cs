using System.Runtime.CompilerServices;

// The test program checks the mapping of every C ABI error code to its exception (Errors.Take)
// without having to provoke each one end to end.
[assembly: InternalsVisibleTo("Tether.Tests")]
