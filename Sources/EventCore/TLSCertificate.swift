// TLSCertificate.swift - make certificates at run time: throwaway server identities and test CAs
//
// `carrier sink --tls-self-signed` needs a certificate nobody has to provide,
// and the TLS tests need a whole small PKI made fresh on each run: a CA, a
// valid leaf, an expired leaf, a leaf for another name, a self-signed leaf.
// Keys are EC P-256, signatures SHA-256, validity given in seconds from now
// (negative for the past), so every case is one call.

#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import CCarrierShims

/// A certificate and its private key, as PEM text.
///
/// A value: it holds no OpenSSL objects, so it can be stored, sent between
/// threads and written to files freely.
public struct TLSCertificate: Sendable, Equatable {
    /// The certificate, PEM encoded.
    public let certificatePEM: String
    /// The private key, PEM encoded (PKCS#8, unencrypted).
    public let privateKeyPEM: String

    public init(certificatePEM: String, privateKeyPEM: String) {
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
    }

    /// makeAuthority - a self-signed CA certificate that can issue others.
    public static func makeAuthority(commonName: String, validForSeconds: Int = 86_400) throws(TLSError) -> TLSCertificate {
        try make(commonName: commonName, dnsNames: [], ipAddresses: [], isAuthority: true,
                 notBefore: -3600, notAfter: validForSeconds, issuer: nil)
    }

    /// makeSelfSigned - a self-signed server certificate (not a CA) for the given names.
    public static func makeSelfSigned(
        commonName: String, dnsNames: [String] = [], ipAddresses: [String] = [], validForSeconds: Int = 86_400 * 365
    ) throws(TLSError) -> TLSCertificate {
        try make(commonName: commonName, dnsNames: dnsNames, ipAddresses: ipAddresses, isAuthority: false,
                 notBefore: -3600, notAfter: validForSeconds, issuer: nil)
    }

    /// issue - a leaf certificate signed by this (authority) certificate.
    ///
    /// `notBefore` and `notAfter` are seconds relative to now; an expired
    /// certificate is `notBefore: -7200, notAfter: -3600`.
    public func issue(
        commonName: String, dnsNames: [String] = [], ipAddresses: [String] = [],
        notBefore: Int = -3600, notAfter: Int = 86_400
    ) throws(TLSError) -> TLSCertificate {
        try TLSCertificate.make(commonName: commonName, dnsNames: dnsNames, ipAddresses: ipAddresses,
                                isAuthority: false, notBefore: notBefore, notAfter: notAfter, issuer: self)
    }

    /// write - store the certificate and key as PEM files (the key readable by the owner only).
    public func write(certificateTo certificatePath: String, privateKeyTo keyPath: String) throws(IOError) {
        try writeFile(certificatePath, certificatePEM, mode: 0o644)
        try writeFile(keyPath, privateKeyPEM, mode: 0o600)
    }

    /// make - build, extend and sign one certificate.
    private static func make(
        commonName: String, dnsNames: [String], ipAddresses: [String], isAuthority: Bool,
        notBefore: Int, notAfter: Int, issuer: TLSCertificate?
    ) throws(TLSError) -> TLSCertificate {
        guard let key = carrier_EVP_EC_gen("P-256") else { throw .configurationFromQueue("generating an EC key") }
        defer { EVP_PKEY_free(key) }
        guard let certificate = X509_new() else { throw .configurationFromQueue("X509_new") }
        defer { X509_free(certificate) }

        /* Version 3, a random positive serial, the validity window, the subject. */
        X509_set_version(certificate, 2)
        var serial: UInt32 = 0
        withUnsafeMutableBytes(of: &serial) { _ = RAND_bytes($0.baseAddress, 4) }
        ASN1_INTEGER_set(X509_get_serialNumber(certificate), Int(serial & 0x7fff_ffff))
        X509_gmtime_adj(X509_getm_notBefore(certificate), notBefore)
        X509_gmtime_adj(X509_getm_notAfter(certificate), notAfter)
        X509_set_pubkey(certificate, key)
        let subject = X509_get_subject_name(certificate)
        X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, commonName, -1, -1, 0)

        /* Self-signed: we are our own issuer. Otherwise load the issuer to sign with. */
        var issuerCertificate: OpaquePointer? = nil
        var signingKey = key
        if let issuer {
            issuerCertificate = try PEM.certificates(issuer.certificatePEM)[0]
            signingKey = try PEM.privateKey(issuer.privateKeyPEM)
        }
        defer {
            if let issuerCertificate { X509_free(issuerCertificate) }
            if signingKey != key { EVP_PKEY_free(signingKey) }
        }
        X509_set_issuer_name(certificate, X509_get_subject_name(issuerCertificate ?? certificate))

        var context = X509V3_CTX()
        X509V3_set_ctx(&context, issuerCertificate ?? certificate, certificate, nil, nil, 0)
        var extensions: [(Int32, String)] = [
            (NID_basic_constraints, isAuthority ? "critical,CA:TRUE" : "critical,CA:FALSE"),
            (NID_key_usage, isAuthority ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyEncipherment"),
            (NID_subject_key_identifier, "hash"),
        ]
        if issuer != nil { extensions.append((NID_authority_key_identifier, "keyid:always")) }
        if !isAuthority { extensions.append((NID_ext_key_usage, "serverAuth,clientAuth")) }
        let names = dnsNames.map { "DNS:\($0)" } + ipAddresses.map { "IP:\($0)" }
        if !names.isEmpty { extensions.append((NID_subject_alt_name, names.joined(separator: ","))) }
        for (nid, value) in extensions {
            guard let ext = X509V3_EXT_conf_nid(nil, &context, nid, value) else {
                throw .configurationFromQueue("certificate extension \(value)")
            }
            X509_add_ext(certificate, ext, -1)
            X509_EXTENSION_free(ext)
        }
        if X509_sign(certificate, signingKey, EVP_sha256()) == 0 {
            throw .configurationFromQueue("signing the certificate")
        }
        return TLSCertificate(certificatePEM: try pem { PEM_write_bio_X509($0, certificate) },
                              privateKeyPEM: try pem { PEM_write_bio_PrivateKey($0, key, nil, nil, 0, nil, nil) })
    }

    /// pem - run a PEM writer into a memory BIO and return the text.
    private static func pem(_ writer: (OpaquePointer) -> Int32) throws(TLSError) -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw .configurationFromQueue("BIO_new") }
        defer { BIO_free(bio) }
        if writer(bio) != 1 { throw .configurationFromQueue("PEM encoding") }
        return PEM.drain(bio)
    }
}

/// writeFile - create or replace a file with `text`, with the given permission bits.
///
/// The mode is set with fchmod as well: open() applies it only to a new file,
/// and an existing key file must not stay readable by others.
private func writeFile(_ path: String, _ text: String, mode: mode_t) throws(IOError) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    if fd < 0 { throw IOError(-errno, "open \(path)") }
    defer { close(fd) }
    if fchmod(fd, mode) != 0 { throw IOError(-errno, "fchmod \(path)") }
    let bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
        if written < 0 {
            if errno == EINTR { continue }
            throw IOError(-errno, "write \(path)")
        }
        done += written
    }
}
