namespace Capsule.Lab.Tests;

/// <summary>Small UDP programs (python3 -c) for the tests that count what reaches a capsule.</summary>
public static class UdpScripts
{
    /// <summary>Prints READY once bound to <paramref name="port"/>, then "GOT payload" for each datagram.</summary>
    public static string Echo(int port) => $$"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", {{port}}))
        print("READY", flush=True)
        while True:
            d, a = s.recvfrom(100)
            print("GOT", d.decode(), flush=True)
        """;

    /// <summary>Numbered datagrams to <paramref name="port"/>: argv 1 the address, 2 the prefix, 3 how many.</summary>
    public static string Send(int port) => $$"""
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(int(sys.argv[3])):
            s.sendto((sys.argv[2] + str(i)).encode(), (sys.argv[1], {{port}}))
        """;
}
