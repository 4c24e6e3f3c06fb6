using System.Buffers.Binary;

namespace Capsule.Core.Offload;

/// <summary>
/// The header a TUN opened with IFF_VNET_HDR puts before every packet it reads and expects before every packet
/// written (struct virtio_net_hdr, include/uapi/linux/virtio_net.h; little-endian on this kind of machine). With
/// offloads on (TUNSETOFFLOAD) the kernel hands over a TCP "super-packet" of up to 64 KiB that is to be cut into
/// segments of <see cref="GsoSize"/> payload bytes, its checksum left for us to complete; written back, it lets
/// us hand the kernel one such packet for many segments received.
/// </summary>
public readonly record struct VirtioNetHeader(byte Flags, byte GsoType, ushort HdrLen, ushort GsoSize,
    ushort CsumStart, ushort CsumOffset)
{
    public const int Size = 10;

    /// <summary>The checksum at CsumStart + CsumOffset is to be completed over [CsumStart, end).</summary>
    public const byte NeedsCsum = 1;

    public const byte GsoNone = 0, GsoTcpV4 = 1, GsoUdp = 3, GsoTcpV6 = 4, GsoUdpL4 = 5, GsoEcn = 0x80;

    public bool NeedsChecksum => (Flags & NeedsCsum) != 0;

    /// <summary>The kind of segmentation asked for, without the ECN bit.</summary>
    public byte Gso => (byte)(GsoType & ~GsoEcn);

    public static VirtioNetHeader Read(ReadOnlySpan<byte> b) => new(b[0], b[1],
        BinaryPrimitives.ReadUInt16LittleEndian(b[2..]), BinaryPrimitives.ReadUInt16LittleEndian(b[4..]),
        BinaryPrimitives.ReadUInt16LittleEndian(b[6..]), BinaryPrimitives.ReadUInt16LittleEndian(b[8..]));

    public void Write(Span<byte> b)
    {
        b[0] = Flags;
        b[1] = GsoType;
        BinaryPrimitives.WriteUInt16LittleEndian(b[2..], HdrLen);
        BinaryPrimitives.WriteUInt16LittleEndian(b[4..], GsoSize);
        BinaryPrimitives.WriteUInt16LittleEndian(b[6..], CsumStart);
        BinaryPrimitives.WriteUInt16LittleEndian(b[8..], CsumOffset);
    }

    /// <summary>A packet that is whole as it is: no segmentation, its checksums complete.</summary>
    public static VirtioNetHeader Plain => default;
}
