using System.Buffers.Binary;

namespace Capsule.Core.Tests;

/// <summary>
/// The pure parts of the agents' DNS server (issue 15): which datagrams are read at all, the answer to a
/// question from a directory state, reverse names, and the bound on an answer's size (no amplification).
/// </summary>
public class DnsTests
{
    const string Domain = CapsuleDns.DefaultDomain;
    const ushort A = 1, Ptr = 12, Aaaa = 28, Any = 255;

    static readonly Gen<string> Label = Gen.Select(Gen.Char['a', 'z'], Gen.String[Gen.Char["abcxyz019-"], 0, 12])
        .Select((c, s) => c + s);

    /// <summary>A state holding the capsules named, on h1 or h2, in any state.</summary>
    static DirectoryState With(IEnumerable<string> names)
    {
        var s = Dir.WithHosts(null, Dir.H1, Dir.H2);
        var i = 0;
        foreach (var n in names.Distinct())
            s = s.AllocateCapsule(n, i++ % 2 == 0 ? "h1" : "h2").Ok();
        return s;
    }

    static readonly Gen<DirectoryState> States = Label.Array[0, 8].Select(With);

    /// <summary>A well-formed query: header, one question of labels, type and class; EDNS's OPT or not.</summary>
    internal static byte[] Query(ushort id, string name, ushort type, bool edns = false)
    {
        var q = new List<byte>();
        void U16(ushort v) => q.AddRange([(byte)(v >> 8), (byte)v]);
        U16(id);
        U16(0x0100); // a standard query, recursion desired
        U16(1);
        U16(0);
        U16(0);
        U16(edns ? (ushort)1 : (ushort)0);
        foreach (var l in name.TrimEnd('.').Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            q.Add((byte)l.Length);
            q.AddRange(l.Select(c => (byte)c));
        }
        q.Add(0);
        U16(type);
        U16(1);
        if (edns) q.AddRange([0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        return [.. q];
    }

    [Fact]
    public void Any_bytes_are_checked_without_throwing_and_only_plain_queries_pass() =>
        Gen.Byte.Array[0, 600].Sample(b =>
        {
            var drop = CapsuleDns.Check(b);
            if (drop != DnsDrop.None) return;
            Assert.InRange(b.Length, CapsuleDns.MinQuery, CapsuleDns.MaxQuery);
            var flags = BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(2));
            Assert.Equal(0, flags & 0xF800); // QR clear, opcode QUERY
            Assert.Equal(1, BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(4)));
            Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(6)));
        }, iter: 20_000);

    [Fact]
    public void Well_formed_queries_pass_and_each_kind_of_malformed_one_is_dropped_for_its_reason() =>
        Gen.Select(Gen.UShort, Label.Array[1, 4], Gen.Bool).Sample((id, labels, edns) =>
        {
            var q = Query(id, string.Join('.', labels), A, edns);
            Assert.Equal(DnsDrop.None, CapsuleDns.Check(q));
            Assert.Equal(DnsDrop.TooShort, CapsuleDns.Check(q.AsSpan(0, CapsuleDns.MinQuery - 1)));
            Assert.Equal(DnsDrop.TooLong, CapsuleDns.Check([.. q, .. new byte[CapsuleDns.MaxQuery]]));
            Assert.Equal(DnsDrop.NotAQuery, CapsuleDns.Check(Set(q, 2, (byte)(q[2] | 0x80))));
            Assert.Equal(DnsDrop.NotStandardQuery, CapsuleDns.Check(Set(q, 2, (byte)(q[2] | 0x28))));
            Assert.Equal(DnsDrop.NotOneQuestion, CapsuleDns.Check(Set(q, 5, 2)));
            Assert.Equal(DnsDrop.HasRecords, CapsuleDns.Check(Set(q, 7, 1)));
            Assert.Equal(DnsDrop.HasRecords, CapsuleDns.Check(Set(q, 11, 2)));
        });

    static byte[] Set(byte[] b, int at, byte value)
    {
        var c = (byte[])b.Clone();
        c[at] = value;
        return c;
    }

    [Fact]
    public void A_capsule_name_answers_its_locator_in_the_domain_and_as_a_single_label_in_any_case() =>
        Gen.Select(States, Gen.Bool, Gen.Bool).Sample((s, upper, dot) =>
        {
            foreach (var c in s.Capsules.Values)
            {
                foreach (var n in (string[])[c.Name, $"{c.Name}.{Domain}"])
                {
                    var name = (upper ? n.ToUpperInvariant() : n) + (dot ? "." : "");
                    Assert.Equal(new DnsAnswer(DnsAnswerKind.Address, c.Locator),
                        CapsuleDns.Answer(s, Domain, name, A, canForward: true));
                    // Another type of a name that exists: no data, never "no such name" (that would stop
                    // a resolver asking A and AAAA together).
                    Assert.Equal(DnsAnswerKind.NoData, CapsuleDns.Answer(s, Domain, name, Aaaa, true).Kind);
                }
            }
        });

    [Fact]
    public void Other_names_are_forwarded_or_refused_and_unknown_ones_in_the_domain_do_not_exist() =>
        Gen.Select(States, Label.Array[1, 3], Gen.Bool).Sample((s, labels, canForward) =>
        {
            var name = string.Join('.', labels);
            var inDomain = CapsuleDns.Answer(s, Domain, $"{name}.{Domain}", A, canForward);
            var outside = CapsuleDns.Answer(s, Domain, $"{name}.example", Any, canForward);
            var expected = canForward ? DnsAnswerKind.Forward : DnsAnswerKind.Refuse;
            Assert.Equal(expected, outside.Kind);
            if (!s.Capsules.ContainsKey(name)) Assert.Equal(DnsAnswerKind.NameError, inDomain.Kind);
        });

    [Fact]
    public void Reverse_names_round_trip_and_the_pool_reverse_zone_is_answered_from_the_directory() =>
        Gen.Select(States, Gen.UInt, Gen.Bool).Sample((s, raw, canForward) =>
        {
            var l = new Locator(raw);
            Assert.True(CapsuleDns.TryParsePtr(CapsuleDns.PtrName(l), out var back));
            Assert.Equal(l, back);
            var answer = CapsuleDns.Answer(s, Domain, CapsuleDns.PtrName(l) + ".", Ptr, canForward);
            var holder = s.Capsules.Values.FirstOrDefault(c => c.Locator == l);
            if (holder is not null)
                Assert.Equal(new DnsAnswer(DnsAnswerKind.Pointer, l, $"{holder.Name}.{Domain}"), answer);
            else if (s.Pool.Contains(l)) Assert.Equal(DnsAnswerKind.NameError, answer.Kind);
            else Assert.Equal(canForward ? DnsAnswerKind.Forward : DnsAnswerKind.Refuse, answer.Kind);
            foreach (var c in s.Capsules.Values)
                Assert.Equal(DnsAnswerKind.Pointer, CapsuleDns.Answer(s, Domain, CapsuleDns.PtrName(c.Locator),
                    Ptr, canForward).Kind);
        });

    [Fact]
    public void Reverse_name_parsing_takes_only_four_decimal_labels_and_never_throws() =>
        Gen.String[Gen.Char["0123456789.-ax"], 0, 20].Sample(prefix =>
        {
            var name = prefix + ".in-addr.arpa";
            if (CapsuleDns.TryParsePtr(name, out var l)) Assert.Equal(name, CapsuleDns.PtrName(l));
        });

    [Fact]
    public void What_goes_out_for_an_answer_too_large_is_a_truncated_header_no_larger_than_any_query() =>
        Gen.Select(Gen.Byte.Array[0, 4096], Gen.Int[CapsuleDns.MinQuery, CapsuleDns.MaxQuery]).Sample((r, q) =>
        {
            var sent = CapsuleDns.Fits(q, r.Length) ? r : CapsuleDns.Truncated(r);
            Assert.True(sent.Length <= q * CapsuleDns.MaxAmplification);
            if (sent == r) return;
            Assert.Equal(CapsuleDns.HeaderSize, sent.Length);
            if (r.Length >= 2) Assert.Equal(r[..2], sent[..2]); // the client's id, so it takes the answer
            Assert.Equal(0x82, sent[2] & 0x82); // a response, truncated
            Assert.All(sent[4..], b => Assert.Equal(0, b)); // no records at all
        });

    [Fact]
    public void Every_drop_and_answer_is_counted_under_its_own_key()
    {
        var counters = new DnsCounters();
        foreach (var r in DnsCounters.Reasons) counters.Count(r);
        foreach (var k in DnsCounters.Kinds) counters.Count(k);
        Assert.All(DnsCounters.Reasons, r => Assert.Equal(1, counters[r]));
        Assert.All(DnsCounters.Kinds, k => Assert.Equal(1, counters[k]));
        Assert.DoesNotContain(DnsDrop.None, DnsCounters.Reasons);
        var keys = DnsCounters.Reasons.Select(DnsCounters.Key).Concat(DnsCounters.Kinds.Select(DnsCounters.Key));
        Assert.Equal(keys.Count(), keys.Distinct().Count());
        Assert.Equal("not_a_query", DnsCounters.Key(DnsDrop.NotAQuery));
    }
}
