// TLSMemoryBIO.swift - the BIO through which OpenSSL reads and writes a TLSConnection's memory
//
// OpenSSL's stock memory BIO (BIO_s_mem) keeps its own buffer, so every byte
// of ciphertext is copied into it and out of it again on each side. This BIO
// is a memory BIO over the connection's own buffers instead (swift-nio-ssl
// does the same with its ByteBufferBIO): reads come straight from the chunk
// the transport is delivering, writes go straight into the connection's
// outgoing ciphertext buffer. One BIO serves both directions; it never touches
// a socket. An empty input says "retry", never end of file: the loop brings
// more when it arrives.

import COpenSSL

/// Makes the BIO a `TLSConnection` hands to its SSL.
///
/// The callbacks run only inside SSL_* calls the connection makes on its loop
/// thread; they reach it through the BIO's data pointer.
enum TLSMemoryBIO {
    /// The method table: filled in once, then only read, by any thread; hence unchecked.
    private struct Method: @unchecked Sendable {
        let raw: OpaquePointer?         /* BIO_METHOD*, never freed */
    }

    private static let method = Method(raw: {
        guard let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "carrier memory") else {
            return nil
        }
        BIO_meth_set_write(method, bioWriteCallback)
        BIO_meth_set_read(method, bioReadCallback)
        BIO_meth_set_ctrl(method, bioControlCallback)
        BIO_meth_set_create(method, bioCreateCallback)
        BIO_meth_set_destroy(method, bioDestroyCallback)
        return method
    }())

    /// make - a BIO reaching `owner` (unretained: the owner's SSL owns the BIO).
    static func make(for owner: TLSConnection) -> OpaquePointer? {
        guard let method = method.raw, let bio = BIO_new(method) else { return nil }
        BIO_set_data(bio, Unmanaged.passUnretained(owner).toOpaque())
        return bio
    }
}

/// owner - the connection behind a BIO.
private func owner(of bio: OpaquePointer) -> TLSConnection? {
    guard let data = BIO_get_data(bio) else { return nil }
    return Unmanaged<TLSConnection>.fromOpaque(data).takeUnretainedValue()
}

private func bioWriteCallback(_ bio: OpaquePointer?, _ data: UnsafePointer<CChar>?, _ length: Int32) -> Int32 {
    guard let bio, let data, length >= 0, let owner = owner(of: bio) else { return -1 }
    BIO_clear_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY)
    owner.bioWrite(UnsafeRawPointer(data), count: Int(length))
    return length
}

private func bioReadCallback(_ bio: OpaquePointer?, _ data: UnsafeMutablePointer<CChar>?, _ length: Int32) -> Int32 {
    guard let bio, let data, length >= 0, let owner = owner(of: bio) else { return -1 }
    BIO_clear_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY)
    let count = owner.bioRead(into: UnsafeMutableRawPointer(data), count: Int(length))
    if count == 0 {
        /* Nothing buffered yet: ask OpenSSL to come back (BIO_set_retry_read). */
        BIO_set_flags(bio, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY)
        return -1
    }
    return Int32(count)
}

private func bioControlCallback(_ bio: OpaquePointer?, _ command: Int32, _ argument: Int, _ pointer: UnsafeMutableRawPointer?) -> Int {
    /* Writes go to our buffer at once, so a flush always succeeds; nothing else applies. */
    command == BIO_CTRL_FLUSH ? 1 : 0
}

private func bioCreateCallback(_ bio: OpaquePointer?) -> Int32 {
    BIO_set_init(bio, 1)
    return 1
}

private func bioDestroyCallback(_ bio: OpaquePointer?) -> Int32 {
    if let bio { BIO_set_data(bio, nil) }
    return 1
}
