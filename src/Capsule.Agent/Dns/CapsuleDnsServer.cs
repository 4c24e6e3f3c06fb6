using System.Net;
using ARSoft.Tools.Net;
using ARSoft.Tools.Net.Dns;
using Capsule.Agent.Linux;
using Capsule.Core;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent.Dns;

/// <summary>
/// Every agent answers DNS for capsule names from its own view of the directory (the table its watch keeps),
/// so a name follows its capsule the moment the watch hears of a move. It listens on the capsules' next hop,
/// which only capsules of this host reach (the host's filter lets port 53 through to it alone and sends every
/// capsule's DNS there); a gateway also listens on its ordinary hosts' side, for the pool's names.
/// Other names go to the host's resolvers, or are refused at once when none can be reached.
/// </summary>
internal sealed partial class CapsuleDnsServer(AgentOptions options, DataPlaneHost dataPlane,
    ILogger<CapsuleDnsServer> log) : IHostedService, IDisposable
{
    public const int Port = 53;
    DnsServer? _server;
    readonly DnsForwarders _forwarders = new();

    public DnsCounters Counters { get; } = new();
    public string Domain { get; } = CapsuleDns.DefaultDomain;

    public Task StartAsync(CancellationToken ct)
    {
        List<IPEndPoint> endpoints = [new(IPAddress.Parse(HostNetwork.CapsuleGateway), Port)];
        if (options.IcmpFrom.Length > 0 && options.Serves.Length > 0)
            endpoints.Add(new(options.IcmpSource.ToAddress(), Port));
        var transports = endpoints.Select(e => (IServerTransport)new DnsTransport(e, Counters)).ToArray();
        _server = new DnsServer(transports);
        _server.QueryReceived += OnQueryAsync;
        _server.ExceptionThrown += (_, e) =>
        {
            LogFailed(log, e.Exception.Message);
            return Task.CompletedTask;
        };
        try
        {
            _server.Start();
        }
        catch (System.Net.Sockets.SocketException e)
        {
            // The agent still carries its capsules' traffic; only their names go unanswered.
            var where = string.Join(", ", endpoints);
            LogFailed(log, $"cannot listen on {where}: {e.Message}; capsule names go unanswered");
            return Task.CompletedTask;
        }
        LogListening(log, string.Join(", ", endpoints), Domain, _forwarders.Describe());
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken ct)
    {
        _server?.Stop();
        return Task.CompletedTask;
    }

    public void Dispose() => ((IDisposable?)_server)?.Dispose();

    async Task OnQueryAsync(object sender, QueryReceivedEventArgs e)
    {
        if (e.Query is not DnsMessage query || query.Questions.Count != 1) return;
        var question = query.Questions[0];
        var reachable = _forwarders.Reachable();
        var canForward = reachable.Count > 0;
        var answer = dataPlane.State is { } state
            ? CapsuleDns.Answer(state, Domain, question.Name.ToString(), (ushort)question.RecordType, canForward)
            : new DnsAnswer(canForward ? DnsAnswerKind.Forward : DnsAnswerKind.Refuse);
        Counters.Count(answer.Kind);
        e.Response = answer.Kind == DnsAnswerKind.Forward
            ? await ForwardAsync(query, reachable)
            : Respond(query, question, answer);
    }

    static DnsMessage Respond(DnsMessage query, DnsQuestion question, DnsAnswer answer)
    {
        var r = query.CreateResponseInstance();
        r.IsRecursionAllowed = true;
        r.IsAuthoritiveAnswer = answer.Kind is not DnsAnswerKind.Refuse;
        r.ReturnCode = answer.Kind switch
        {
            DnsAnswerKind.NameError => ReturnCode.NxDomain,
            DnsAnswerKind.Refuse => ReturnCode.Refused,
            _ => ReturnCode.NoError,
        };
        if (answer.Kind == DnsAnswerKind.Address)
            r.AnswerRecords.Add(new ARecord(question.Name, CapsuleDns.TtlSeconds, answer.Address.ToAddress()));
        else if (answer.Kind == DnsAnswerKind.Pointer)
            r.AnswerRecords.Add(new PtrRecord(question.Name, CapsuleDns.TtlSeconds, DomainName.Parse(answer.Name!)));
        return r;
    }

    /// <summary>The host's resolvers answer; a failure there is a server failure, never silence.</summary>
    static async Task<DnsMessage> ForwardAsync(DnsMessage query, IReadOnlyList<IPAddress> servers)
    {
        var client = new DnsClient(servers, DnsForwarders.TimeoutMs);
        var question = query.Questions[0];
        var upstream = await client.ResolveAsync(question.Name, question.RecordType, question.RecordClass);
        if (upstream is null)
        {
            var failed = query.CreateResponseInstance();
            failed.ReturnCode = ReturnCode.ServerFailure;
            return failed;
        }
        upstream.TransactionID = query.TransactionID;
        return upstream;
    }

    [LoggerMessage(EventId = 360, Level = LogLevel.Information,
        Message = "DNS for capsule names on {Endpoints} (domain {Domain}); other names: {Forwarders}")]
    static partial void LogListening(ILogger logger, string endpoints, string domain, string forwarders);

    [LoggerMessage(EventId = 361, Level = LogLevel.Warning, Message = "DNS server: {Error}")]
    static partial void LogFailed(ILogger logger, string error);
}
