using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Capsule.Trust;

/// <summary>
/// Writing and reading PEM files. A private key's file is made with mode 0600 by the open call itself
/// (O_CREAT with that mode), so there is no moment at which another user could open it before a chmod.
/// </summary>
public static class KeyFiles
{
    const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    const UnixFileMode Public = Private | UnixFileMode.GroupRead | UnixFileMode.OtherRead;

    /// <summary>Writes a private key as PKCS#8 PEM into a new file readable by its owner only.</summary>
    public static void WriteKey(string path, ECDsa key) => WriteNew(path, key.ExportPkcs8PrivateKeyPem(), Private);

    /// <summary>Writes a certificate as PEM into a new file (certificates are public).</summary>
    public static void WriteCert(string path, X509Certificate2 cert) =>
        WriteNew(path, cert.ExportCertificatePem(), Public);

    static void WriteNew(string path, string pem, UnixFileMode mode)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = mode;
        using var w = new StreamWriter(path, System.Text.Encoding.ASCII, options);
        w.Write(pem);
    }

    /// <summary>A certificate file (PEM), with a sentence naming the file when it is missing or not one.</summary>
    public static X509Certificate2 ReadCert(string path, string what)
    {
        if (!File.Exists(path)) throw new TrustException($"{what} {path} does not exist");
        try
        {
            return X509Certificate2.CreateFromPem(File.ReadAllText(path)); // a certificate alone, no key
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            throw new TrustException($"{what} {path} is not a PEM certificate: {e.Message}");
        }
    }

    /// <summary>A certificate with its private key, from two PEM files.</summary>
    public static X509Certificate2 ReadCertWithKey(string certPath, string keyPath, string what)
    {
        if (!File.Exists(certPath)) throw new TrustException($"{what} certificate {certPath} does not exist");
        if (!File.Exists(keyPath)) throw new TrustException($"{what} key {keyPath} does not exist");
        try
        {
            return X509Certificate2.CreateFromPemFile(certPath, keyPath);
        }
        catch (CryptographicException e)
        {
            // The message says what is wrong with the files (never the key's contents).
            throw new TrustException($"{what} certificate {certPath} and key {keyPath} do not make a pair of " +
                $"PEM files: {e.Message}");
        }
    }
}

/// <summary>A problem with the cluster's certificates that a person can fix; its message says how.</summary>
public sealed class TrustException(string message) : Exception(message);
