using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// Where the hot path meets the keys (<see cref="PeerKeys"/>): every datagram is sealed for the host it
/// goes to and opened, tag and counter checked, before anything in it is believed (docs/wire-format.md).
/// </summary>
internal sealed unsafe partial class Engine
{
    /// <summary>
    /// Lane <paramref name="l"/>'s egress thread: wraps the packet at <paramref name="slot"/> + header size for
    /// <paramref name="host"/>; <paramref name="datagram"/> is what to send from the slot's start.
    /// </summary>
    DropReason Seal(Lane l, Locator host, byte* slot, int packetLength, uint epoch, out int datagram) =>
        _keys.Seal(host, new Span<byte>(slot, PacketBatch.SlotSize), packetLength, epoch, out datagram, l.Index);

    /// <summary>
    /// Lane <paramref name="l"/>'s ingress thread: who sent it, its header, its key, counter and tag, then the inner
    /// packet's rules.
    /// <paramref name="packetLength"/>: the inner packet's length once it is authentic (plain after the header).
    /// </summary>
    DropReason Open(Lane l, TranslationTable table, Locator from, byte* slot, int length, out int packetLength)
    {
        packetLength = 0;
        // Who sent it is checked before anything in it is believed.
        if (!table.IsKnownHost(from)) return DropReason.UnknownHost;
        var datagram = new Span<byte>(slot, length);
        var r = Wire.TryReadHeader(datagram, out Wire.Header header);
        if (r != DropReason.None) return r;
        if (length < Wire.HeaderSize + Wire.TagSize) return DropReason.Malformed;
        r = _keys.Open(from, header, datagram, l.Index);
        if (r != DropReason.None) return r;
        packetLength = length - Wire.HeaderSize - Wire.TagSize;
        return Forwarding.Inbound(table, from, datagram[..(length - Wire.TagSize)], out _);
    }
}
