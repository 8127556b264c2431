// TLSContext.swift - OpenSSL SSL_CTX for clients and servers, and the client session cache
//
// One context is built from a configuration once and shared by every
// connection (and every loop thread) that uses those settings; OpenSSL makes
// SSL_CTX safe to share once it is no longer being configured. Client sessions
// are kept per destination ("mx.example.com:25") in a `TLSSessionCache`, so a
// reconnect to the same host resumes instead of doing a full handshake.

import COpenSSL
import CCarrierShims
import Synchronization

/// The lowest TLS version a context accepts.
public enum TLSVersion: Sendable {
    case tls12, tls13

    var openSSL: Int32 { self == .tls12 ? TLS1_2_VERSION : TLS1_3_VERSION }
}

/// Which roots a client trusts.
public enum TLSTrustRoots: Sendable {
    /// The system bundle (`/etc/ssl/certs` via OpenSSL's default paths).
    case system
    /// A PEM file of CA certificates.
    case file(String)
    /// PEM text of CA certificates, e.g. a test authority made at run time.
    case pem(String)
}

/// A certificate and its private key, from files or from memory.
public enum TLSIdentity: Sendable {
    /// A PEM certificate chain file (leaf first) and a PEM key file.
    case files(certificateChain: String, privateKey: String)
    /// A certificate and key in memory (e.g. `TLSCertificate.makeSelfSigned`).
    case pem(TLSCertificate)
}

/// Settings for outgoing TLS connections.
public struct TLSClientConfiguration: Sendable {
    /// Roots to verify the server against.
    public var trustRoots: TLSTrustRoots = .system
    /// Verify the chain and the name. Without it the connection is encrypted but the
    /// peer unauthenticated (SMTP's opportunistic TLS); `peerVerified` still reports the result.
    public var verifyPeer = true
    /// Oldest protocol version offered.
    public var minimumVersion: TLSVersion = .tls12
    /// A client certificate, for relays that authenticate senders by certificate.
    public var identity: TLSIdentity?

    public init() {}
}

/// Settings for accepting TLS connections.
public struct TLSServerConfiguration: Sendable {
    /// The server's certificate and key.
    public var identity: TLSIdentity
    /// Oldest protocol version accepted.
    public var minimumVersion: TLSVersion = .tls12

    public init(identity: TLSIdentity) {
        self.identity = identity
    }
}

/// A configured OpenSSL `SSL_CTX`, client or server side.
///
/// Immutable after creation and shared freely between loop threads: OpenSSL
/// locks the context internally when connections are created from it. That is
/// why it is Sendable; nothing here mutates the context after `init`.
public final class TLSContext: @unchecked Sendable {
    let raw: OpaquePointer                  /* SSL_CTX*, freed in deinit */
    /// True for a context that accepts connections.
    public let isServer: Bool
    /// Client side: whether handshakes fail on an unverified peer.
    public let verifiesPeer: Bool
    /// Distinguishes this context's sessions in a shared `TLSSessionCache`: a
    /// resumed session skips certificate checks, so a session made under one
    /// verification policy must never be offered under another.
    let cacheScope: Int

    private static let scopes = Atomic<Int>(0)

    /// client - a context for outgoing connections.
    public static func client(_ configuration: TLSClientConfiguration = .init()) throws(TLSError) -> TLSContext {
        let context = try TLSContext(server: false, minimumVersion: configuration.minimumVersion, verify: configuration.verifyPeer)
        switch configuration.trustRoots {
        case .system:
            if SSL_CTX_set_default_verify_paths(context.raw) != 1 {
                throw .configurationFromQueue("loading the system CA bundle")
            }
        case .file(let path):
            if SSL_CTX_load_verify_locations(context.raw, path, nil) != 1 {
                throw .configurationFromQueue("loading CA file \(path)")
            }
        case .pem(let text):
            let store = SSL_CTX_get_cert_store(context.raw)
            let certificates = try PEM.certificates(text)
            defer { certificates.forEach { X509_free($0) } }
            for certificate in certificates where X509_STORE_add_cert(store, certificate) != 1 {
                throw .configurationFromQueue("adding a CA certificate")
            }
        }
        if let identity = configuration.identity { try context.use(identity) }
        /* Sessions go to our per-destination cache, never OpenSSL's internal one. */
        _ = carrier_SSL_CTX_set_session_cache_mode(
            context.raw, Int(SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE))
        SSL_CTX_sess_set_new_cb(context.raw, tlsNewSessionCallback)
        return context
    }

    /// server - a context for accepted connections.
    public static func server(_ configuration: TLSServerConfiguration) throws(TLSError) -> TLSContext {
        let context = try TLSContext(server: true, minimumVersion: configuration.minimumVersion, verify: false)
        try context.use(configuration.identity)
        return context
    }

    private init(server: Bool, minimumVersion: TLSVersion, verify: Bool) throws(TLSError) {
        guard let method = server ? TLS_server_method() : TLS_client_method(), let raw = SSL_CTX_new(method) else {
            throw .configurationFromQueue("SSL_CTX_new")
        }
        self.raw = raw
        isServer = server
        verifiesPeer = verify
        cacheScope = TLSContext.scopes.add(1, ordering: .relaxed).newValue
        if carrier_SSL_CTX_set_min_proto_version(raw, minimumVersion.openSSL) != 1 {
            throw .configurationFromQueue("setting the minimum TLS version")
        }
        SSL_CTX_set_verify(raw, !server && verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nil)
    }

    deinit { SSL_CTX_free(raw) }

    /// use - load the certificate and key and check that they match.
    private func use(_ identity: TLSIdentity) throws(TLSError) {
        switch identity {
        case .files(let chain, let key):
            if SSL_CTX_use_certificate_chain_file(raw, chain) != 1 {
                throw .configurationFromQueue("loading certificate chain \(chain)")
            }
            if SSL_CTX_use_PrivateKey_file(raw, key, SSL_FILETYPE_PEM) != 1 {
                throw .configurationFromQueue("loading private key \(key)")
            }
        case .pem(let certificate):
            let leaf = try PEM.certificates(certificate.certificatePEM)
            defer { leaf.forEach { X509_free($0) } }
            let key = try PEM.privateKey(certificate.privateKeyPEM)
            defer { EVP_PKEY_free(key) }
            if SSL_CTX_use_certificate(raw, leaf[0]) != 1 || SSL_CTX_use_PrivateKey(raw, key) != 1 {
                throw .configurationFromQueue("using in-memory certificate")
            }
        }
        if SSL_CTX_check_private_key(raw) != 1 {
            throw .configurationFromQueue("certificate and private key do not match")
        }
    }
}

/// A resumable TLS session (an owned `SSL_SESSION*`).
///
/// Sendable because it is handed over, never shared: the cache gives a
/// session to one connection (`take`), and only that connection's thread
/// touches it from then on. OpenSSL does write to a session (it marks one
/// not resumable when its connection fails), so sharing would race.
final class TLSSession: @unchecked Sendable {
    let raw: OpaquePointer                  /* SSL_SESSION*, one reference owned */
    init(taking raw: OpaquePointer) { self.raw = raw }
    deinit { SSL_SESSION_free(raw) }
}

/// Client sessions kept per destination so reconnects resume.
///
/// Safe from any thread (a mutex guards the table). Entries are keyed by the
/// context they were made under and the destination, and taken out when used:
/// TLS 1.3 tickets are meant for one resumption, and the resumed connection
/// receives fresh ones. Bounded: past `capacity` destinations the oldest
/// entry is dropped.
public final class TLSSessionCache: Sendable {
    private struct Table {
        var sessions: [String: TLSSession] = [:]
        var order: [String] = []            /* insertion order, for eviction */
    }
    private let table = Mutex(Table())
    /// Most destinations remembered.
    public let capacity: Int

    public init(capacity: Int = 4096) {
        self.capacity = capacity
    }

    /// Number of destinations with a stored session.
    public var count: Int { table.withLock { $0.sessions.count } }

    /// take - remove and return the session stored for `key`.
    func take(for key: String) -> TLSSession? {
        table.withLock { table in
            guard let session = table.sessions.removeValue(forKey: key) else { return nil }
            table.order.removeAll { $0 == key }
            return session
        }
    }

    func store(_ session: TLSSession, for key: String) {
        table.withLock { table in
            if table.sessions.updateValue(session, forKey: key) == nil {
                table.order.append(key)
                if table.order.count > capacity {
                    table.sessions[table.order.removeFirst()] = nil
                }
            }
        }
    }
}

/// PEM parsing shared by contexts and the certificate factory.
enum PEM {
    /// certificates - every certificate in `text`, each an owned X509* (caller frees).
    static func certificates(_ text: String) throws(TLSError) -> [OpaquePointer] {
        try withMemoryBIO(text) { bio throws(TLSError) in
            var result: [OpaquePointer] = []
            while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
                result.append(certificate)
            }
            ERR_clear_error()   /* the last read fails at end of input */
            if result.isEmpty { throw .configuration("no certificate in PEM text") }
            return result
        }
    }

    /// privateKey - the key in `text`, an owned EVP_PKEY* (caller frees).
    static func privateKey(_ text: String) throws(TLSError) -> OpaquePointer {
        try withMemoryBIO(text) { bio throws(TLSError) in
            guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
                throw .configurationFromQueue("reading private key")
            }
            return key
        }
    }

    /// withMemoryBIO - a memory BIO holding a copy of the UTF-8 of `text`.
    static func withMemoryBIO<R>(_ text: String, _ body: (OpaquePointer) throws(TLSError) -> R) throws(TLSError) -> R {
        guard let bio = BIO_new(BIO_s_mem()) else { throw .configurationFromQueue("BIO_new") }
        defer { BIO_free(bio) }
        var text = text
        let written = text.withUTF8 { BIO_write(bio, $0.baseAddress, Int32($0.count)) }
        if written != Int32(text.utf8.count) { throw .configurationFromQueue("BIO_write") }
        return try body(bio)
    }

    /// drain - everything written to a memory BIO, as text.
    static func drain(_ bio: OpaquePointer) -> String {
        let count = Int(BIO_ctrl_pending(bio))
        return String(unsafeUninitializedCapacity: count) { buffer in
            Int(BIO_read(bio, buffer.baseAddress, Int32(count)))
        }
    }
}

/// tlsNewSessionCallback - OpenSSL made a resumable session; keep it for the destination.
private func tlsNewSessionCallback(_ ssl: OpaquePointer?, _ session: OpaquePointer?) -> Int32 {
    guard let ssl, let session, let data = carrier_SSL_get_app_data(ssl) else { return 0 }
    let connection = Unmanaged<TLSConnection>.fromOpaque(data).takeUnretainedValue()
    guard let cache = connection.sessionCache, let key = connection.sessionCacheKey else { return 0 }
    cache.store(TLSSession(taking: session), for: key)
    return 1   /* we took OpenSSL's reference */
}
