// Errors.swift - the one place where libuv, OpenSSL and c-ares codes become Swift errors
//
// Every C call in EventCore that can fail reports through one of the three types
// below. The conversion from the library's own code (a negative libuv errno, an
// OpenSSL verify result or error queue, a c-ares status) happens in this file
// only, so callers switch on typed cases instead of magic numbers.

import CCares
import CLibUV
import COpenSSL
import CCarrierShims

/// An I/O failure reported by libuv: a socket, timer or loop operation.
///
/// `code` is libuv's negative errno (`UV_ECONNREFUSED`, ...); `operation` names
/// the call that failed ("connect", "write", ...), for logs.
public struct IOError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: Int32          /* negative libuv errno */
    public let operation: String    /* the call that failed */

    init(_ code: Int32, _ operation: String) {
        self.code = code
        self.operation = operation
    }

    /// The symbolic libuv name, e.g. `ECONNREFUSED`.
    public var name: String { String(cString: uv_err_name(code)) }

    /// libuv's human-readable message, e.g. "connection refused".
    public var message: String { String(cString: uv_strerror(code)) }

    public var description: String { "\(operation): \(name) (\(message))" }

    /// The operation did not finish within its deadline (connect timeout).
    public var isTimeout: Bool { code == UV_ETIMEDOUT.rawValue }

    /// The peer refused the connection.
    public var isConnectionRefused: Bool { code == UV_ECONNREFUSED.rawValue }

    /// The peer reset the connection or the local side closed it under us.
    public var isConnectionReset: Bool {
        code == UV_ECONNRESET.rawValue || code == UV_EPIPE.rawValue
    }

    /// A deadline passed before `operation` completed.
    public static func timedOut(_ operation: String) -> IOError {
        IOError(UV_ETIMEDOUT.rawValue, operation)
    }

    /// The handle was closed while `operation` was pending.
    public static func cancelled(_ operation: String) -> IOError {
        IOError(UV_ECANCELED.rawValue, operation)
    }

    /// The peer closed the connection while `operation` still needed it.
    public static func endOfStream(_ operation: String) -> IOError {
        IOError(UV_EOF.rawValue, operation)
    }

    /// A handler left more unconsumed input than the stream's limit allows.
    public static func inputOverLimit(_ operation: String) -> IOError {
        IOError(UV_ENOBUFS.rawValue, operation)
    }

}

/// check - turn a libuv return value into a thrown `IOError`.
@inline(__always)
func check(_ result: Int32, _ operation: String) throws(IOError) {
    if result < 0 { throw IOError(result, operation) }
}

/// A TLS handshake, configuration or record-layer failure.
///
/// The handshake cases are what an operator needs to act on: an expired
/// certificate, a chain that does not lead to a trusted root, a certificate
/// for another name, a timeout, or anything else the protocol rejected.
public enum TLSError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The peer's certificate (or one in its chain) is past its notAfter date, or not yet valid.
    case certificateExpired(String)
    /// The chain does not lead to a trusted root (self-signed, unknown CA, missing intermediate).
    case untrustedIssuer(String)
    /// The certificate is valid but not for the name (or IP address) we connected to.
    case nameMismatch(String)
    /// The handshake did not complete within the configured time.
    case handshakeTimeout
    /// Any other protocol failure: bad record, version or cipher mismatch, alert from the peer.
    case protocolError(String)
    /// The connection underneath failed or closed during the handshake (reset, EOF, closed
    /// by the caller): a network problem, not a TLS one, so retrying may help.
    case transport(IOError)
    /// A certificate, key or CA file could not be loaded, or a setting was refused.
    case configuration(String)

    public var description: String {
        switch self {
        case .certificateExpired(let s): return "TLS certificate expired: \(s)"
        case .untrustedIssuer(let s): return "TLS certificate untrusted: \(s)"
        case .nameMismatch(let s): return "TLS certificate name mismatch: \(s)"
        case .handshakeTimeout: return "TLS handshake timed out"
        case .protocolError(let s): return "TLS protocol error: \(s)"
        case .transport(let error): return "TLS handshake interrupted: \(error)"
        case .configuration(let s): return "TLS configuration error: \(s)"
        }
    }

    /// handshakeFailure - classify a failed handshake from the verify result, then the error queue.
    ///
    /// The verify result decides only when verification was enforced:
    /// without it a certificate problem cannot be what failed the handshake.
    static func handshakeFailure(_ ssl: OpaquePointer, verifying: Bool) -> TLSError {
        let verify = Int32(SSL_get_verify_result(ssl))
        if verifying && verify != X509_V_OK {
            let text = String(cString: X509_verify_cert_error_string(Int(verify)))
            switch verify {
            case X509_V_ERR_CERT_HAS_EXPIRED, X509_V_ERR_CERT_NOT_YET_VALID:
                ERR_clear_error()
                return .certificateExpired(text)
            case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH,
                 X509_V_ERR_EMAIL_MISMATCH:
                ERR_clear_error()
                return .nameMismatch(text)
            case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
                 X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                 X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, X509_V_ERR_CERT_UNTRUSTED,
                 X509_V_ERR_CERT_SIGNATURE_FAILURE, X509_V_ERR_INVALID_CA:
                ERR_clear_error()
                return .untrustedIssuer(text)
            default:
                ERR_clear_error()
                return .protocolError("certificate verification failed: \(text)")
            }
        }
        return .protocolError(drainErrorQueue() ?? "handshake failed")
    }

    /// fromQueue - a protocol error carrying OpenSSL's queued reason.
    static func fromQueue(_ fallback: String) -> TLSError {
        .protocolError(drainErrorQueue() ?? fallback)
    }

    /// configurationFromQueue - a configuration error carrying OpenSSL's queued reason.
    static func configurationFromQueue(_ what: String) -> TLSError {
        .configuration("\(what): \(drainErrorQueue() ?? "unknown error")")
    }

    /// drainErrorQueue - the first queued OpenSSL reason as text; empties the thread's queue.
    static func drainErrorQueue() -> String? {
        let first = ERR_get_error()
        ERR_clear_error()
        if first == 0 { return nil }
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(first, &text, text.count)
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A DNS lookup failure, from c-ares.
///
/// `nxdomain` and `noData` are answers (the name does not exist; it has no
/// record of that type); `serverFailure`, `timeout` and `refused` say the
/// answer is not known yet, and a caller should treat them as temporary.
public enum DNSError: Error, Equatable, Sendable, CustomStringConvertible {
    case nxdomain(String)
    case noData(String)
    case serverFailure(String)
    case timeout(String)
    case refused(String)
    case malformedResponse(String)
    case cancelled(String)
    case other(String, code: Int32, message: String)

    /// True when asking again later may succeed (SERVFAIL, timeout, refused).
    /// A cancelled query is not temporary: the resolver was closed, and asking
    /// it again at once would only be cancelled again.
    public var isTemporary: Bool {
        switch self {
        case .nxdomain, .noData, .malformedResponse, .cancelled: return false
        case .serverFailure, .timeout, .refused, .other: return true
        }
    }

    public var description: String {
        switch self {
        case .nxdomain(let n): return "\(n): NXDOMAIN (name does not exist)"
        case .noData(let n): return "\(n): no records of the requested type"
        case .serverFailure(let n): return "\(n): SERVFAIL"
        case .timeout(let n): return "\(n): DNS timeout"
        case .refused(let n): return "\(n): DNS query refused"
        case .malformedResponse(let n): return "\(n): malformed DNS response"
        case .cancelled(let n): return "\(n): DNS query cancelled"
        case .other(let n, let code, let message): return "\(n): c-ares error \(code) (\(message))"
        }
    }

    /// init(aresStatus:name:) - map a c-ares status for a query about `name`.
    init(aresStatus status: Int32, name: String) {
        switch status {
        case ARES_ENOTFOUND: self = .nxdomain(name)
        case ARES_ENODATA: self = .noData(name)
        case ARES_ESERVFAIL: self = .serverFailure(name)
        case ARES_ETIMEOUT: self = .timeout(name)
        case ARES_EREFUSED, ARES_ECONNREFUSED: self = .refused(name)
        case ARES_EBADRESP, ARES_EFORMERR: self = .malformedResponse(name)
        case ARES_EDESTRUCTION, ARES_ECANCELLED: self = .cancelled(name)
        default: self = .other(name, code: status, message: String(cString: ares_strerror(status)))
        }
    }
}

/// A DNS configuration error (bad server list, c-ares initialisation).
public struct DNSConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    public let message: String
    init(_ what: String, status: Int32) {
        message = "\(what): \(String(cString: ares_strerror(status)))"
    }
    public var description: String { message }
}
