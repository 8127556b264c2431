// Delivery.swift - the delivery engine module: worker shards, routing, connection pools
// and the delivery log. The pieces are in the files beside this one; ARCHITECTURE.md has
// the data flow.

#if canImport(Glibc)
import Glibc
#endif

/// writeStandardError - a diagnostic line straight to descriptor 2 (unbuffered, so it
/// appears at once and in order with other writers).
public func writeStandardError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(2, bytes.baseAddress! + offset, bytes.count - offset)
            if n <= 0 { break }
            offset += n
        }
    }
}
