// HandleOwnership.swift - how a Swift object owns a libuv handle; all pointer casts live here
//
// libuv handles must not move and may only be freed in their close callback.
// So every handle is heap-allocated by exactly one `final class` owner, and
// while the handle is open its `data` field holds a +1 reference to that owner:
// libuv can always call back into a live object, and the object cannot vanish
// under a pending callback. `closeHandle` starts `uv_close`; the shared close
// callback drops that reference and lets the owner free the memory. A handle
// that is never closed therefore keeps its owner alive: like libuv itself, the
// contract is "close every handle you open" (the loop closes stragglers on stop).
//
// libuv "subclasses" uv_handle_t by putting the same fields first in every
// handle struct; the casts below go through OpaquePointer because that is the
// C view of the memory, and they are the only such casts in EventCore.

import CLibUV

/// An object that owns one libuv handle and must hear when it is closed.
///
/// Owners are confined to their loop's thread.
protocol HandleOwner: AnyObject {
    /// Called once, from the close callback, after libuv is done with the handle.
    func handleDidClose()
    /// Close the handle (and whatever it drives) as if the user had asked; used on loop shutdown.
    func closeForShutdown()
}

/// asHandle - a handle pointer of any uv_*_t type, viewed as uv_handle_t.
@inline(__always)
func asHandle<T>(_ pointer: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_handle_t> {
    UnsafeMutablePointer<uv_handle_t>(OpaquePointer(pointer))
}

/// asStream - a uv_tcp_t (or other stream) viewed as uv_stream_t.
@inline(__always)
func asStream<T>(_ pointer: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<uv_stream_t> {
    UnsafeMutablePointer<uv_stream_t>(OpaquePointer(pointer))
}

/// asTCP - a uv_stream_t known to be a uv_tcp_t.
@inline(__always)
func asTCP(_ pointer: UnsafeMutablePointer<uv_stream_t>) -> UnsafeMutablePointer<uv_tcp_t> {
    UnsafeMutablePointer<uv_tcp_t>(OpaquePointer(pointer))
}

/// retainOwner - store a +1 reference to `owner` in the handle's data field.
func retainOwner(_ owner: some HandleOwner, in handle: UnsafeMutablePointer<uv_handle_t>) {
    handle.pointee.data = Unmanaged.passRetained(owner as AnyObject).toOpaque()
}

/// owner - the owner stored in a handle's data field, without changing its count.
@inline(__always)
func owner<T: AnyObject>(of handle: UnsafeMutablePointer<uv_handle_t>, as type: T.Type) -> T {
    Unmanaged<AnyObject>.fromOpaque(handle.pointee.data!).takeUnretainedValue() as! T
}

/// closeHandle - begin closing; the owner hears `handleDidClose` from the close callback.
func closeHandle(_ handle: UnsafeMutablePointer<uv_handle_t>) {
    if uv_is_closing(handle) == 0 {
        uv_close(handle, handleCloseCallback)
    }
}

/// handleCloseCallback - release the owner's +1 reference after telling it.
private func handleCloseCallback(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
    guard let handle, let data = handle.pointee.data else { return }
    handle.pointee.data = nil
    let unmanaged = Unmanaged<AnyObject>.fromOpaque(data)
    (unmanaged.takeUnretainedValue() as? any HandleOwner)?.handleDidClose()
    unmanaged.release()
}

/// ownerForShutdown - the owner of a handle found while walking the loop, if it is ours.
func ownerForShutdown(_ handle: UnsafeMutablePointer<uv_handle_t>) -> (any HandleOwner)? {
    guard let data = handle.pointee.data else { return nil }
    return Unmanaged<AnyObject>.fromOpaque(data).takeUnretainedValue() as? any HandleOwner
}
