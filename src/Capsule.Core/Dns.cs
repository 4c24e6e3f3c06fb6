using System.Buffers.Binary;

namespace Capsule.Core;

/// <summary>Why the DNS server dropped a datagram unanswered. Each drop is counted under one reason.</summary>
public enum DnsDrop
{
    None = 0,
    /// <summary>Shorter than a header and the smallest question.</summary>
    TooShort,
    /// <summary>Longer than a plain UDP query may be (512 bytes).</summary>
    TooLong,
    /// <summary>The response bit is set: a reply, or a reflection attempt.</summary>
    NotAQuery,
    /// <summary>An opcode other than a standard query (notify, update, ...).</summary>
    NotStandardQuery,
    /// <summary>Not exactly one question.</summary>
    NotOneQuestion,
    /// <summary>Answer or authority records, or more than one additional record (EDNS's OPT).</summary>
    HasRecords,
    /// <summary>The header passed but the protocol library could not read the message.</summary>
    Unparsable,
}

/// <summary>What the server does with one question.</summary>
public enum DnsAnswerKind
{
    /// <summary>An A record: the capsule's locator.</summary>
    Address,
    /// <summary>A PTR record: the capsule's name in the cluster domain.</summary>
    Pointer,
    /// <summary>The name exists, but has no record of the type asked (NOERROR, no answer).</summary>
    NoData,
    /// <summary>A name in the cluster domain or the pool's reverse zone that no capsule holds (NXDOMAIN).</summary>
    NameError,
    /// <summary>Not a capsule name: the host's resolvers answer it.</summary>
    Forward,
    /// <summary>Not a capsule name and no resolver to ask: REFUSED at once rather than a timeout.</summary>
    Refuse,
}

public readonly record struct DnsAnswer(DnsAnswerKind Kind, Locator Address = default, string? Name = null);

/// <summary>
/// Capsule names in DNS (seed Fig. 7: a capsule looks up another's locator in the directory as hosts
/// use DNS), with no I/O: which questions are well formed enough to read, the answer to one from a
/// directory state, and the bound on an answer's size. The agent's server parses and encodes with a
/// DNS library and asks these.
/// </summary>
public static class CapsuleDns
{
    public const string DefaultDomain = "capsule.internal";
    /// <summary>
    /// Answers are read from the agent's current table; a resolver's cache keeps them a second at most.
    /// </summary>
    public const int TtlSeconds = 1;
    public const int HeaderSize = 12;
    /// <summary>A header and the smallest question: the root name (1 byte), type and class.</summary>
    public const int MinQuery = HeaderSize + 5;
    public const int MaxQuery = 512;
    /// <summary>No UDP answer is larger than this many times its query: the server amplifies no attack.</summary>
    public const int MaxAmplification = 3;

    const ushort TypeA = 1;
    const ushort TypePtr = 12;
    const ushort TypeAny = 255;
    const string ReverseSuffix = ".in-addr.arpa";

    /// <summary>Header checks before anything else reads the datagram; never throws.</summary>
    public static DnsDrop Check(ReadOnlySpan<byte> query)
    {
        if (query.Length < MinQuery) return DnsDrop.TooShort;
        if (query.Length > MaxQuery) return DnsDrop.TooLong;
        var flags = BinaryPrimitives.ReadUInt16BigEndian(query[2..]);
        if ((flags & 0x8000) != 0) return DnsDrop.NotAQuery;
        if (((flags >> 11) & 0xF) != 0) return DnsDrop.NotStandardQuery;
        if (BinaryPrimitives.ReadUInt16BigEndian(query[4..]) != 1) return DnsDrop.NotOneQuestion;
        var answers = BinaryPrimitives.ReadUInt16BigEndian(query[6..]);
        var authority = BinaryPrimitives.ReadUInt16BigEndian(query[8..]);
        var additional = BinaryPrimitives.ReadUInt16BigEndian(query[10..]);
        return answers != 0 || authority != 0 || additional > 1 ? DnsDrop.HasRecords : DnsDrop.None;
    }

    /// <summary>
    /// The answer to <paramref name="qname"/> (any case, with or without the final dot) of type
    /// <paramref name="qtype"/>. A capsule's name is answered in the cluster domain and also as a single label,
    /// so `web` resolves in a capsule whose resolver has no search list.
    /// </summary>
    public static DnsAnswer Answer(DirectoryState state, string domain, string qname, ushort qtype, bool canForward)
    {
        var name = qname.TrimEnd('.').ToLowerInvariant();
        var elsewhere = new DnsAnswer(canForward ? DnsAnswerKind.Forward : DnsAnswerKind.Refuse);
        if (name.EndsWith(ReverseSuffix, StringComparison.Ordinal))
            return Reverse(state, domain, name, qtype) ?? elsewhere;
        if (name == domain) return new(DnsAnswerKind.NoData);
        var inDomain = name.EndsWith("." + domain, StringComparison.Ordinal);
        var label = inDomain ? name[..^(domain.Length + 1)] : name;
        if (!label.Contains('.') && state.Capsules.TryGetValue(label, out var c))
            return qtype is TypeA or TypeAny ? new(DnsAnswerKind.Address, c.Locator) : new(DnsAnswerKind.NoData);
        return inDomain ? new(DnsAnswerKind.NameError) : elsewhere;
    }

    /// <summary>The pool's reverse zone is the directory's; other addresses are someone else's (null).</summary>
    static DnsAnswer? Reverse(DirectoryState state, string domain, string name, ushort qtype)
    {
        if (!TryParsePtr(name, out var address) || !state.Pool.Contains(address)) return null;
        foreach (var c in state.Capsules.Values)
            if (c.Locator == address)
                return qtype is TypePtr or TypeAny
                    ? new(DnsAnswerKind.Pointer, address, $"{c.Name}.{domain}")
                    : new(DnsAnswerKind.NoData);
        return new(DnsAnswerKind.NameError);
    }

    /// <summary>The reverse name of an address: 2.0.64.100.in-addr.arpa for 100.64.0.2.</summary>
    public static string PtrName(Locator l) =>
        $"{l.Value & 0xFF}.{(l.Value >> 8) & 0xFF}.{(l.Value >> 16) & 0xFF}.{l.Value >> 24}{ReverseSuffix}";

    /// <summary>An address from a reverse name of exactly four decimal labels (no trailing dot).</summary>
    public static bool TryParsePtr(string name, out Locator address)
    {
        address = default;
        if (!name.EndsWith(ReverseSuffix, StringComparison.OrdinalIgnoreCase)) return false;
        var parts = name[..^ReverseSuffix.Length].Split('.');
        if (parts.Length != 4) return false;
        Array.Reverse(parts);
        return Locator.TryParse(string.Join('.', parts), out address);
    }

    /// <summary>
    /// Whether an answer of <paramref name="response"/> bytes may go out for a query of <paramref name="query"/>.
    /// </summary>
    public static bool Fits(int query, int response) => response <= query * MaxAmplification;

    /// <summary>
    /// What goes out instead of an answer too large for its query: the answer's header alone, truncated
    /// (TC) and with no records, which tells the client to ask again over TCP. Never longer than a query.
    /// </summary>
    public static byte[] Truncated(ReadOnlySpan<byte> response)
    {
        var header = new byte[HeaderSize];
        response[..Math.Min(HeaderSize, response.Length)].CopyTo(header);
        header[2] |= 0x82; // QR: a response; TC: truncated
        header.AsSpan(4).Clear();
        return header;
    }
}

/// <summary>The DNS server's counts: answers by kind and drops by reason. Written from any thread.</summary>
public sealed class DnsCounters
{
    readonly long[] _answers = new long[Enum.GetValues<DnsAnswerKind>().Length];
    readonly long[] _drops = new long[Enum.GetValues<DnsDrop>().Length];
    long _truncated;

    public static IReadOnlyList<DnsDrop> Reasons { get; } =
        [.. Enum.GetValues<DnsDrop>().Where(r => r != DnsDrop.None)];
    public static IReadOnlyList<DnsAnswerKind> Kinds { get; } = Enum.GetValues<DnsAnswerKind>();

    public void Count(DnsDrop reason) => Interlocked.Increment(ref _drops[(int)reason]);
    public void Count(DnsAnswerKind kind) => Interlocked.Increment(ref _answers[(int)kind]);
    public void CountTruncated() => Interlocked.Increment(ref _truncated);

    public long this[DnsDrop reason] => Volatile.Read(ref _drops[(int)reason]);
    public long this[DnsAnswerKind kind] => Volatile.Read(ref _answers[(int)kind]);
    public long Truncations => Volatile.Read(ref _truncated);

    /// <summary>The label a metric shows: NotAQuery → not_a_query.</summary>
    public static string Key<T>(T value) where T : struct, Enum =>
        string.Concat(value.ToString().Select((ch, i) =>
            char.IsUpper(ch) && i > 0 ? "_" + char.ToLowerInvariant(ch) : char.ToLowerInvariant(ch).ToString()));
}
